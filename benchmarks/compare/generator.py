"""Benchmark of the StyleGAN2 generator: essencekit's forms against the reference form.

Times the synthesis network (W+ in, images out, constant noise, random weights with a fixed
seed) forward and forward + backward (the gradient with respect to W+, weights frozen: what
essence extraction runs) on one backend, for these variants:

* ``reference``: the reference implementation's resampling ops and op sequence
  (:mod:`compare.reference_ops`) with the grouped modulated convolution and its
  unfused noise, bias and activation, in a process without transparent huge pages (which is
  how the reference runs); ``reference+hugepages`` on request: the same with them, to show how
  much of the difference is allocation,
* ``grouped``: essencekit's ops (depthwise blur, transposed-convolution upsampling, fused
  activations), grouped modulated convolution; ``grouped-unfused`` on request: without the
  fused activations and the huge pages (what essencekit ran before them), for before/after
  figures from one run; ``grouped+malloc`` on request: with the CPU backend's opt-in malloc
  tuning,
* ``shared``: essencekit's ops with the shared-weight (non-grouped) modulated convolution,
* ``shared+checkpoint``: as ``shared`` with ``checkpoint_blocks=True`` (forward + backward
  only: checkpointing changes nothing without gradients); ``grouped+checkpoint`` on request.
* ``backend``: essencekit's ops with the backend's own modulated-convolution form (what
  ``essencekit extract`` and ``transfer`` run; the form ``essencekit bench`` times), on request.

Every variant runs in its own worker process (one per variant and operation, batches in
increasing order), so that the peak memory of each figure is that configuration's own: the
peak resident set size of the process on the CPU (``ru_maxrss``, which never goes down, hence
the ascending batches), the backend's peak device memory elsewhere. Each operation is warmed
up once at its smallest batch, then timed up to ``repeats`` times (fewer for slow cases, see
``time_budget_s``, but never fewer than three: ``measure.MIN_TIMED_RUNS``); the figure is the median.

Batch-1 outputs (images and W+ gradients) of every variant are compared with the reference's.
On CUDA the published code runs a compiled ``upfirdn2d`` kernel where it builds; the
``reference`` variant here is always its pure-PyTorch path (what runs on the CPU and wherever
the extension does not build).
The report recommends the modulated-convolution form for the backend from the measured times.

Run ``python benchmarks/generator.py --help``. The targets these figures are held to are in
docs/performance.md.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from essencekit.bench import measure, workloads
from essencekit.bench.report import (
    SECTION,
    fmt,
    gib_cell,
    peak_label,
    print_lines,
    print_machine,
    rich_table,
)
from essencekit.bench.workloads import DEFAULT_REPEATS, DEFAULT_SEED, OPS

from .common import (
    REFERENCE_PROCESS_ENV,
    add_common_arguments,
    command_line,
    int_list,
    markdown,
    names,
    ratio,
    worker_runner,
)

MODULE = "compare.generator"
DEFAULT_SIZE = 1024
QUICK_SIZE = 256
DEFAULT_BATCHES = (1, 4)
DEFAULT_TIME_BUDGET_S = 20.0
# Relative agreement with the reference's batch-1 outputs that counts as the same result.
AGREEMENT_TOLERANCE = {"float32": 1e-4, "reduced": 5e-2}
# Below this relative time difference the two modulated-convolution forms are "as fast".
CLEAR_DIFFERENCE = 0.03
# The reference form's peak for fwd+bwd, 1024 px, batch 4, on the CPU (docs/performance.md).
REFERENCE_PEAK_HINT_GIB = 21.1
# The built-in CPU backend's switch for its (opt-in) malloc tuning (essencekit_builtins.backends).
MALLOC_TUNING_ENV = "ESSENCEKIT_CPU_MALLOC_TUNING"


@dataclass(frozen=True)
class Variant:
    name: str
    description: str
    modulated_conv: str | None  # None: the backend's own form
    reference_ops: bool = False
    checkpoint_blocks: bool = False
    ops: tuple[str, ...] = OPS
    # False: the reference's unfused noise, bias and activation and its per-sample weights
    # (reference_ops.use_reference_sequence)
    fused_ops: bool = True
    # False: torch's CPU allocator without transparent huge pages, as the reference runs
    huge_pages: bool = True
    # True: the CPU backend's opt-in malloc tuning
    malloc_tuning: bool = False

    def worker_env(self) -> dict[str, str]:
        """Environment settings of this variant's worker process (read before torch allocates)."""
        env = {MALLOC_TUNING_ENV: "1" if self.malloc_tuning else "0"}
        if not self.huge_pages:
            env.update(REFERENCE_PROCESS_ENV)
        return env

    def adapt(self, model) -> None:
        """Turn ``model``, as the backend prepared it, into this variant's form (in place)."""
        from .reference_ops import use_reference_ops, use_reference_sequence

        if self.reference_ops:
            use_reference_ops(model)
        # the backend chose its own modulated-conv form: the variant's wins
        if self.modulated_conv is not None:
            model.set_modulated_conv(self.modulated_conv)
        if not self.fused_ops:
            use_reference_sequence(model)
        model.checkpoint_blocks = self.checkpoint_blocks


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            "reference",
            "reference upfirdn2d (B*C single-channel convolutions, layout copies), grouped modulated conv, "
            "unfused activations, no huge pages",
            "grouped", reference_ops=True, fused_ops=False, huge_pages=False,
        ),
        Variant(
            "reference+hugepages",
            "as reference, with essencekit's huge pages (how much of the difference is allocation)",
            "grouped", reference_ops=True, fused_ops=False,
        ),
        Variant("grouped", "essencekit ops, grouped modulated conv", "grouped"),
        Variant(
            "grouped-unfused",
            "as grouped, unfused activations, no huge pages (essencekit before both)",
            "grouped", fused_ops=False, huge_pages=False,
        ),
        Variant(
            "grouped+malloc",
            "as grouped, with the CPU backend's opt-in malloc tuning",
            "grouped", malloc_tuning=True,
        ),
        Variant("shared", "essencekit ops, shared-weight (non-grouped) modulated conv", "shared"),
        Variant(
            "shared+checkpoint", "as shared, checkpoint_blocks=True (recompute in backward)",
            "shared", checkpoint_blocks=True, ops=("fwd+bwd",),
        ),
        Variant(
            "grouped+checkpoint", "as grouped, checkpoint_blocks=True (recompute in backward)",
            "grouped", checkpoint_blocks=True, ops=("fwd+bwd",),
        ),
        Variant("backend", "essencekit ops, the backend's own modulated conv (what extract and transfer run)", None),
    )
}
DEFAULT_VARIANTS = ("reference", "grouped", "shared", "shared+checkpoint")


