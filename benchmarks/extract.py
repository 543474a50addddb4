#!/usr/bin/env python
"""Seconds per essence-extraction step and peak memory: essencekit's loop beside a
reference-equivalent loop.

    python benchmarks/extract.py [--backend cpu] [--size 1024] [--sources 4,8] [--restarts 1,4]
                                 [--steps 3] [--loops reference,essencekit] [--json out.json]
                                 [--markdown out.md] [--quick]

Each case runs in its own process; see ``--help`` and :mod:`compare.extract` (next to this script).
"""

import sys

from compare.extract import main

if __name__ == "__main__":
    sys.exit(main())
