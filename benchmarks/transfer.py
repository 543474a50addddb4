#!/usr/bin/env python
"""Images per second of essence transfer (e4e inversion + synthesis + PNG write) and peak
memory: essencekit's batched pipeline beside its one-at-a-time loop and the reference
per-image path.

    python benchmarks/transfer.py [--backend cpu] [--size 1024] [--images 8] [--reference-images N]
                                  [--loops reference,single,batched] [--batch-size B]
                                  [--json out.json] [--markdown out.md] [--quick]

Each loop runs in its own process; see ``--help`` and :mod:`compare.transfer` (next to this script).
"""

import sys

from compare.transfer import main

if __name__ == "__main__":
    sys.exit(main())
