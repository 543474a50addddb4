#!/usr/bin/env python
"""Seconds per real image of ``evaluate --fid``'s real-image features, three ways in one run:
without the feature cache (as before it existed), filling an empty cache, and read back from
it (a second evaluation against the same folder).

    python benchmarks/fid_real.py [--images 24] [--size 1024] [--backend cpu] [--weights FILE]

The images are random PNGs of ``--size`` pixels (FFHQ's are 1024), written to a temporary
folder; the Inception is the real ``inception-v3-fid`` file with ``--weights``, else a
random-weight one of the same architecture (the same cost). Each way starts from files on
disk, as ``evaluate`` does; the cache is a fresh temporary folder.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--weights", default=None, help="FID Inception weights (default: random, same architecture)")
    args = parser.parse_args(argv)

    import numpy as np
    import torch
    from compare.inception import save_random_inception
    from PIL import Image

    from essencekit.backends import select_backend
    from essencekit.bench.measure import describe_machine, machine_info
    from essencekit.evaluation.fid import BATCH, FEATURE_DIM, load_inception, real_features
    from essencekit.feature_cache import FeatureCache

    backend = select_backend(args.backend)
    for line in describe_machine(machine_info(backend)):
        print(line)
    with tempfile.TemporaryDirectory(prefix="essencekit-fid-bench-") as scratch:
        scratch = Path(scratch)
        rng = np.random.default_rng(0)
        files = []
        for i in range(args.images):
            files.append(scratch / f"{i:05d}.png")
            Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)).save(files[-1])
        weights = args.weights or save_random_inception(scratch / "random-inception.pth")
        model, label, sha256 = load_inception(str(weights), backend.device)
        cache = FeatureCache(sha256, FEATURE_DIM, root=scratch / "cache")
        real_features(files[:BATCH], model, backend.device)  # warm-up: first-call allocations, kernel choice

        timings = {}
        results = {}
        for name, use in (("no cache", None), ("filling the cache", cache), ("from the cache", cache)):
            start = time.perf_counter()
            results[name] = real_features(files, model, backend.device, cache=use)
            if backend.device.type == "cuda":
                torch.cuda.synchronize()
            timings[name] = time.perf_counter() - start
    print(f"{args.images} real images of {args.size} px, Inception: {label if args.weights else 'random weights'}, "
          f"{backend.name} ({torch.get_num_threads()} threads)")
    base = timings["no cache"]
    for name, seconds in timings.items():
        print(f"  {name:18s} {seconds:8.2f} s  {seconds / args.images:.4f} s/image  {base / seconds:7.1f}x  "
              f"({results[name].cached} cached)")
    same = np.array_equal(results["from the cache"].features, results["filling the cache"].features)
    print(f"  features read back equal the computed ones exactly: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
