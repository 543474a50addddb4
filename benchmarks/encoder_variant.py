#!/usr/bin/env python
"""The encoder variant's speed: a ``train-encoder`` step and its parts, and extraction by the
encoder against the optimisation, in one run.

    python benchmarks/encoder_variant.py [--backend cpu] [--size 1024] [--sources 5] [--repeats 3]
                                         [--optimise-sources 4] [--json out.json] [--markdown out.md] [--quick]

Full-size architectures with random weights (FFHQ StyleGAN2, the ir_se-50 e4e, CLIP ViT-B/32;
nothing to download), each measurement in its own worker process so that its peak memory is
its own:

* ``train-step`` (only with ``--only``; ``essencekit bench``'s encoder-train-step):
  :func:`essencekit.training.trainer.train_step` at batch 1, S sources, the default optimiser
  (Ranger) and BatchNorm mode, the loss in the chunks ``train_encoder`` picks, in a worker of
  its own: seconds per step and the peak memory of a target (device memory on a GPU, the
  worker's RSS on the CPU, models included; ``models_bytes`` is what was held before the step);
* ``parts``: the same step (its peak memory: a target's), taking turns with what a step
  cannot do without, each timed alone: e4e forward + backward at batch 1, the S edited
  sources' generator forward + backward in the same chunks (once each), CLIP forward +
  backward on S images and the target's CLIP forward. The goal: the step within 1.5x of their
  sum; taking turns, a shared CPU's changing load slows both alike. The optimiser's update is
  timed too but is not part of that sum;
* ``encoder-extract``: ``extract_with_encoder`` of one 1024 px picture taken whole (no face
  detection): seconds per target. The goal on a CPU: well under 2 s;
* ``optimise-step``: essencekit's optimisation loop (``essencekit bench``'s extract-step) at a
  small recipe (``--optimise-sources`` sources, 1 restart) in the chunk size the default recipe
  would get. The default recipe (1000 steps, 8 sources, 4 held out, 4 restarts) is *estimated*
  from the measured per-image step cost, not run.

Each measurement is warmed up once, then timed ``--repeats`` times; the figures are medians.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from compare.common import add_common_arguments, command_line, markdown, worker_runner

from essencekit.bench import measure, workloads
from essencekit.bench.report import fmt, gib_cell, print_lines, print_machine

MODULE = "encoder_variant"
DEFAULT_SIZE = 1024
DEFAULT_SOURCES = workloads.ENCODER_SOURCES
DEFAULT_REPEATS = 3
DEFAULT_OPTIMISE_SOURCES = 4
DEFAULT_CLIP = "ViT-B/32"
QUICK = {"size": 256, "max_channels": 64, "sources": 2, "optimise_sources": 2}
DEFAULTS = {"size": DEFAULT_SIZE, "max_channels": None, "sources": DEFAULT_SOURCES,
            "optimise_sources": DEFAULT_OPTIMISE_SOURCES}
#: The goals of the issue: a step costs at most this many times its parts...
STEP_GOAL = 1.5
#: ...and the encoder extracts a target in well under this many seconds on a CPU.
EXTRACT_GOAL_S = 2.0
MEASUREMENTS = ("train-step", "parts", "encoder-extract", "optimise-step")
#: train-step repeats what parts measures of the step, in a worker of its own (``essencekit
#: bench``'s encoder-train-step): at 1024 px on a CPU it would add minutes, so only on request.
DEFAULT_MEASUREMENTS = ("parts", "encoder-extract", "optimise-step")


# --------------------------------------------------------------------------------------------
# The worker: one measurement


def _optimise_as_the_default_recipe(generator, encoder, sources, target, init, spec, backend, on_step) -> dict:
    """essencekit's loop, chunked as the default recipe's restarts x sources would be, so that
    its per-image cost (one graph, or two passes over chunks) is the default recipe's."""
    from essencekit.chunked import plan_chunks
    from essencekit.extraction.optimise import OptimiseSettings, optimise
    from essencekit.extraction.settings import DEFAULTS as RECIPE

    count = sources.shape[0] * init.shape[0]
    default_chunk, _ = plan_chunks(generator, backend, generator.size, RECIPE.num_sources * RECIPE.restarts)
    batch, checkpoint = plan_chunks(generator, backend, generator.size, count, min(default_chunk, count))
    settings = OptimiseSettings(steps=spec["steps"], batch_size=batch, checkpoint=checkpoint)
    result = optimise(generator, encoder, sources, target, init, settings, autocast=backend.autocast,
                      callback=lambda report: on_step(report.seconds))
    return {"first_loss": float(result.history["loss"][0, 0]), "batch_size": batch, "checkpoint": checkpoint,
            "default_recipe_chunk": default_chunk}


