"""Benchmarks of essencekit's models, runnable from the installed package.

* :mod:`essencekit.bench.generator`: the StyleGAN2 generator, essencekit's forms against the
  reference form (``python benchmarks/generator.py`` or ``python -m essencekit.bench.generator``).
* :mod:`essencekit.bench.reference_ops`: the reference implementation's resampling ops, for
  timing the reference form on the same weights.
* :mod:`essencekit.bench.measure`: timing, peak-memory, worker-process and machine helpers.

Importing this package imports no torch; the submodules do when they run.
"""

from __future__ import annotations

__all__ = ["generator", "measure", "reference_ops"]
