"""Benchmarks of the product (`make bench`, `python -m benchmarks`); the product never imports them.

Every figure is printed beside a reference measured in the same run, so it survives a slower or
faster machine; unit tests never time anything. See `benchmarks/__main__.py` for the commands
and docs/benchmarks.md for the results so far.
"""
