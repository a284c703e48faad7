"""Benchmarks (not tests): each script records what it measured in a RESULTS-*.md beside it."""
