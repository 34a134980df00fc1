"""FreshRAG's benchmarks, each run from the repository root as a module:

    .venv/bin/python -m bench.freshness --help

A package, so that `bench.ingest` never shadows the top-level `ingest` package (as a
script's folder on sys.path did). The shared parts (percentiles, load average, JSON results
with the command that made them) are in `bench.harness`; modules named `_*` are parts of
one benchmark, not benchmarks.
"""
