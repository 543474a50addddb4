"""Benchmark of ``essencekit transfer``: images per second (e4e inversion + synthesis + PNG
write), and peak memory.

Three loops over the same N aligned 1024 px face crops (random pixels written as PNG by the
parent), the same random weights (an FFHQ-shaped generator and an ir_se-50 e4e encoder) and
the same random essence:

* ``batched``: essencekit's pipeline as ``essencekit transfer --no-align --crops`` runs it
  (:func:`essencekit.bench.workloads.transfer_case`, ``essencekit bench``'s transfer case):
  the automatic batch size, the backend's autocast, essencekit's resampling ops and the
  backend's modulated convolution, background readers and writers where the backend uses them
  (not on the CPU), PNG at zlib level 1.
* ``single``: the same pipeline one image at a time (``--batch-size 1``, no background
  threads): essencekit's own one-at-a-time loop.
* ``reference``: the reference per-image path: read the crop, resize it to 256, invert,
  add the essence, synthesise with the reference implementation's resampling ops and op
  sequence (:mod:`compare.reference_ops`) and the grouped modulated convolution in fp32, and
  save the PNG with Pillow's defaults (zlib level 6), one image at a time.

Each loop runs in its own worker process (its peak memory is its own: peak RSS on the CPU, the
backend's peak device memory elsewhere), first over a warm-up set (one full batch), then over
the N images that are timed. Caching is off: every image is inverted.

Run ``python benchmarks/transfer.py --help``. The targets these figures are held to are in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from essencekit.bench import measure, workloads
from essencekit.bench.report import gib_cell, peak_label

from .common import add_common_arguments, loops_command, markdown, ratio, text_renderer, worker_env, worker_runner

MODULE = "compare.transfer"
LOOPS = ("reference", "single", "batched")
DEFAULT_SIZE = 1024
DEFAULT_IMAGES = 8
DEFAULT_SEED = 0
QUICK = {"size": 64, "images": 4, "max_channels": 16}
# The options whose --quick values are in QUICK, with their defaults.
DEFAULTS = {"size": DEFAULT_SIZE, "images": DEFAULT_IMAGES, "max_channels": None}


# --------------------------------------------------------------------------------------------
# The worker: one loop


def _reference_loop(e4e, direction, photos: list[Path], out: Path, backend) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from essencekit.images import read_image

    size = e4e.input_size
    direction = direction.to(backend.device)
    for photo in photos:
        image = read_image(photo).resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32).copy()).permute(2, 0, 1)[None] / 127.5 - 1
        with torch.no_grad():
            w = e4e.invert(x.to(backend.device))
            edited = e4e.generator.synthesis(w + direction, noise="const")
        pixels = ((edited[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        Image.fromarray(pixels).save(out / f"{photo.stem}.png")


def run_case(spec: dict) -> dict:
    """Run one loop in this process: ``loop``, and what
    :func:`essencekit.bench.workloads.transfer_case` takes."""
    if spec["loop"] == "reference":
        from .reference_ops import use_reference_ops

        record = workloads.transfer_case(spec, adapt=use_reference_ops, loop=_reference_loop)
    elif spec["loop"] == "single":  # essencekit's pipeline, one image at a time, no background threads
        record = workloads.transfer_case({**spec, "batch_size": 1, "workers": 0})
    else:
        record = workloads.transfer_case(spec)
    return {"loop": spec["loop"], **record}


def subprocess_runner(timeout: float | None = None) -> Callable[[dict, str], dict]:
    """Runs each loop in a fresh ``python -m compare.transfer --worker`` process."""
    return worker_runner(MODULE, timeout)


# For tests: the loop in this process (its peak memory is then the process's).
in_process_runner = measure.in_process(run_case)


# --------------------------------------------------------------------------------------------
# The parent


def benchmark(
    *, size: int = DEFAULT_SIZE, images: int = DEFAULT_IMAGES, loops: Sequence[str] = LOOPS, backend: str | None = None,
    max_channels: int | None = None, seed: int = DEFAULT_SEED, batch_size: int | None = None,
    reference_images: int | None = None, runner: Callable[[dict, str], dict] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run every loop and return the report (plain data). ``reference_images`` times the
    reference on fewer images (it is the slowest; its rate per image is what is compared)."""
    from essencekit.backends import select_backend

    chosen = select_backend(backend)
    runner = runner or subprocess_runner()
    progress = progress or (lambda message: None)
    info = measure.machine_info(chosen)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="essencekit-bench-transfer-") as workdir:
        warmup, photos = workloads.prepare_photos(
            Path(workdir) / "photos", images, size=size, max_channels=max_channels, seed=seed,
            batch_size=batch_size, max_batch=chosen.max_batch,
        )
        for index, loop in enumerate(loops, 1):
            count = images if loop != "reference" or reference_images is None else min(images, reference_images)
            warm = 1 if loop != "batched" else warmup
            label = f"[{index}/{len(loops)}] {loop}, {count} images at {size} px"
            progress(f"{label} ...")
            spec = {"loop": loop, "size": size, "max_channels": max_channels, "backend": chosen.name, "seed": seed,
                    "photos": [str(p) for p in photos[warmup - warm : warmup + count]], "warmup": warm,
                    "workdir": workdir, "batch_size": batch_size, "env": worker_env(loop)}
            t0 = time.perf_counter()
            result = runner(spec, workdir)
            rows.append({"loop": loop, **result})
            status = f"failed: {result['error']}" if "error" in result else f"{result['images_per_s']:.3f} images/s"
            progress(f"{label}: {status} ({time.perf_counter() - t0:.0f} s)")
    by_loop = {r["loop"]: r for r in rows if "error" not in r}
    for row in rows:
        if "error" in row:
            continue
        for base in ("reference", "single"):
            if base in by_loop and row["loop"] != base:
                row[f"vs_{base}"] = row["images_per_s"] / by_loop[base]["images_per_s"]
    info["load_average_end"] = measure.load_average()
    return {
        "benchmark": "transfer-throughput",
        "machine": info,
        "settings": {"size": size, "images": images, "loops": list(loops), "max_channels": max_channels, "seed": seed,
                     "batch_size": batch_size, "reference_images": reference_images, "weights": "random",
                     "input": "aligned 1024 px PNG crops (--no-align --crops)"},
        "results": rows,
        "wall_s": time.perf_counter() - started,
    }


