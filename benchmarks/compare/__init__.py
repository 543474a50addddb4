"""The development benchmarks: essencekit against the reference implementation.

Behind the scripts ``benchmarks/generator.py``, ``extract.py`` and ``transfer.py`` (Python puts
a script's folder, ``benchmarks/``, on the import path; the tests get it from pytest's
``pythonpath`` in pyproject.toml):

* :mod:`compare.generator`: the StyleGAN2 generator's forms against the reference form;
* :mod:`compare.extract` and :mod:`compare.transfer`: an extraction step and transfer
  throughput against reference-equivalent loops;
* :mod:`compare.reference_ops`: the reference implementation's resampling ops and op sequence,
  swapped into essencekit's models (also what tests/test_generator_speed_ops.py holds the fused
  ops to);
* :mod:`compare.common`: worker processes, tables and the scripts' command-line plumbing.

They time essencekit's own path with the workloads of ``essencekit bench``
(:mod:`essencekit.bench.workloads`), which the installed package ships; nothing here is
installed.
"""
