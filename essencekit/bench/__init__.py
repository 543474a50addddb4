"""``essencekit bench``: essencekit's own path timed on this machine, random weights.

* :mod:`essencekit.bench.suite`: the suite (its cases, the report, the worker entry point
  ``python -m essencekit.bench.suite --worker SPEC``);
* :mod:`essencekit.bench.workloads`: what the cases run (generator, extraction, transfer);
* :mod:`essencekit.bench.measure`: timing, peak-memory, worker-process and machine helpers;
* :mod:`essencekit.bench.report`: table cells, Rich tables, the machine header and JSON files.

The comparisons against the reference implementation are development benchmarks: they live in
the source checkout's ``benchmarks/`` (docs/performance.md), not in the installed package.
Importing this package imports no torch; the submodules do when they run.
"""

from __future__ import annotations

__all__ = ["measure", "report", "suite", "workloads"]