# --------------------------------------------------------------------------------------------
# The worker: one process, one variant, a few (op, batch) cases


def measure_cases(spec: dict) -> dict:
    """Run one worker's cases (in this process) and return their figures.

    ``spec``: as :func:`essencekit.bench.workloads.generator_cases` takes it, and ``variant``.
    """
    variant = VARIANTS[spec["variant"]]
    return {"variant": variant.name,
            **workloads.generator_cases({**spec, "tag": variant.name}, adapt=variant.adapt)}


def subprocess_runner(timeout: float | None = None) -> Callable[[dict, str], dict]:
    """Runs each worker in a fresh ``python -m compare.generator --worker`` process."""
    return worker_runner(MODULE, timeout)


# Runs each worker in this process (tests; peak memory is then this process's).
in_process_runner = measure.in_process(measure_cases)


# --------------------------------------------------------------------------------------------
# The parent: plan, run, compare, summarise


def plan_workers(configs: Sequence, variants: Sequence[str], batches: Sequence[int]) -> list[dict]:
    """One worker per (size, variant, op); batches ascending so the process peak is each
    batch's own. With a single batch, one worker runs forward then fwd+bwd (which needs more)."""
    batches = sorted(set(batches))
    plans = []
    for config in configs:
        for name in variants:
            ops = [op for op in OPS if op in VARIANTS[name].ops]
            if len(batches) == 1:
                groups = [[(op, batches[0]) for op in ops]]
            else:
                groups = [[(op, b) for b in batches] for op in ops]
            for cases in groups:
                plans.append({"config": asdict(config), "variant": name, "cases": cases,
                              "env": VARIANTS[name].worker_env()})
    return plans


