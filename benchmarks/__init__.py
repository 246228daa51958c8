"""Benchmarks: `python -m benchmarks` runs every module's `run()` and prints one table."""
