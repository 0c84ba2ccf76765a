"""Parity checks against the golden fixtures made with the official LatentSync code.

Each module ``latentsync.parity.<kind>`` exposes ``check(path) -> list[Comparison]`` and runs through the same
library code as the product. ``python -m latentsync.parity KIND FIXTURE`` prints one line per comparison.
"""