def _relative(diff: float, scale: float) -> float:
    return diff / scale if scale > 0 else (0.0 if diff == 0 else math.inf)


def compare_outputs(outputs: dict[tuple[int, str], dict[str, dict]], tolerance: float) -> list[dict]:
    """Max differences of every variant's batch-1 image and W+ gradient from the reference's."""
    import torch

    rows = []
    for (size, name), by_op in outputs.items():
        if name == "reference":
            continue
        ref = outputs.get((size, "reference"), {})
        row: dict[str, Any] = {"size": size, "variant": name}
        mine = {op: torch.load(path, weights_only=True) for op, path in by_op.items() if op in ref}
        theirs_by_op = {op: torch.load(ref[op], weights_only=True) for op in mine}
        for key, ops in (("image", ("forward", "fwd+bwd")), ("grad", ("fwd+bwd",))):
            for op in ops:
                if key in mine.get(op, {}) and key in theirs_by_op[op]:
                    ours, theirs = mine[op][key], theirs_by_op[op][key]
                    diff = (ours - theirs).abs().max().item()
                    row[f"{key}_max_abs_diff"] = diff
                    row[f"{key}_rel_diff"] = _relative(diff, theirs.abs().max().item())
                    row[f"{key}_from"] = op
                    break
        rels = [row[k] for k in ("image_rel_diff", "grad_rel_diff") if k in row]
        if rels:
            row["identical"] = max(rels) <= tolerance
            rows.append(row)
    return rows


def backend_form(backend) -> str:
    """The modulated-convolution form essencekit's generator picks on ``backend`` (a tiny one
    is asked: the choice is the model's, from what the backend reports)."""
    from essencekit.models.stylegan2 import Generator, GeneratorConfig

    return Generator(GeneratorConfig.ffhq(16, max_channels=8)).configure_for(backend).modulated_conv


def recommend_modulated_conv(rows: Sequence[dict], backend_name: str, current: str) -> dict | None:
    """Which modulated-convolution form was faster, by the geometric mean of the time ratio
    shared / grouped over fwd+bwd (what extraction runs; all ops when fwd+bwd is missing)."""
    measured = {(r["size"], r["op"], r["batch"], r["variant"]): r for r in rows if r.get("median_s")}
    pairs = []
    for (s, op, b, v), shared in measured.items():
        grouped = measured.get((s, op, b, "grouped"))
        if v == "shared" and grouped is not None:
            pairs.append({
                "size": s, "op": op, "batch": b,
                "grouped_s": grouped["median_s"], "shared_s": shared["median_s"],
                "grouped_peak_gib": measure.gib(grouped.get("peak_bytes")),
                "shared_peak_gib": measure.gib(shared.get("peak_bytes")),
            })
    if not pairs:
        return None
    basis = [p for p in pairs if p["op"] == "fwd+bwd"] or pairs
    ratio = math.exp(sum(math.log(p["shared_s"] / p["grouped_s"]) for p in basis) / len(basis))
    faster = "shared" if ratio < 1 else "grouped"
    return {
        "backend": backend_name,
        "faster": faster,
        "shared_over_grouped": ratio,
        "clear": abs(1 - ratio) >= CLEAR_DIFFERENCE,
        "basis": "fwd+bwd" if basis[0]["op"] == "fwd+bwd" else "all",
        "pairs": pairs,
        "backend_uses": current,
        "agrees": faster == current,
    }


