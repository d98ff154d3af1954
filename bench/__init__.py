"""Benchmarks of capture-relay (DESIGN §6); run them as modules, e.g. ``python -m bench.ingest``."""
