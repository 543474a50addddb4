"""Benchmark of ``essencekit transfer``: images per second (e4e inversion + synthesis + PNG
write), and peak memory.

Three loops over the same N aligned 1024 px face crops (random pixels written as PNG by the
parent), the same random weights (an FFHQ-shaped generator and an ir_se-50 e4e encoder) and
the same random essence:

* ``batched``: essencekit's pipeline as ``essencekit transfer --no-align --crops`` runs it:
  the automatic batch size, the backend's autocast, essencekit's resampling ops and the
  backend's modulated convolution, background readers and writers where the backend uses them
  (not on the CPU), PNG at zlib level 1.
* ``single``: the same pipeline one image at a time (``--batch-size 1``, no background
  threads): essencekit's own one-at-a-time loop.
* ``reference``: the reference per-image path: read the crop, resize it to 256, invert,
  add the essence, synthesise with the reference implementation's resampling ops
  (:mod:`essencekit.bench.reference_ops`) and the grouped modulated convolution in fp32, and
  save the PNG with Pillow's defaults (zlib level 6), one image at a time.

Each loop runs in its own worker process (its peak memory is its own: peak RSS on the CPU, the
backend's peak device memory elsewhere), first over a warm-up set (one full batch), then over
the N images that are timed. Caching is off: every image is inverted.

Run ``python benchmarks/transfer.py --help`` (or ``python -m essencekit.bench.transfer``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import measure
from .report import add_common_arguments, command_line, gib_cell, markdown, names, options, peak_label, ratio
from .report import text_renderer

MODULE = "essencekit.bench.transfer"
LOOPS = ("reference", "single", "batched")
DEFAULT_SIZE = 1024
DEFAULT_IMAGES = 8
DEFAULT_SEED = 0
QUICK = {"size": 64, "images": 4, "max_channels": 16}
# The goals: on the CPU at 1024 px >= 1.5x the reference and never slower than the
# one-at-a-time loop; on one H100 >= 50 images per second, PNG writes included.
GOAL_SPEEDUP = 1.5
GOAL_GPU_IPS = 50.0
IR_SE50_UNITS = (3, 4, 14, 3)
IR_SE50_WIDTHS = (64, 128, 256, 512)


# --------------------------------------------------------------------------------------------
# Random models


def generator_config(size: int, max_channels: int | None):
    """FFHQ's generator at ``size`` px; ``max_channels`` caps widths and the style width (smoke runs)."""
    from ..models.stylegan2 import GeneratorConfig
    from .generator import ffhq_config

    config = ffhq_config(size, max_channels=max_channels)
    if max_channels is None:
        return config
    return GeneratorConfig(size=size, style_dim=min(512, max_channels), n_mlp=2, channels=config.channels)


