#!/usr/bin/env python
"""The same ``essencekit transfer`` job with 1 and N processes under torchrun: images per
second for each, and whether the outputs are the same.

    python benchmarks/scaling.py [--processes 2] [--images 16] [--backend cpu]
                                 [--encoder tests/fixtures/tiny-e4e.pt] [--size 96] [--keep DIR]

On a CPU the N processes are gloo ranks that split the cores between them; on a GPU machine
(``--backend cuda``) each takes one GPU (``--processes`` defaults to every GPU there). The
photos are random "aligned crops" (``--no-align``: detection is not measured) and each job
starts with an empty W+ cache, so every image is inverted. Two rates are printed: of the work
(the job's own clock, from its summary line: models loaded, photos in, files out) and of the
whole command (process start and imports included, which a long job makes negligible).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"(\d+) of (\d+) inputs, (\d+) faces in ([\d.]+) s")


def make_job(folder: Path, images: int, size: int) -> None:
    import numpy as np
    from PIL import Image

    (folder / "photos").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(images):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / "photos" / f"p{i:05d}.png")


def essence_for(folder: Path, encoder: str) -> Path:
    """A random essence shaped for ``encoder``'s generator."""
    import torch

    from essencekit.essence import Essence
    from essencekit.transfers import Transferrer

    generator = Transferrer(encoder=encoder, device="cpu").generator
    direction = torch.randn(generator.n_latent, generator.style_dim, generator=torch.Generator().manual_seed(0))
    return Essence(direction * 0.5, metadata={"name": "bench"}).save(folder / "bench.pt")


def run_job(folder: Path, processes: int, args, essence: Path) -> tuple[float, float, str]:
    """(seconds of work, seconds of the whole command, output folder) of one job."""
    out = folder / f"out-{processes}"
    env = {**os.environ, "ESSENCEKIT_HOME": str(folder / f"home-{processes}")}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes)]
    command = [*(launcher if processes > 1 else [sys.executable]), "-m", "essencekit", "transfer",
               str(folder / "photos"), "-e", str(essence), "-o", str(out), "--no-align", "--encoder", args.encoder,
               "--backend", args.backend, "--json"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"the {processes}-process job failed ({done.returncode}):\n{done.stderr[-2000:]}")
    found = SUMMARY.search(done.stderr)
    return float(found.group(4)), wall, str(out)


def same_outputs(one: str, other: str) -> tuple[bool, int]:
    """Whether the two folders hold the same files, and the largest pixel difference."""
    import numpy as np
    from PIL import Image

    names = sorted(os.listdir(one))
    if names != sorted(os.listdir(other)):
        return False, -1
    worst = 0
    for name in names:
        with Image.open(Path(one) / name) as a, Image.open(Path(other) / name) as b:
            diff = np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int))
            worst = max(worst, int(diff.max()))
    return True, worst


def default_processes(backend: str) -> int:
    if backend.startswith("cuda"):
        import torch

        return max(1, torch.cuda.device_count())
    return 2


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, default=None, help="processes of the second job (default: "
                        "2 on the CPU, every GPU with --backend cuda)")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=96, help="side of the random photos, in pixels")
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--encoder", default=str(ROOT / "tests" / "fixtures" / "tiny-e4e.pt"))
    parser.add_argument("--keep", type=Path, default=None, help="work in DIR and keep it (default: a temporary folder)")
    args = parser.parse_args()
    processes = args.processes or default_processes(args.backend)
    with tempfile.TemporaryDirectory(prefix="essencekit-scaling-") as scratch:
        folder = args.keep or Path(scratch)
        make_job(folder, args.images, args.size)
        essence = essence_for(folder, args.encoder)
        rows = []
        for n in (1, processes):
            work, wall, out = run_job(folder, n, args, essence)
            rows.append((n, work, wall, out))
        same, worst = same_outputs(rows[0][3], rows[1][3])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.images} images of {args.size} px, encoder {Path(args.encoder).name}, backend {args.backend}, "
          f"{cores} cores")
    for n, work, wall, _ in rows:
        print(f"{n} process{'es' if n > 1 else '  '}: {args.images / work:7.2f} images/s of work ({work:.1f} s), "
              f"{args.images / wall:7.2f} images/s with start-up ({wall:.1f} s)")
    print(f"speed-up: {rows[0][1] / rows[1][1]:.2f}x of work, {rows[0][2] / rows[1][2]:.2f}x with start-up")
    print(f"identical outputs: {'yes' if same and worst == 0 else 'no'}"
          + (f" (largest pixel difference {worst})" if same and worst else "" if same else " (other files)"))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