def benchmark(
    configs: Sequence,
    variants: Sequence[str] = DEFAULT_VARIANTS,
    batches: Sequence[int] = DEFAULT_BATCHES,
    *,
    backend: str | None = None,
    repeats: int = DEFAULT_REPEATS,
    time_budget_s: float | None = DEFAULT_TIME_BUDGET_S,
    warmup: bool = True,
    autocast: bool = True,
    seed: int = DEFAULT_SEED,
    runner: Callable[[dict, str], dict] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the benchmark and return the report (plain data, JSON-serialisable)."""
    from essencekit.backends import select_backend

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    chosen = select_backend(backend)
    runner = runner or subprocess_runner()
    progress = progress or (lambda message: None)
    info = measure.machine_info(chosen)
    reduced = autocast and info["autocast_dtype"] != "float32"
    started = time.perf_counter()
    rows: list[dict] = []
    outputs: dict[tuple[int, str], dict[str, str]] = {}
    plans = plan_workers(configs, variants, batches)
    with tempfile.TemporaryDirectory(prefix="essencekit-bench-") as workdir:
        for index, plan in enumerate(plans, 1):
            size, name = plan["config"]["size"], plan["variant"]
            label = f"{size} px {name} " + ", ".join(f"{op} b{b}" for op, b in plan["cases"])
            progress(f"[{index}/{len(plans)}] {label} ...")
            spec = dict(
                plan, backend=chosen.name, repeats=repeats, time_budget_s=time_budget_s,
                warmup=warmup, autocast=autocast, seed=seed, save_dir=workdir,
            )
            t0 = time.perf_counter()
            result = runner(spec, workdir)
            done = {(c["op"], c["batch"]): c for c in result.get("cases", [])}
            for op, batch in plan["cases"]:
                case = done.get((op, batch))
                row = {"size": size, "variant": name, "op": op, "batch": batch}
                if case is None:
                    row["error"] = result.get("error", "no result")
                else:
                    row.update({k: v for k, v in case.items() if k != "output_path"})
                    row["runs"] = len(case["times_s"])
                    row["images_per_s"] = batch / case["median_s"] if case["median_s"] else None
                    if "output_path" in case:
                        outputs.setdefault((size, name), {})[op] = case["output_path"]
                rows.append(row)
            status = f"failed: {result['error']}" if "error" in result else "done"
            progress(f"[{index}/{len(plans)}] {label}: {status} in {time.perf_counter() - t0:.1f} s")
        agreement = compare_outputs(outputs, AGREEMENT_TOLERANCE["reduced" if reduced else "float32"])

    info["load_average_end"] = measure.load_average()
    reference = {
        (r["size"], r["op"], r["batch"]): r["median_s"]
        for r in rows if r["variant"] == "reference" and r.get("median_s")
    }
    for row in rows:
        ref = reference.get((row["size"], row["op"], row["batch"]))
        row["speedup_vs_reference"] = ref / row["median_s"] if ref and row.get("median_s") else None
    return {
        "benchmark": "stylegan2-generator",
        "machine": info,
        "settings": {
            "sizes": sorted({c.size for c in configs}),
            "configs": [asdict(c) for c in configs],
            "variants": list(variants),
            "batches": sorted(set(batches)),
            "repeats": repeats,
            "time_budget_s": time_budget_s,
            "warmup": warmup,
            "autocast": autocast,
            "precision": info["autocast_dtype"] if autocast else "float32",
            "seed": seed,
            "input": "W+ [batch, n_latent, style_dim] standard normal, constant noise",
            "fwd+bwd": "d sum(images) / d W+, weights frozen",
        },
        "variants": {name: VARIANTS[name].description for name in variants},
        "results": rows,
        "agreement": agreement,
        "recommendation": recommend_modulated_conv(rows, chosen.name, backend_form(chosen)),
        "wall_s": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------
# Presentation


def _sorted_rows(report: dict) -> list[dict]:
    order = {name: i for i, name in enumerate(report["settings"]["variants"])}
    return sorted(
        report["results"],
        key=lambda r: (r["size"], OPS.index(r["op"]), r["batch"], order.get(r["variant"], 99)),
    )


def summary_lines(report: dict) -> list[str]:
    """The verdicts under the table: agreement and the modulated-conv recommendation."""
    lines = []
    for row in report["agreement"]:
        parts = []
        if "image_rel_diff" in row:
            parts.append(
                f"image max |diff| {row['image_max_abs_diff']:.2e} ({row['image_rel_diff']:.1e} of max)"
            )
        if "grad_rel_diff" in row:
            parts.append(f"W+ gradient {row['grad_rel_diff']:.1e} of max")
        verdict = "same results" if row["identical"] else "DIFFERENT RESULTS"
        lines.append(f"{row['size']} px {row['variant']} vs reference, batch 1: " + ", ".join(parts) + f": {verdict}")
    rec = report.get("recommendation")
    if rec:
        basis = "fwd+bwd" if rec["basis"] == "fwd+bwd" else "all cases"
        if rec["clear"]:
            verdict = f"{rec['faster']} is faster"
        else:
            verdict = f"no clear difference (under {CLEAR_DIFFERENCE:.0%}); {rec['faster']} was faster here"
        agree = "agrees" if rec["agrees"] else "differs: consider changing it"
        lines.append(
            f"Modulated conv on {rec['backend']}: shared takes {rec['shared_over_grouped']:.2f}x the time of "
            f"grouped (geometric mean over {basis}) -> {verdict}; the {rec['backend']} backend uses "
            f"{rec['backend_uses']} ({agree})."
        )
        lines.extend(
            f"  {p['op']} {p['size']} px batch {p['batch']}: shared {p['shared_s']:.2f} s "
            f"({fmt(p['shared_peak_gib'], '.2f', ' GiB')}), grouped {p['grouped_s']:.2f} s "
            f"({fmt(p['grouped_peak_gib'], '.2f', ' GiB')})"
            for p in rec["pairs"]
        )
    failed = [r for r in report["results"] if r.get("error")]
    for row in failed:
        lines.append(f"FAILED {row['size']} px {row['variant']} {row['op']} b{row['batch']}: {row['error']}")
    return lines


def _cells(row: dict, *, runs: bool) -> list[str]:
    """One row's cells: size, variant, op, batch, [runs,] median s, images/s, peak, vs reference."""
    first = [str(row["size"]), row["variant"], row["op"], str(row["batch"])]
    if row.get("error"):
        return first + (["-", "failed", "-", "-", "-"] if runs else ["failed"])
    return first + ([str(row["runs"])] if runs else []) + [
        fmt(row["median_s"], ".2f"), fmt(row["images_per_s"], ".3g"), gib_cell(row["peak_bytes"]),
        ratio(row["speedup_vs_reference"]),
    ]


def _columns(report: dict, *, runs: bool) -> list[tuple[str, str]]:
    return [
        ("size", "right"), ("variant", "left"), ("op", "left"), ("batch", "right"),
        *([("runs", "right")] if runs else []), ("median s", "right"), ("images/s", "right"),
        (peak_label(report["results"]), "right"), ("vs reference", "right"),
    ]


def render(report: dict, console=None) -> None:
    """Print the machine, the table and the verdicts with Rich."""
    from rich.console import Console

    console = console or Console()
    settings = report["settings"]
    print_machine(report, console)
    rows, previous = [], None
    for row in _sorted_rows(report):
        group = (row["size"], row["op"], row["batch"])
        if group != previous:
            rows.append(SECTION)
        previous = group
        rows.append(_cells(row, runs=True))
    console.print(rich_table(
        _columns(report, runs=True), rows,
        title=(
            f"StyleGAN2 generator, {'/'.join(map(str, settings['sizes']))} px, random weights, "
            f"W+ input, constant noise, {settings['precision']}, backend {report['machine']['backend']}"
        ),
    ))
    load = report["machine"].get("load_average_end")
    print_lines(console, [
        *summary_lines(report),
        f"Total wall time {report['wall_s']:.0f} s"
        + (f"; load average at the end {load[0]:.2f} (1 min), {load[1]:.2f} (5 min)" if load else "") + ".",
    ])


def markdown_table(report: dict) -> str:
    """The results as a Markdown table (for docs/performance.md)."""
    return markdown(_columns(report, runs=False), (_cells(row, runs=False) for row in _sorted_rows(report)))


# --------------------------------------------------------------------------------------------
# Command line


def _variant_list(text: str) -> list[str]:
    try:
        return names(text, VARIANTS, "variant")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/generator.py",
        description=(
            "Time the StyleGAN2 generator (random weights, W+ input, constant noise) forward and "
            "forward+backward, essencekit's forms beside the reference form, each variant in its own "
            "process; print times, speed-ups, peak memory and the faster modulated convolution."
        ),
    )
    parser.add_argument("--sizes", type=int_list, help=f"image sizes, comma-separated (default {DEFAULT_SIZE})")
    parser.add_argument("--batches", type=int_list, help="batch sizes, comma-separated (default 1,4)")
    parser.add_argument(
        "--repeats", type=int, help=f"timed runs per case at most; the median is reported (default {DEFAULT_REPEATS})"
    )
    parser.add_argument(
        "--time-budget", type=float, default=DEFAULT_TIME_BUDGET_S, metavar="SECONDS",
        help="no further run of a case once another would take its total past this, after three runs (default "
        "%(default)g; 0: always --repeats runs)",
    )
    parser.add_argument(
        "--variants", type=_variant_list, default=list(DEFAULT_VARIANTS),
        help=f"comma-separated, from {', '.join(VARIANTS)} (default: {','.join(DEFAULT_VARIANTS)})",
    )
    parser.add_argument("--no-warmup", dest="warmup", action="store_false", help="skip the warm-up run")
    parser.add_argument("--fp32", action="store_true", help="no autocast on backends that use reduced precision")
    add_common_arguments(
        parser, quick=f"size {QUICK_SIZE}, batch 1, 1 repeat (unless given explicitly), no warm-up"
    )
    return parser


