"""Benchmarks (`make bench`): every figure is reported next to a raw aiokafka reference."""
