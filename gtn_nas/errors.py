"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class GtnError(Exception):
    """Base class for errors caused by the user's input or environment, not by a bug."""

    exit_code = 2


class DataError(GtnError):
    """A dataset is missing, truncated or in an unexpected format."""


class ConfigError(GtnError):
    """A configuration value is invalid."""


class CheckpointError(GtnError):
    """A checkpoint or run directory is missing, corrupt or incompatible."""


class ArchitectureError(GtnError):
    """An architecture string or file cannot be parsed."""


class NonFiniteError(GtnError):
    """Training went non-finite: meta-gradients several times in a row, or a retrain's loss."""