def main(argv: Sequence[str] | None = None, *, runner: Callable[[dict, str], dict] | None = None) -> int:
    """The command line; returns the exit status (1 when a case failed)."""
    from essencekit.models.stylegan2 import GeneratorConfig

    args = build_parser().parse_args(argv)

    def run(progress: Callable[[str], None]) -> dict:
        sizes = args.sizes or [QUICK_SIZE if args.quick else DEFAULT_SIZE]
        batches = args.batches or ([1] if args.quick else list(DEFAULT_BATCHES))
        configs = [GeneratorConfig.ffhq(size, max_channels=args.max_channels) for size in sizes]
        available = measure.gib(measure.available_memory_bytes())
        if (
            "reference" in args.variants and max(sizes) >= 1024 and max(batches) >= 4
            and available is not None and available < REFERENCE_PEAK_HINT_GIB + 1
            and args.backend in (None, "cpu") and args.max_channels is None
        ):
            progress(
                f"warning: the reference form needs about {REFERENCE_PEAK_HINT_GIB:g} GiB for fwd+bwd at 1024 px, "
                f"batch 4 on the CPU; {available:.1f} GiB is available, so that worker may be killed "
                "(use --batches 1, or leave it out with --variants)"
            )
        return benchmark(
            configs, args.variants, batches, backend=args.backend,
            repeats=args.repeats or (1 if args.quick else DEFAULT_REPEATS),
            time_budget_s=args.time_budget or None, warmup=args.warmup and not args.quick,
            autocast=not args.fp32, seed=args.seed, runner=runner or subprocess_runner(args.timeout),
            progress=progress,
        )

    return command_line(args, worker=measure_cases, run=run, render=render, markdown=markdown_table)


if __name__ == "__main__":
    sys.exit(main())
