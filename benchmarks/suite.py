#!/usr/bin/env python
"""The whole benchmark suite: essencekit's own path, full-size models, random weights
(``essencekit bench`` from a source checkout; the same options).

    python benchmarks/suite.py [--backend cpu] [--repeats 3] [--only generator-forward,...]
                               [--size 1024] [--batch 4] [--images N] [--json] [-o out.json]

Each case runs in its own process; see ``--help`` and :mod:`essencekit.bench.suite`.
"""

import sys

from essencekit.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
