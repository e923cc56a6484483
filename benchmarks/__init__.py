"""Benchmarks of dmuc (see docs/benchmarks.md)."""
