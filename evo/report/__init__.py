"""`evo report`: a run's data read back, plots, the HTML page; statistics for benchmarks."""
