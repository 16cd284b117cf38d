"""Benchmarks for the broker (not part of the installed package); see bench/README.md."""
