"""Benchmarks (`make bench`): ratios against anchors measured in the same run, results as JSON."""
