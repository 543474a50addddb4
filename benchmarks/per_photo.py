#!/usr/bin/env python
"""Seconds per photo of essence transfer's whole path at batch 1 (decode, detect, align, e4e,
synthesis, paste-back, PNG): the reference form beside essencekit before and after, in turns,
with where each photo's time goes inside transfer.

    python benchmarks/per_photo.py [--backend cpu] [--photos 3] [--runs 3]
                                   [--loops reference,before,after] [--json out.json] [--quick]

Each run is its own process; see ``--help`` and :mod:`compare.per_photo` (next to this script).
"""

import sys

from compare.per_photo import main

if __name__ == "__main__":
    sys.exit(main())
