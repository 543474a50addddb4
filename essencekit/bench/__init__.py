"""Benchmarks of essencekit's models, runnable from the installed package.

* :mod:`essencekit.bench.suite`: the suite behind ``essencekit bench`` (essencekit's own path:
  generator forward and forward+backward, e4e inversion, one extract step, transfer images/s,
  peak memory), also ``python benchmarks/suite.py``.
* :mod:`essencekit.bench.generator`: the StyleGAN2 generator, essencekit's forms against the
  reference form (``python benchmarks/generator.py`` or ``python -m essencekit.bench.generator``).
* :mod:`essencekit.bench.extract` and :mod:`essencekit.bench.transfer`: an extraction step and
  transfer throughput against reference-equivalent loops (``benchmarks/extract.py``,
  ``benchmarks/transfer.py``).
* :mod:`essencekit.bench.reference_ops`: the reference implementation's resampling ops, for
  timing the reference form on the same weights.
* :mod:`essencekit.bench.measure`: timing, peak-memory, worker-process and machine helpers.
* :mod:`essencekit.bench.report`: tables, the machine header, JSON files and the scripts'
  command-line plumbing, shared by all of them.

Importing this package imports no torch; the submodules do when they run.
"""

from __future__ import annotations

__all__ = ["extract", "generator", "measure", "reference_ops", "report", "suite", "transfer"]
