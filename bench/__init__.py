"""Benchmarks: papo side by side with other servers (see docs/benchmarks.md)."""
