"""`python -m bench` (what `make bench` runs): the HTTP comparison against the bare baseline.
Other benchmarks run on their own: `python -m bench.cleanup`, `bench.storage_throughput`,
`bench.push`."""

from __future__ import annotations

import runpy

if __name__ == "__main__":
    runpy.run_module("bench.http", run_name="__main__")