def run_case(spec: dict) -> dict:
    """One measurement in this process (``spec["measurement"]``, see the module docstring)."""
    name = spec["measurement"]
    if name == "train-step":
        return workloads.encoder_train_case(spec)
    if name == "parts":
        return workloads.encoder_parts_case(spec)
    if name == "encoder-extract":
        return workloads.encoder_extract_case(spec)
    if name == "optimise-step":
        record = workloads.extract_case(
            {**spec, "sources": spec["optimise_sources"], "restarts": 1, "steps": spec["repeats"] + 1},
            loop=_optimise_as_the_default_recipe,
        )
        record["times_s"] = record["step_times_s"][1:]  # the first step is the warm-up
        return record
    raise ValueError(f"unknown measurement {name!r}; choose from {', '.join(MEASUREMENTS)}")


def subprocess_runner(timeout: float | None = None) -> Callable[[dict, str], dict]:
    return worker_runner(MODULE, timeout)


# --------------------------------------------------------------------------------------------
# The parent


def lscpu_model() -> str | None:
    """lscpu's "Model name" (the same CPU as /proc/cpuinfo's, as people look it up)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model name":
            return value.strip()
    return None


def summarise(rows: dict[str, dict], settings: dict, device_type: str) -> dict:
    """The figures the goals are about, from the measurements that succeeded."""
    from essencekit.extraction.settings import DEFAULTS as RECIPE

    def ok(name):
        row = rows.get(name)
        return row if row and not row.get("error") else None

    summary: dict = {"step_goal": STEP_GOAL, "extract_goal_s": EXTRACT_GOAL_S}
    comparable = settings["max_channels"] is None and settings["size"] == DEFAULT_SIZE
    step, parts = ok("train-step"), ok("parts")
    if parts:
        summary.update(step_peak_bytes=parts["step_peak_bytes"], step_models_bytes=parts["models_bytes"],
                       step_peak_kind=parts["step_peak_kind"])
    if step:  # its own worker: the peak of nothing but steps
        summary.update(step_s=step["median_s"], step_peak_bytes=step["peak_bytes"],
                       step_models_bytes=step["models_bytes"], step_peak_kind=step["peak_kind"])
    if parts:
        figures = {name: part["median_s"] for name, part in parts["parts"].items() if name != "step"}
        summary["parts_s"] = figures
        summary["parts_sum_s"] = figures["e4e"] + figures["generator"] + figures["clip"]
        # the step timed in turns with its parts: the ratio of the goal, whatever the load did
        summary["step_in_turns_s"] = parts["parts"]["step"]["median_s"]
        summary["step_over_parts"] = summary["step_in_turns_s"] / summary["parts_sum_s"]
        summary["step_goal_met"] = summary["step_over_parts"] <= STEP_GOAL
        # where other work comes in bursts (a shared CPU), the fastest runs and each round's
        # own ratio say more than the medians
        times = {name: part["times_s"] for name, part in parts["parts"].items()}
        goal_parts = ("e4e", "generator", "clip")
        summary["step_over_parts_fastest"] = min(times["step"]) / sum(min(times[n]) for n in goal_parts)
        summary["step_over_parts_rounds"] = [
            step_time / sum(times[n][r] for n in goal_parts) for r, step_time in enumerate(times["step"])
        ]
    if step and parts:
        summary["same_chunks"] = step["chunk"] == parts["chunk"]
    extract = ok("encoder-extract")
    if extract:
        summary["encoder_extract_s"] = extract["median_s"] / extract["items"]
        # the 2 s goal is a CPU's, at the real size
        if device_type == "cpu" and comparable:
            summary["extract_goal_met"] = summary["encoder_extract_s"] < EXTRACT_GOAL_S
    optimise = ok("optimise-step")
    if optimise:
        images = optimise["sources"] * optimise["restarts"]
        per_image = optimise["median_step_s"] / images
        per_step = RECIPE.num_sources * RECIPE.restarts
        # forward-only renders (the sources' embeddings, the held-out evaluation) counted at a
        # step's per-image cost: an over-estimate by well under 1 %
        forward_only = RECIPE.num_sources + RECIPE.held_out * (1 + RECIPE.restarts)
        estimate = (RECIPE.steps * per_step + forward_only) * per_image
        summary.update(
            optimise_step_s=optimise["median_step_s"], optimise_images_per_step=images,
            optimise_per_image_step_s=per_image,
            default_recipe={"steps": RECIPE.steps, "num_sources": RECIPE.num_sources,
                            "held_out": RECIPE.held_out, "restarts": RECIPE.restarts},
            optimise_default_estimate_s=estimate,
        )
        if extract:
            summary["estimated_speedup"] = estimate / summary["encoder_extract_s"]
    return summary


def benchmark(
    *, size: int, max_channels: int | None, sources: int, optimise_sources: int, repeats: int, backend: str | None,
    clip: str, seed: int, runner: Callable[[dict, str], dict], progress: Callable[[str], None],
    only: Sequence[str] = DEFAULT_MEASUREMENTS,
) -> dict:
    from essencekit.backends import select_backend

    if repeats < 1 or sources < 2 or optimise_sources < 1:
        raise ValueError("--repeats and --optimise-sources must be at least 1, --sources at least 2 (the "
                         "consistency loss compares sources in pairs)")
    unknown = [name for name in only if name not in MEASUREMENTS]
    if unknown or not only:
        raise ValueError(f"unknown measurement(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(MEASUREMENTS)}")
    chosen = select_backend(backend or None)
    info = measure.machine_info(chosen)
    info["lscpu_model"] = lscpu_model()
    started = time.perf_counter()
    common = {"backend": chosen.name, "size": size, "max_channels": max_channels, "sources": sources,
              "optimise_sources": optimise_sources, "repeats": repeats, "clip": clip, "seed": seed}
    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="essencekit-encoder-variant-") as workdir:
        folder = Path(workdir) / "targets"
        folder.mkdir()
        photos = workloads.write_photos(folder, 1, 1024 if max_channels is None else size, seed)
        selected = [name for name in MEASUREMENTS if name in only]
        for index, name in enumerate(selected, 1):
            label = f"[{index}/{len(selected)}] {name}"
            progress(f"{label} ...")
            t0 = time.perf_counter()
            spec = {**common, "measurement": name, "photos": [str(p) for p in photos], "workdir": workdir}
            row = {"name": name, **runner(spec, workdir)}
            rows[name] = row
            median = row.get("median_s") or row.get("median_step_s") or row.get("parts", {}).get("step", {}).get("median_s")
            status = f"failed: {row['error']}" if row.get("error") else f"median {fmt(median, '.3g')} s"
            progress(f"{label}: {status} ({time.perf_counter() - t0:.0f} s)")
    info["load_average_end"] = measure.load_average()
    settings = {**{k: v for k, v in common.items() if k != "backend"}, "backend": chosen.name,
                "precision": info["autocast_dtype"], "weights": "random"}
    return {
        "benchmark": "encoder-variant",
        "machine": info,
        "settings": settings,
        "results": list(rows.values()),
        "summary": summarise(rows, settings, chosen.device.type),
        "wall_s": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------
# Presentation


def _row(report: dict, name: str) -> dict:
    return next((r for r in report["results"] if r["name"] == name), {})


def markdown_table(report: dict) -> str:
    s, summary = report["settings"], report["summary"]
    step, parts, extract, optimise = (_row(report, n) for n in MEASUREMENTS)
    rows = []

    def shown(label: str, row: dict) -> bool:
        """Whether ``row`` has figures to show (a failed one gets its error line instead)."""
        if row.get("error"):
            rows.append([label, "failed", "", "", row["error"][:100]])
        return bool(row) and not row.get("error")

    chunk = step.get("chunk") or parts.get("chunk")
    chunks = f", chunks of {chunk}" if chunk and chunk != s["sources"] else ""
    label = f"training step: batch 1, S = {s['sources']}{chunks}, {step.get('optimizer', 'ranger')}"
    if shown(label, step):
        rows.append([label, str(len(step["times_s"])), fmt(step["median_s"], ".3g"), gib_cell(step["peak_bytes"]),
                     f"models {gib_cell(step['models_bytes'])} GiB before the step"])
    if shown("parts", parts):
        p = parts["parts"]
        for key, what in (("e4e", "e4e forward + backward, batch 1"),
                          ("generator", f"generator forward + backward x {s['sources']}{chunks}"),
                          ("clip", f"CLIP forward + backward x {s['sources']} + the target's forward")):
            rows.append([f"  part: {what}", str(len(p[key]["times_s"])), fmt(p[key]["median_s"], ".3g"), "", ""])
        rows.append(["  sum of the parts", "", fmt(summary.get("parts_sum_s"), ".3g"), "", ""])
        rows.append(["  training step, timed in turns with the parts", str(len(p["step"]["times_s"])),
                     fmt(p["step"]["median_s"], ".3g"), "",
                     f"step / parts {fmt(summary.get('step_over_parts'), '.2f', 'x')}"])
        rows.append(["  (not in the sum) optimiser update", str(len(p["optimizer"]["times_s"])),
                     fmt(p["optimizer"]["median_s"], ".3g"), "", ""])
    if shown("encoder extraction", extract):
        rows.append(["encoder extraction: 1 target, taken whole", str(len(extract["times_s"])),
                     fmt(summary.get("encoder_extract_s"), ".3g"), gib_cell(extract["peak_bytes"]), "per target"])
    if shown("optimisation step", optimise):
        rows.append([f"optimisation step: N = {optimise['sources']}, K = 1, chunks of {optimise['batch_size']}",
                     str(len(optimise["times_s"])), fmt(optimise["median_step_s"], ".3g"),
                     gib_cell(optimise["peak_bytes"]),
                     f"{fmt(summary.get('optimise_per_image_step_s'), '.3g')} s per image-step"])
    columns = [("measurement", "left"), ("runs", "right"), ("median s", "right"), ("peak GiB", "right"),
               ("note", "left")]
    return markdown(columns, rows)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.0f} s ({seconds / 3600:.1f} h)" if seconds >= 3600 else f"{seconds:.1f} s"


def verdict_lines(report: dict) -> list[str]:
    s, summary = report["settings"], report["summary"]
    lines = []
    if "step_over_parts" in summary:
        met = "met" if summary["step_goal_met"] else "NOT met"
        lines.append(f"Goal, no waste: training step {summary['step_in_turns_s']:.3g} s = "
                     f"{summary['step_over_parts']:.2f}x the sum of its parts {summary['parts_sum_s']:.3g} s, timed in "
                     f"turns (goal within {STEP_GOAL}x): {met}")
        rounds = ", ".join(f"{r:.2f}x" for r in summary["step_over_parts_rounds"])
        lines.append(f"  fastest runs: {summary['step_over_parts_fastest']:.2f}x; round by round: {rounds}")
        if not summary.get("same_chunks", True):
            lines.append("  note: the step and the parts were measured in different chunk sizes")
    if "step_peak_bytes" in summary:
        kind = "device memory" if summary["step_peak_kind"] == "device" else "the worker's peak RSS"
        lines.append(f"Peak memory of a target (batch 1): {gib_cell(summary['step_peak_bytes'])} GiB ({kind}, "
                     f"models and optimiser included; {gib_cell(summary['step_models_bytes'])} GiB before the step)")
    if "encoder_extract_s" in summary:
        goal = summary.get("extract_goal_met")
        verdict = ("met" if goal else "NOT met") if goal is not None else "not judged (a CPU's goal at 1024 px)"
        lines.append(f"Goal, extraction: {summary['encoder_extract_s']:.3g} s per target by the encoder "
                     f"(well under {EXTRACT_GOAL_S:g} s on a CPU): {verdict}")
    if "optimise_default_estimate_s" in summary:
        recipe = summary["default_recipe"]
        lines.append(
            f"Optimisation variant, ESTIMATED for the default recipe ({recipe['steps']} steps, "
            f"{recipe['num_sources']} sources x {recipe['restarts']} restarts, {recipe['held_out']} held out) from the "
            f"measured {summary['optimise_per_image_step_s']:.3g} s per image-step: "
            f"{_duration(summary['optimise_default_estimate_s'])} per target"
            + (f", about {summary['estimated_speedup']:,.0f}x the encoder's" if "estimated_speedup" in summary else "")
        )
    if s["max_channels"] is not None or s["size"] != DEFAULT_SIZE:
        lines.append(f"Smoke-test settings ({s['size']} px, widths capped at {s['max_channels']}): "
                     "figures not comparable with the goals")
    return lines


def render(report: dict, console) -> None:
    s, machine = report["settings"], report["machine"]
    print_machine(report, console)
    lines = [f"lscpu: {machine.get('lscpu_model') or 'unavailable'}; torch threads {machine['torch_threads']}",
             f"Encoder variant, {s['size']} px, CLIP {s['clip']}, random weights, backend {s['backend']} "
             f"({s['precision']}); medians of {s['repeats']} timed runs after a warm-up",
             markdown_table(report), *verdict_lines(report)]
    print_lines(console, lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/encoder_variant.py",
        description="The encoder variant's training step against its parts, and extraction by the encoder against "
        "the optimisation (random weights; each measurement in its own process).",
    )
    parser.add_argument("--sources", type=int, help=f"S, sources of a training step (default {DEFAULT_SOURCES})")
    parser.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                        help="timed runs of each measurement after a warm-up (default %(default)s)")
    parser.add_argument("--optimise-sources", type=int,
                        help=f"N of the measured optimisation step (default {DEFAULT_OPTIMISE_SOURCES})")
    parser.add_argument("--clip", default=DEFAULT_CLIP, help="CLIP variant, random weights (default %(default)s)")
    parser.add_argument("--only", metavar="NAME,...",
                        help=f"these measurements: {', '.join(MEASUREMENTS)} (default {','.join(DEFAULT_MEASUREMENTS)})")
    add_common_arguments(parser, quick="256 px, 64 channels, S = 2, N = 2", size=DEFAULT_SIZE)
    return parser


def main(argv: Sequence[str] | None = None, *, runner: Callable[[dict, str], dict] | None = None) -> int:
    args = build_parser().parse_args(argv)
    chosen = QUICK if args.quick else {}
    options = {name: getattr(args, name) or chosen.get(name, default) for name, default in DEFAULTS.items()}

    def run(progress: Callable[[str], None]) -> dict:
        only = DEFAULT_MEASUREMENTS if args.only is None else [n.strip() for n in args.only.split(",") if n.strip()]
        return benchmark(**options, repeats=args.repeats, backend=args.backend, clip=args.clip, seed=args.seed,
                         runner=runner or subprocess_runner(args.timeout), progress=progress, only=only)

    return command_line(args, worker=run_case, run=run, render=render, markdown=markdown_table)


if __name__ == "__main__":
    sys.exit(main())
