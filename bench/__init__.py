"""Speed and memory benchmark of training and evaluation (issue #6): `python3 bench/bench.py --help`."""
