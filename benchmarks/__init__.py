"""Offline benchmarks for mergekit-fw: an expert zoo and the paper's scaling experiment.

Run everything with `make bench` or `python -m benchmarks.run --only zoo,scaling,...`.
"""
