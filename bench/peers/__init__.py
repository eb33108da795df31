"""Helpers of ``bench/compare.py``: peer virtual environments, servers and the load generator."""
