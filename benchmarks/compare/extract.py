"""Benchmark of essence extraction: seconds per optimisation step, and peak memory.

Two loops on the same random weights (FFHQ-shaped generator, a registered CLIP variant with
random weights), the same sources, target embedding and initial directions:

* ``essencekit``: :func:`essencekit.extraction.optimise.optimise` as ``essencekit extract`` runs
  it (:func:`essencekit.bench.workloads.extract_case`, ``essencekit bench``'s extract-step):
  source embeddings computed once, the exact small-matrix resize to CLIP, essencekit's
  resampling ops and the backend's modulated convolution, the backend's autocast, chunks of
  the automatic ``--batch-size`` (two-pass backward when there is more than one chunk,
  activation checkpointing only when one image does not fit otherwise), K restarts batched in
  one pass.
* ``reference``: a reference-equivalent loop transcribed from the published optimisation
  script: the reference's ``upfirdn2d`` and op sequence (:mod:`compare.reference_ops`) with the
  grouped modulated convolution, fp32, the sources re-rendered and re-encoded at every step,
  the generated images resized for CLIP by 7x nearest upsampling then average pooling, one
  graph over the N images, a fresh Adam for the coefficients at every step. It trains restarts
  one after another, so its time per step for K restarts is K times that of one restart (one
  restart is measured).

Each (loop, N, K) case runs in its own worker process, so that its peak memory (the process's
peak RSS on the CPU, the backend's peak device memory elsewhere) is its own. The first step
is a warm-up; the figure is the median of the others.

Run ``python benchmarks/extract.py --help``. The targets these figures are held to are in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence

from essencekit.bench import measure, workloads
from essencekit.bench.report import fmt, gib_cell, peak_label

from .common import (
    add_common_arguments,
    int_list,
    loops_command,
    markdown,
    ratio,
    text_renderer,
    worker_env,
    worker_runner,
)

MODULE = "compare.extract"
LOOPS = ("reference", "essencekit")
DEFAULT_SIZE = 1024
DEFAULT_SOURCES = (4, 8)
DEFAULT_RESTARTS = (1,)
DEFAULT_STEPS = 3
DEFAULT_CLIP = "ViT-B/32"
DEFAULT_SEED = 0
QUICK = {"size": 256, "sources": (2,), "restarts": (1,), "steps": 2, "max_channels": 64}
# The options whose --quick values are in QUICK, with their defaults.
DEFAULTS = {"size": DEFAULT_SIZE, "sources": DEFAULT_SOURCES, "restarts": DEFAULT_RESTARTS, "steps": DEFAULT_STEPS,
            "max_channels": None}


# --------------------------------------------------------------------------------------------
# The worker: one loop, one (N, K)


def _reference_loop(generator, encoder, sources, target, init, spec: dict, backend, on_step) -> dict:
    """The published loop for the first restart (see the module docstring); returns the first loss."""
    import torch
    import torch.nn.functional as F

    from essencekit.extraction.schedule import learning_rate

    visual, steps = encoder.visual, spec["steps"]
    size = generator.size
    count = sources.shape[0]

    def encode(images):
        return visual(F.avg_pool2d(F.interpolate(images, scale_factor=7, mode="nearest"), kernel_size=size // 32))

    direction = init[0].detach().clone().unsqueeze(0).requires_grad_(True)
    coefficients = [torch.ones(1, device=sources.device, requires_grad=True) for _ in range(count)]
    optimizer = torch.optim.Adam([direction], lr=0.2, weight_decay=3e-3)
    target = target.reshape(1, -1) / target.norm()
    first = math.nan
    for step in range(steps):
        start = time.perf_counter()
        optimizer.param_groups[0]["lr"] = learning_rate(step, steps, 0.2)
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
    return {"first_loss": first}


def run_case(spec: dict) -> dict:
    """Run one case in this process: ``loop``, and what
    :func:`essencekit.bench.workloads.extract_case` takes."""
    if spec["loop"] == "reference":
        from .reference_ops import use_reference_ops

        record = workloads.extract_case(spec, adapt=use_reference_ops, loop=_reference_loop)
    else:
        record = workloads.extract_case(spec)
    # the reference trains restarts one after another: its step for K restarts takes K times one's
    restarts = spec["restarts"] if spec["loop"] == "reference" else 1
    median = record["median_step_s"]
    return {"loop": spec["loop"], **record,
            "per_step_for_restarts_s": None if median is None else median * restarts}


def subprocess_runner(timeout: float | None = None) -> Callable[[dict, str], dict]:
    """Runs each case in a fresh ``python -m compare.extract --worker`` process."""
    return worker_runner(MODULE, timeout)


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
    from essencekit.backends import select_backend

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
                    "env": worker_env(loop)}
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
        "wall_s": time.perf_counter() - started,
    }


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


main = loops_command(
    build_parser, benchmark, run_case, subprocess_runner, render=render, markdown=markdown_table, loops=LOOPS,
    quick=QUICK, defaults=DEFAULTS, settings=("clip", "reference_sources"),
)


if __name__ == "__main__":
    sys.exit(main())
