"""Benchmarks that print tables. Timings are measured here and reported in the README, never asserted in tests."""
