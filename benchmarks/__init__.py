"""Benchmark scripts (run from the repository root, e.g. ``python benchmarks/scoring.py``); not installed."""
