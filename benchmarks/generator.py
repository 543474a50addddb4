#!/usr/bin/env python
"""Time the StyleGAN2 generator: essencekit's forms beside the reference form.

    python benchmarks/generator.py [--backend cpu] [--sizes 1024] [--batches 1,4] [--repeats N]
                                   [--variants reference,grouped,shared,shared+checkpoint]
                                   [--json out.json] [--markdown out.md] [--quick]

Each variant runs in its own process; see ``--help`` and :mod:`compare.generator` (next to this script).
"""

import sys

from compare.generator import main

if __name__ == "__main__":
    sys.exit(main())
