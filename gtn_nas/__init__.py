"""gtn-nas: Generative Teaching Networks for neural architecture search, on JAX."""

__version__ = "0.1.0"


def enable_compilation_cache(path: str | None = None) -> None:
    """Keeps XLA programs on disk: a resumed run or a repeated command skips recompiling.

    ``$GTN_NAS_XLA_CACHE`` overrides the location; set it to an empty string to turn caching off.
    """
    import os
    from pathlib import Path

    import jax

    path = os.environ.get("GTN_NAS_XLA_CACHE", path or str(Path.home() / ".cache" / "gtn_nas" / "xla"))
    if path:
        jax.config.update("jax_compilation_cache_dir", path)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
