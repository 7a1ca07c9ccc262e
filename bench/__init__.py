"""The timer-controller benchmark: seed vs raw vs controller, side by side.

Run it with ``python -m bench`` (see ``bench/run.py`` and docs/benchmarks.md).
"""
