"""Benchmark of essence extraction: seconds per optimisation step, and peak memory.

Two loops on the same random weights (FFHQ-shaped generator, a registered CLIP variant with
random weights), the same sources, target embedding and initial directions:

* ``essencekit``: :func:`essencekit.extraction.optimise.optimise` as ``essencekit extract`` runs
  it: source embeddings computed once, the exact small-matrix resize to CLIP, essencekit's
  resampling ops and the backend's modulated convolution, the backend's autocast, chunks of
  the automatic ``--batch-size`` (two-pass backward when there is more than one chunk,
  activation checkpointing only when one image does not fit otherwise), K restarts batched in
  one pass.
* ``reference``: a reference-equivalent loop transcribed from the published optimisation
  script: the reference's ``upfirdn2d`` (:mod:`essencekit.bench.reference_ops`) with the
  grouped modulated convolution, fp32, the sources re-rendered and re-encoded at every step,
  the generated images resized for CLIP by 7x nearest upsampling then average pooling, one
  graph over the N images, a fresh Adam for the coefficients at every step. It trains restarts
  one after another, so its time per step for K restarts is K times that of one restart (one
  restart is measured).

Each (loop, N, K) case runs in its own worker process, so that its peak memory (the process's
peak RSS on the CPU, the backend's peak device memory elsewhere) is its own. The first step
is a warm-up; the figure is the median of the others.

Run ``python benchmarks/extract.py --help`` (or ``python -m essencekit.bench.extract``).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from . import measure
from .report import add_common_arguments, command_line, fmt, gib_cell, int_list, markdown, names, options, peak_label
from .report import ratio, text_renderer

MODULE = "essencekit.bench.extract"
LOOPS = ("reference", "essencekit")
DEFAULT_SIZE = 1024
DEFAULT_SOURCES = (4, 8)
DEFAULT_RESTARTS = (1,)
DEFAULT_STEPS = 3
DEFAULT_CLIP = "ViT-B/32"
DEFAULT_SEED = 0
QUICK = {"size": 256, "sources": (2,), "restarts": (1,), "steps": 2, "max_channels": 64}
# The goals on the CPU: at N = 4, K = 1, >= 3x the reference per step; N = 8 < 8 GiB.
GOAL_SPEEDUP = 3.0
GOAL_PEAK_GIB = 8.0


# --------------------------------------------------------------------------------------------
# The worker: one loop, one (N, K)


def _models(spec: dict, backend):
    import torch

    from ..clip import ClipEncoder, build_clip_model, get_variant
    from ..models.stylegan2 import Generator
    from .generator import ffhq_config
    from .reference_ops import use_reference_ops

    config = ffhq_config(spec["size"], max_channels=spec.get("max_channels"))
    torch.manual_seed(spec["seed"])
    generator = Generator(config)
    reference = spec["loop"] == "reference"
    if reference:
        use_reference_ops(generator)
    generator.eval().requires_grad_(False)
    generator = backend.prepare(generator)
    if reference:
        generator.set_modulated_conv("grouped")
    variant = get_variant(spec["clip"])
    torch.manual_seed(spec["seed"] + 1)
    visual = build_clip_model(variant).visual.float().eval().requires_grad_(False)
    encoder = backend.prepare(ClipEncoder(visual, variant, input_mode="raw", generator_size=config.size))
    return generator, encoder


def _reference_loop(generator, visual, sources, target, init, steps: int, total_steps: int, on_step) -> float:
    """The published loop for one restart (see the module docstring); returns the first loss."""
    import torch
    import torch.nn.functional as F

    from ..extraction.schedule import learning_rate

    size = generator.size
    count = sources.shape[0]

    def encode(images):
        return visual(F.avg_pool2d(F.interpolate(images, scale_factor=7, mode="nearest"), kernel_size=size // 32))

    direction = init.detach().clone().unsqueeze(0).requires_grad_(True)
    coefficients = [torch.ones(1, device=sources.device, requires_grad=True) for _ in range(count)]
    optimizer = torch.optim.Adam([direction], lr=0.2, weight_decay=3e-3)
    target = target.reshape(1, -1) / target.norm()
    first = math.nan
    for step in range(steps):
        start = time.perf_counter()
        optimizer.param_groups[0]["lr"] = learning_rate(step, total_steps, 0.2)
        coefficient_optimizer = torch.optim.Adam(coefficients, lr=0.2, weight_decay=0.01)
        with torch.no_grad():
            source_embeddings = encode(generator.synthesis(sources, noise="const"))
        scaled = torch.stack([direction * c for c in coefficients]).squeeze(1)
        edited = encode(generator.synthesis(sources + scaled, noise="const"))
        deltas = edited - source_embeddings
        deltas = deltas / deltas.norm(dim=-1, keepdim=True)
        transfer = 1 - (edited / edited.norm(dim=-1, keepdim=True) @ target.T).mean()
        consistency = (torch.ones(count, device=sources.device) - deltas @ deltas.T).sum() / (count**2 - count)
        loss = transfer + 0.6 * consistency
        optimizer.zero_grad()
        coefficient_optimizer.zero_grad()
        loss.backward()
        coefficient_optimizer.step()
        optimizer.step()
        if step == 0:
            first = loss.item()
        on_step(time.perf_counter() - start)
    return first


def run_case(spec: dict) -> dict:
    """Run one case in this process: ``loop``, ``size``, ``max_channels``, ``sources`` (N),
    ``restarts`` (K), ``steps``, ``backend``, ``clip``, ``seed``."""
    import torch

    from ..backends import select_backend
    from ..extraction.memory import plan_chunks
    from ..extraction.optimise import OptimiseSettings, optimise
    from ..extraction.sources import random_directions, sample_latents

    backend = select_backend(spec.get("backend"))
    generator, encoder = _models(spec, backend)
    count, restarts, steps = spec["sources"], spec["restarts"], spec["steps"]
    sources = sample_latents(generator, count, spec["seed"], "source").to(backend.device)
    init = random_directions(generator, range(restarts), spec["seed"]).to(backend.device)
    target = torch.randn(encoder.embed_dim, generator=torch.Generator().manual_seed(spec["seed"] + 2))
    target = target.to(backend.device)
    rss_models = measure.current_rss_bytes()
    times: list[float] = []
    backend.reset_peak_memory()
    started = time.perf_counter()
    record: dict = {}
    if spec["loop"] == "reference":
        first = _reference_loop(
            generator, encoder.visual, sources, target, init[0], steps, steps,
            lambda seconds: (backend.synchronize(), times.append(seconds)),
        )
        record["first_loss"] = first
    else:
        batch, checkpoint = plan_chunks(generator, backend, generator.size, count * restarts, spec.get("batch_size"))
        settings = OptimiseSettings(steps=steps, batch_size=batch, checkpoint=checkpoint)
        result = optimise(
            generator, encoder, sources, target, init, settings, autocast=backend.autocast,
            callback=lambda report: (backend.synchronize(), times.append(report.seconds)),
        )
        record.update(
            first_loss=float(result.history["loss"][0, 0]), batch_size=batch,
            chunks=math.ceil(count * restarts / batch), checkpoint=checkpoint,
        )
    wall = time.perf_counter() - started
    timed = times[1:] if len(times) > 1 else times
    record.update(
        loop=spec["loop"], size=generator.size, sources=count, restarts=restarts, steps=len(times),
        step_times_s=times, median_step_s=measure.median(timed), wall_s=wall, rss_models_bytes=rss_models,
        **measure.peak_memory(backend), torch_threads=torch.get_num_threads(),
    )
    if spec["loop"] == "reference":
        record["per_step_for_restarts_s"] = (
            record["median_step_s"] * restarts if record["median_step_s"] is not None else None
        )
    else:
        record["per_step_for_restarts_s"] = record["median_step_s"]
    return record


def subprocess_runner(timeout: float | None = None) -> Callable[[dict, str], dict]:
    """Runs each case in a fresh ``python -m essencekit.bench.extract --worker`` process."""
    return measure.worker_runner(MODULE, timeout)


# For tests: the case in this process (its peak memory is then the process's).
in_process_runner = measure.in_process(run_case)


# --------------------------------------------------------------------------------------------
# The parent


def benchmark(
    *, size: int = DEFAULT_SIZE, sources: Sequence[int] = DEFAULT_SOURCES, restarts: Sequence[int] = DEFAULT_RESTARTS,
    steps: int = DEFAULT_STEPS, loops: Sequence[str] = LOOPS, backend: str | None = None, clip: str = DEFAULT_CLIP,
    max_channels: int | None = None, seed: int = DEFAULT_SEED, runner: Callable[[dict, str], dict] | None = None,
    progress: Callable[[str], None] | None = None, reference_sources: Sequence[int] | None = None,
) -> dict:
    """Run every (loop, N, K) case and return the report (plain data). ``reference_sources``
    limits the reference loop to those N (its one-graph peak grows fast: about 21 GiB for the
    generator alone at N = 4, 1024 px, on the CPU)."""
    from ..backends import select_backend

    chosen = select_backend(backend)
    runner = runner or subprocess_runner()
    progress = progress or (lambda message: None)
    info = measure.machine_info(chosen)
    started = time.perf_counter()
    rows = []
    reference_sources = sources if reference_sources is None else reference_sources
    cases = [
        (loop, n, k) for n in sources for k in restarts for loop in loops
        # the reference trains restarts one after another: K = 1 gives its time for any K
        if loop != "reference" or (n in reference_sources and (k == 1 or 1 not in restarts))
    ]
    with tempfile.TemporaryDirectory(prefix="essencekit-bench-extract-") as workdir:
        for index, (loop, n, k) in enumerate(cases, 1):
            label = f"[{index}/{len(cases)}] {loop} N={n} K={k} at {size} px"
            progress(f"{label} ...")
            spec = {"loop": loop, "size": size, "max_channels": max_channels, "sources": n, "restarts": k,
                    "steps": steps, "backend": chosen.name, "clip": clip, "seed": seed,
                    "env": measure.worker_env(loop)}
            t0 = time.perf_counter()
            result = runner(spec, workdir)
            row = {"loop": loop, "sources": n, "restarts": k, **result}
            rows.append(row)
            if "error" in result:
                status = f"failed: {result['error']}"
            else:
                status = f"{result['median_step_s']:.2f} s/step"
            progress(f"{label}: {status} ({time.perf_counter() - t0:.0f} s)")
    reference = {r["sources"]: r for r in rows if r["loop"] == "reference" and r.get("median_step_s")}
    for row in rows:
        ref = reference.get(row["sources"])
        if row["loop"] == "essencekit" and ref and row.get("median_step_s"):
            row["speedup_vs_reference"] = ref["median_step_s"] * row["restarts"] / row["median_step_s"]
            row["first_loss_diff"] = abs(row["first_loss"] - ref["first_loss"])
    info["load_average_end"] = measure.load_average()
    return {
        "benchmark": "extract-step",
        "machine": info,
        "settings": {"size": size, "sources": list(sources), "restarts": list(restarts), "steps": steps,
                     "loops": list(loops), "clip": clip, "max_channels": max_channels, "seed": seed,
                     "weights": "random"},
        "results": rows,
        "goals": evaluate_goals(rows, chosen.device.type, size),
        "wall_s": time.perf_counter() - started,
    }


def evaluate_goals(rows: Sequence[dict], device_type: str, size: int) -> list[dict]:
    if device_type != "cpu" or size != DEFAULT_SIZE:
        return []
    goals = []
    for row in rows:
        if row["loop"] != "essencekit" or row.get("error"):
            continue
        if (row["sources"], row["restarts"]) == (4, 1) and row.get("speedup_vs_reference") is not None:
            goals.append({"goal": f">= {GOAL_SPEEDUP:g}x the reference per step at N = 4, K = 1",
                          "value": row["speedup_vs_reference"], "met": row["speedup_vs_reference"] >= GOAL_SPEEDUP})
        if row["sources"] in (4, 8) and row["restarts"] == 1:
            peak = measure.gib(row["peak_bytes"])
            goals.append({"goal": f"N = {row['sources']} under {GOAL_PEAK_GIB:g} GiB", "value": peak,
                          "met": peak < GOAL_PEAK_GIB})
    return goals


COLUMNS = ("loop", "left"), ("N", "right"), ("K", "right"), ("s/step", "right"), ("chunk", "right")


def markdown_table(report: dict) -> str:
    columns = [*COLUMNS, (peak_label(report["results"]), "right"), ("vs reference", "right"), ("first loss", "right")]
    rows = []
    for row in report["results"]:
        first = [row["loop"], str(row["sources"]), str(row["restarts"])]
        if row.get("error"):
            rows.append(first + [f"failed: {row['error'][:60]}"])
            continue
        note = ""
        if row["loop"] == "reference" and row["restarts"] > 1:
            note = f" ({row['median_step_s']:.2f} x {row['restarts']})"
        rows.append(first + [
            f"{row['per_step_for_restarts_s']:.2f}{note}", str(row.get("batch_size", row["sources"])),
            gib_cell(row["peak_bytes"]), ratio(row.get("speedup_vs_reference")), fmt(row["first_loss"], ".4f"),
        ])
    return markdown(columns, rows)


render = text_renderer(
    "Essence extraction, {size} px, CLIP {clip}, random weights, {steps} steps per case (first = warm-up)",
    markdown_table,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/extract.py",
        description="Seconds per essence-extraction step and peak memory, essencekit's loop beside a "
        "reference-equivalent loop (random weights; each case in its own process).",
    )
    parser.add_argument("--sources", type=int_list, help="N values, comma-separated (default 4,8)")
    parser.add_argument("--restarts", type=int_list, help="K values, comma-separated (default 1)")
    parser.add_argument("--steps", type=int, help=f"steps per case, the first a warm-up (default {DEFAULT_STEPS})")
    parser.add_argument(
        "--reference-sources", type=int_list, metavar="N,...",
        help="run the reference loop only for these N (default: all; it needs about 21 GiB at N = 4, 1024 px)",
    )
    parser.add_argument("--clip", default=DEFAULT_CLIP, help="CLIP variant, random weights (default %(default)s)")
    add_common_arguments(parser, quick="256 px, 64 channels, N=2, K=1, 2 steps", size=DEFAULT_SIZE, loops=LOOPS)
    return parser


def main(argv: Sequence[str] | None = None, *, runner: Callable[[dict, str], dict] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def run(progress: Callable[[str], None]) -> dict:
        return benchmark(
            **options(args, QUICK, {"size": DEFAULT_SIZE, "sources": DEFAULT_SOURCES, "restarts": DEFAULT_RESTARTS,
                                    "steps": DEFAULT_STEPS, "max_channels": None}),
            loops=names(args.loops, LOOPS, "loop"), backend=args.backend, clip=args.clip, seed=args.seed,
            reference_sources=args.reference_sources, runner=runner or subprocess_runner(args.timeout),
            progress=progress,
        )

    return command_line(args, worker=run_case, run=run, render=render, markdown=markdown_table)


if __name__ == "__main__":
    sys.exit(main())
