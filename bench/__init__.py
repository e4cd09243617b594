"""Benchmarks: a chaos run (bench/chaos.py) and an overhead benchmark (bench/overhead.py)."""
