"""Benchmarks of speed, memory and accuracy: `python3 bench/bench.py --help`, `python3 -m bench.NAME --help`."""