def random_e4e(generator, max_channels: int | None, seed: int):
    """An ir_se-50 e4e (stage widths capped by ``max_channels``) with random weights, around
    ``generator``, with a ``latent_avg`` of the generator's mean w."""
    import torch

    from ..models.e4e import E4E, EncoderConfig, Encoder4Editing, UnitSpec

    widths = [w if max_channels is None else min(w, max_channels) for w in IR_SE50_WIDTHS[:3]]
    widths.append(generator.style_dim)  # the last stage is as wide as a style
    units, previous = [], widths[0]
    for width, count in zip(widths, IR_SE50_UNITS):
        for k in range(count):
            units.append(UnitSpec(previous, width, 2 if k == 0 else 1, max(1, width // 16)))
            previous = width
    ends = [sum(IR_SE50_UNITS[: i + 1]) - 1 for i in range(4)]
    # e4e's style blocks: 3 read the 16 px map (4 convolutions to 1x1), 4 the 32 px one, the rest 64 px
    n = generator.n_latent
    convs = tuple(4 if i < 3 else 5 if i < 7 else 6 for i in range(n))
    config = EncoderConfig(3, widths[0], tuple(units), tuple(widths), IR_SE50_UNITS, (ends[1], ends[2], ends[3]),
                           generator.style_dim, convs)
    torch.manual_seed(seed + 3)
    encoder = Encoder4Editing(config).eval().requires_grad_(False)
    latent_avg = generator.mean_latent(1000, seed).expand(n, -1).clone()
    generator.latent_avg.copy_(latent_avg[0])
    return E4E(encoder, generator, latent_avg).eval().requires_grad_(False)


def build_models(spec: dict, backend):
    """(e4e with the generator as its decoder, the essence direction), random, from ``spec``."""
    import torch

    from ..models.stylegan2 import Generator
    from .reference_ops import use_reference_ops

    torch.manual_seed(spec["seed"])
    generator = Generator(generator_config(spec["size"], spec.get("max_channels"))).eval().requires_grad_(False)
    if spec["loop"] == "reference":
        use_reference_ops(generator)
    e4e = random_e4e(generator, spec.get("max_channels"), spec["seed"])
    stream = torch.Generator().manual_seed(spec["seed"] + 4)
    direction = torch.randn(generator.n_latent, generator.style_dim, generator=stream)
    e4e = backend.prepare(e4e)
    if spec["loop"] == "reference":
        e4e.set_modulated_conv("grouped")
    return e4e, direction * 0.5


# --------------------------------------------------------------------------------------------
# The worker: one loop


def _reference_loop(e4e, direction, photos: list[Path], out: Path, backend) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from ..images import read_image

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


def _pipeline_loop(e4e, direction, photos: list[Path], out: Path, backend, batch_size: int | None, workers: int | None):
    from ..essence import Essence
    from ..transfers.api import Transferrer

    models = Transferrer(encoder=e4e, device=backend)
    run = models.transfer(photos, Essence(direction, metadata={"name": "bench"}), output=out, align=False,
                          crops=True, overwrite=True, cache=False, batch_size=batch_size, workers=workers)
    count = 0
    for result in run:
        if result.status != "written":
            raise RuntimeError(f"{result.source}: {result.status} {result.reason}")
        count += 1
    return run.batch_size, count


def run_case(spec: dict) -> dict:
    """Run one loop in this process: ``loop``, ``size``, ``max_channels``, ``photos`` (paths),
    ``warmup`` (how many of them warm up), ``backend``, ``seed``, ``workdir``, and optionally
    ``batch_size`` and ``repeats`` (timed passes over the photos, default 1: ``seconds`` is
    their median, ``times_s`` all of them)."""
    import torch

    from ..backends import select_backend

    backend = select_backend(spec.get("backend"))
    e4e, direction = build_models(spec, backend)
    photos = [Path(p) for p in spec["photos"]]
    warm, timed = photos[: spec["warmup"]], photos[spec["warmup"] :]
    out = Path(spec["workdir"]) / f"out-{spec['loop']}"
    out.mkdir(parents=True, exist_ok=True)
    rss_models = measure.current_rss_bytes()
    loop = spec["loop"]
    batch_size = 1

    def once(images):
        nonlocal batch_size
        if loop == "reference":
            _reference_loop(e4e, direction, images, out, backend)
        elif loop == "single":
            batch_size, _ = _pipeline_loop(e4e, direction, images, out, backend, 1, 0)
        else:
            batch_size, _ = _pipeline_loop(e4e, direction, images, out, backend, spec.get("batch_size"), None)

    if warm:
        once(warm)
    backend.synchronize()
    backend.reset_peak_memory()
    times, _ = measure.time_repeats(
        lambda: once(timed), repeats=int(spec.get("repeats", 1)), synchronize=backend.synchronize
    )
    seconds = measure.median(times)
    return {
        "loop": loop, "size": spec["size"], "images": len(timed), "seconds": seconds, "times_s": times,
        "images_per_s": len(timed) / seconds, "batch_size": batch_size, "rss_models_bytes": rss_models,
        **measure.peak_memory(backend), "torch_threads": torch.get_num_threads(),
    }


def subprocess_runner(timeout: float | None = None) -> Callable[[dict, str], dict]:
    """Runs each loop in a fresh ``python -m essencekit.bench.transfer --worker`` process."""
    return measure.worker_runner(MODULE, timeout)


# For tests: the loop in this process (its peak memory is then the process's).
in_process_runner = measure.in_process(run_case)


# --------------------------------------------------------------------------------------------
# The parent


def write_photos(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    """``count`` random ``size`` px RGB PNGs (stand-ins for aligned face crops)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"face{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, compress_level=1)
        paths.append(path)
    return paths


def prepare_photos(
    folder: Path, images: int, *, size: int, max_channels: int | None, seed: int, batch_size: int | None,
    device_type: str,
) -> tuple[int, list[Path]]:
    """(warm-up count, photos): one full batch to warm up (the given ``batch_size``, else 1 on the
    CPU and 32 elsewhere) then ``images`` to time, written to ``folder``; 1024 px crops for the
    full-size models, ``size`` px for the capped smoke-test ones."""
    folder.mkdir(parents=True, exist_ok=True)
    warmup = batch_size or (1 if device_type == "cpu" else 32)
    return warmup, write_photos(folder, warmup + images, 1024 if max_channels is None else size, seed)


def benchmark(
    *, size: int = DEFAULT_SIZE, images: int = DEFAULT_IMAGES, loops: Sequence[str] = LOOPS, backend: str | None = None,
    max_channels: int | None = None, seed: int = DEFAULT_SEED, batch_size: int | None = None,
    reference_images: int | None = None, runner: Callable[[dict, str], dict] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run every loop and return the report (plain data). ``reference_images`` times the
    reference on fewer images (it is the slowest; its rate per image is what is compared)."""
    from ..backends import select_backend

    chosen = select_backend(backend)
    runner = runner or subprocess_runner()
    progress = progress or (lambda message: None)
    info = measure.machine_info(chosen)
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="essencekit-bench-transfer-") as workdir:
        warmup, photos = prepare_photos(
            Path(workdir) / "photos", images, size=size, max_channels=max_channels, seed=seed,
            batch_size=batch_size, device_type=chosen.device.type,
        )
        for index, loop in enumerate(loops, 1):
            count = images if loop != "reference" or reference_images is None else min(images, reference_images)
            warm = 1 if loop != "batched" else warmup
            label = f"[{index}/{len(loops)}] {loop}, {count} images at {size} px"
            progress(f"{label} ...")
            spec = {"loop": loop, "size": size, "max_channels": max_channels, "backend": chosen.name, "seed": seed,
                    "photos": [str(p) for p in photos[warmup - warm : warmup + count]], "warmup": warm,
                    "workdir": workdir, "batch_size": batch_size, "env": measure.worker_env(loop)}
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
        "goals": evaluate_goals(rows, info, size, max_channels),
        "wall_s": time.perf_counter() - started,
    }


def evaluate_goals(rows: Sequence[dict], machine: dict, size: int, max_channels: int | None) -> list[dict]:
    """The issue's goals that apply to this machine (full-size models only)."""
    if size != DEFAULT_SIZE or max_channels is not None:
        return []
    batched = next((r for r in rows if r["loop"] == "batched" and "error" not in r), None)
    if batched is None:
        return []
    goals = []
    if machine.get("device", "cpu").startswith("cpu") and "vs_reference" in batched:
        goals.append({"goal": f">= {GOAL_SPEEDUP:g}x the reference per-image path", "value": batched["vs_reference"],
                      "met": batched["vs_reference"] >= GOAL_SPEEDUP})
    if "H100" in str(machine.get("device_name", "")):
        goals.append({"goal": f">= {GOAL_GPU_IPS:g} images/s on one H100", "value": batched["images_per_s"],
                      "met": batched["images_per_s"] >= GOAL_GPU_IPS})
    if "vs_single" in batched:
        goals.append({"goal": "never slower than the one-at-a-time loop", "value": batched["vs_single"],
                      "met": batched["vs_single"] >= 1.0})
    return goals


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


def main(argv: Sequence[str] | None = None, *, runner: Callable[[dict, str], dict] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run(progress: Callable[[str], None]) -> dict:
        return benchmark(
            **options(args, QUICK, {"size": DEFAULT_SIZE, "images": DEFAULT_IMAGES, "max_channels": None}),
            loops=names(args.loops, LOOPS, "loop"), backend=args.backend, seed=args.seed, batch_size=args.batch_size,
            reference_images=args.reference_images, runner=runner or subprocess_runner(args.timeout),
            progress=progress,
        )

    return command_line(args, worker=run_case, run=run, render=render, markdown=markdown_table)


if __name__ == "__main__":
    sys.exit(main())