def markdown_table(report: dict) -> str:
    columns = [
        ("loop", "left"), ("images", "right"), ("batch", "right"), ("images/s", "right"), ("s/image", "right"),
        (peak_label(report["results"]), "right"), ("vs reference", "right"), ("vs single", "right"),
    ]
    rows = []
    for row in report["results"]:
        if row.get("error"):
            rows.append([row["loop"], f"failed: {row['error'][:60]}"])
            continue
        rows.append([
            row["loop"], str(row["images"]), str(row["batch_size"]), f"{row['images_per_s']:.3f}",
            f"{1 / row['images_per_s']:.2f}", gib_cell(row["peak_bytes"]), ratio(row.get("vs_reference")),
            ratio(row.get("vs_single")),
        ])
    return markdown(columns, rows)


render = text_renderer(
    "Essence transfer, {size} px, random weights, {input}: inversion + synthesis + PNG write", markdown_table
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/transfer.py",
        description="Images per second of essence transfer (e4e inversion + synthesis + PNG write) and peak memory: "
        "essencekit's batched pipeline, its one-at-a-time loop and the reference per-image path (random weights; "
        "each loop in its own process).",
    )
    parser.add_argument("--images", type=int, help=f"timed images per loop (default {DEFAULT_IMAGES})")
    parser.add_argument("--reference-images", type=int, metavar="N", help="time the reference on at most N images")
    parser.add_argument("--batch-size", type=int, help="the batched loop's batch size (default: automatic)")
    add_common_arguments(parser, quick="64 px, 16 channels, 4 images", size=DEFAULT_SIZE, loops=LOOPS)
    return parser


main = loops_command(
    build_parser, benchmark, run_case, subprocess_runner, render=render, markdown=markdown_table, loops=LOOPS,
    quick=QUICK, defaults=DEFAULTS, settings=("batch_size", "reference_images"),
)


if __name__ == "__main__":
    sys.exit(main())
