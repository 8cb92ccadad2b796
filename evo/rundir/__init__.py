"""A run directory on disk: its files, checkpoints, fault points for crash tests,
export of the best strategies and adapters, and injection of trained adapters."""
