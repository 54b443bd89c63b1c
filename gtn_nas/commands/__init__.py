"""One driver per `gtn-nas` command: run directory, data, progress, checkpoints, summary."""
