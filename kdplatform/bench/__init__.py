"""Benchmarks run by `depthkd bench ...`: figures for closing notes, never timed unit tests."""
