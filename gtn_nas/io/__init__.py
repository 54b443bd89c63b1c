"""Everything that touches disk or the terminal: run directories, checkpoints, data sets,
plots, progress and tables, host-memory tuning."""
