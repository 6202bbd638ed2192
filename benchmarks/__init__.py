"""Benchmarks with targets (`make bench-*`): each exits 1 when a target is missed. Not shipped."""
