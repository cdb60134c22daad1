"""Benchmarks (`make bench`): each module here has `main(argv) -> int` and prints its figures as
ratios against a raw baseline measured in the same run. Never timed assertions in tests."""
