"""Architecture search: which architecture is index i, the proxy scorer and its compiled
programs, the results store, fan-out over processes, exports, and architecture references."""
