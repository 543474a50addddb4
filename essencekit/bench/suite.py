"""The benchmark suite behind ``essencekit bench``: essencekit's own path on full-size
architectures with random weights (nothing to download), one figure per case.

Cases (:data:`CASES`), in this order:

* ``generator-forward``: the StyleGAN2 synthesis network (W+ in, constant noise), batch 1,
  images/s;
* ``generator-fwd+bwd``: the same forward and backward (the gradient of the images' sum with
  respect to W+, weights frozen: what extraction runs), batch ``batch`` (default 4), images/s;
* ``e4e-inversion``: the ir_se-50 e4e encoder on 256 px inputs, at the batch size
  ``essencekit transfer`` picks here (1 on the CPU), images/s;
* ``extract-step``: one essence-extraction optimisation step, N = 4 sources, K = 1 restart,
  CLIP ViT-B/32, as ``essencekit extract`` runs it (seconds per step);
* ``transfer``: ``essencekit transfer --no-align --crops`` over ``images`` 1024 px crops
  (inversion + synthesis + PNG write), the automatic batch size, images/s;
* ``encoder-train-step``: one ``essencekit train-encoder`` step at batch 1 (the e4e encoder's
  forward and backward, S = 5 sources rendered and through CLIP ViT-B/32 in the chunks
  training picks, the Ranger update), seconds per step; its peak memory is a target's;
* ``encoder-extract``: ``essencekit extract --method encoder`` of ``images`` 1024 px pictures
  taken whole (one forward pass of the e4e-sized encoder each, batched), targets/s.

Every case runs on the backend's own modulated convolution and autocast (no reference
baselines: those are the source checkout's development benchmarks, ``benchmarks/generator.py``,
``extract.py`` and ``transfer.py``), in its own worker process (:mod:`essencekit.bench.workloads`
does the work) so that its peak memory is its own: the
backend's peak device memory where it reports one (CUDA: ``max_memory_allocated``), else the
process's peak RSS (``ru_maxrss``, models included). Each case is warmed up once, then timed
``repeats`` times; the figure is the median.

:func:`run_suite` returns the report (plain data, see :func:`result_row` and the keys it
returns); :func:`render` prints it with Rich; ``essencekit bench`` is the command line, and
``python benchmarks/suite.py`` the same command from a source checkout. This module imports
no command-line code: the worker processes run ``python -m essencekit.bench.suite --worker``.
"""

from __future__ import annotations

import datetime
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from . import measure, workloads
from .report import fmt, gib_cell, peak_label, print_lines, print_machine, rich_table, wide

MODULE = "essencekit.bench.suite"
SCHEMA_VERSION = 1
DEFAULT_SIZE = 1024
DEFAULT_REPEATS = 3
DEFAULT_BATCH = 4
DEFAULT_SEED = 0
EXTRACT_SOURCES = 4
EXTRACT_RESTARTS = 1
# Timed images of the transfer case: a few on the CPU (about 4 s each at 1024 px), enough to
# fill several batches elsewhere.
DEFAULT_IMAGES = {"cpu": 8}
DEFAULT_IMAGES_ELSEWHERE = 128
MIN_SIZE = 16


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    unit: str | None  # of the throughput (None: the seconds are the figure)


CASES: dict[str, Case] = {
    c.name: c
    for c in (
        Case("generator-forward", "StyleGAN2 synthesis forward, batch 1", "images/s"),
        Case("generator-fwd+bwd", "StyleGAN2 synthesis forward + backward to W+", "images/s"),
        Case("e4e-inversion", "e4e (ir_se-50) inversion of 256 px inputs", "images/s"),
        Case("extract-step", "one essence-extraction step", None),
        Case("transfer", "essence transfer: inversion + synthesis + PNG write", "images/s"),
        Case("encoder-train-step", "one train-encoder step, batch 1", None),
        Case("encoder-extract", "extract --method encoder, one forward pass per target", "targets/s"),
    )
}


def default_images(device_type: str) -> int:
    return DEFAULT_IMAGES.get(device_type, DEFAULT_IMAGES_ELSEWHERE)


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# --------------------------------------------------------------------------------------------
# The worker: one case, in its own process


def _generator(spec: dict, op: str, batch: int) -> dict:
    from ..models.stylegan2 import GeneratorConfig

    config = GeneratorConfig.ffhq(spec["size"], max_channels=spec.get("max_channels"))
    result = workloads.generator_cases({
        "config": asdict(config), "cases": [[op, batch]], "backend": spec["backend"],
        "repeats": spec["repeats"], "time_budget_s": None, "warmup": True, "autocast": True,
        "seed": spec["seed"], "save_dir": None,
    })
    (case,) = result["cases"]
    return {"times_s": case["times_s"], "items": batch, "params": {"size": config.size, "batch": batch},
            **{k: v for k, v in case.items() if k.startswith("peak_")},
            "details": {k: result[k] for k in ("torch_threads", "modulated_conv")}}


def _inversion(spec: dict) -> dict:
    import torch

    from ..backends import select_backend
    from ..transfers.pipeline import auto_batch_size

    backend = select_backend(spec["backend"])
    e4e, _ = workloads.transfer_models(spec, backend)
    batch = auto_batch_size(e4e.generator, backend)
    size = e4e.input_size
    stream = torch.Generator().manual_seed(spec["seed"] + 5)
    images = (torch.rand(batch, 3, size, size, generator=stream) * 2 - 1).to(backend.device)
    if backend.channels_last:  # as the transfer pipeline feeds it
        images = images.contiguous(memory_format=torch.channels_last)

    def invert():
        with torch.no_grad(), backend.autocast():
            return e4e.invert(images)

    invert()
    backend.synchronize()
    backend.reset_peak_memory()
    times, _ = measure.time_repeats(invert, repeats=spec["repeats"], synchronize=backend.synchronize)
    return {"times_s": times, "items": batch, "params": {"input_size": size, "batch": batch},
            **measure.peak_memory(backend), "details": {"torch_threads": torch.get_num_threads()}}


def _extract(spec: dict) -> dict:
    record = workloads.extract_case({
        "size": spec["size"], "max_channels": spec.get("max_channels"),
        "sources": EXTRACT_SOURCES, "restarts": EXTRACT_RESTARTS, "steps": spec["repeats"] + 1,
        "backend": spec["backend"], "clip": spec["clip"], "seed": spec["seed"],
    })
    return {
        "times_s": record["step_times_s"][1:],  # the first step is the warm-up
        "items": None,
        "params": {"size": record["size"], "sources": EXTRACT_SOURCES, "restarts": EXTRACT_RESTARTS,
                   "clip": spec["clip"], "batch": record["batch_size"]},
        **{k: v for k, v in record.items() if k.startswith("peak_")},
        "details": {k: record[k] for k in ("chunks", "checkpoint", "first_loss", "torch_threads")},
    }


def _transfer(spec: dict) -> dict:
    record = workloads.transfer_case({
        "size": spec["size"], "max_channels": spec.get("max_channels"),
        "backend": spec["backend"], "seed": spec["seed"], "photos": spec["photos"], "warmup": spec["warmup"],
        "workdir": spec["workdir"], "batch_size": None, "repeats": spec["repeats"],
    })
    return {"times_s": record["times_s"], "items": record["images"],
            "params": {"size": record["size"], "images": record["images"], "batch": record["batch_size"]},
            **{k: v for k, v in record.items() if k.startswith("peak_")},
            "details": {"torch_threads": record["torch_threads"]}}


def _encoder_train(spec: dict) -> dict:
    record = workloads.encoder_train_case({
        "size": spec["size"], "max_channels": spec.get("max_channels"), "sources": workloads.ENCODER_SOURCES,
        "backend": spec["backend"], "clip": spec["clip"], "seed": spec["seed"], "repeats": spec["repeats"],
    })
    return {"times_s": record["times_s"], "items": None,
            "params": {"size": record["size"], "sources": record["sources"], "batch": 1, "chunk": record["chunk"],
                       "clip": spec["clip"]},
            **{k: v for k, v in record.items() if k.startswith("peak_")},
            "details": {k: record[k] for k in ("optimizer", "batchnorm", "models_bytes", "losses", "torch_threads")}}


def _encoder_extract(spec: dict) -> dict:
    record = workloads.encoder_extract_case({
        "size": spec["size"], "max_channels": spec.get("max_channels"), "photos": spec["photos"],
        "backend": spec["backend"], "seed": spec["seed"], "repeats": spec["repeats"],
    })
    return {"times_s": record["times_s"], "items": record["items"],
            "params": {"input_size": record["input_size"], "targets": record["items"]},
            **{k: v for k, v in record.items() if k.startswith("peak_")},
            "details": {"torch_threads": record["torch_threads"]}}


def run_case(spec: dict) -> dict:
    """Run one case in this process. ``spec``: ``case``, ``backend``, ``size``, ``max_channels``,
    ``repeats``, ``batch``, ``clip``, ``seed``, ``workdir``, and for ``transfer`` ``photos`` and
    ``warmup``. Returns ``times_s``, ``items`` (per timed run, for the throughput), ``params``,
    the ``peak_*`` figures and ``details``."""
    name = spec["case"]
    if name == "generator-forward":
        return _generator(spec, "forward", 1)
    if name == "generator-fwd+bwd":
        return _generator(spec, "fwd+bwd", spec["batch"])
    if name == "e4e-inversion":
        return _inversion(spec)
    if name == "extract-step":
        return _extract(spec)
    if name == "transfer":
        return _transfer(spec)
    if name == "encoder-train-step":
        return _encoder_train(spec)
    if name == "encoder-extract":
        return _encoder_extract(spec)
    raise ValueError(f"unknown case {name!r}; choose from {', '.join(CASES)}")


def subprocess_runner(timeout: float | None = None) -> Callable[[dict, str], dict]:
    """Runs each case in a fresh ``python -m essencekit.bench.suite --worker`` process."""
    return measure.worker_runner(MODULE, timeout)


# For tests: each case in this process (its peak memory is then the process's so far).
in_process_runner = measure.in_process(run_case)


# --------------------------------------------------------------------------------------------
# The parent


def check_options(
    cases: Sequence[str] | None, *, repeats: int, size: int, batch: int, images: int | None,
    max_channels: int | None,
) -> list[str]:
    """The case names to run; :class:`ValueError` with a one-line reason for an option that
    cannot work."""
    chosen = list(CASES) if cases is None else list(dict.fromkeys(cases))
    unknown = [c for c in chosen if c not in CASES]
    if unknown or not chosen:
        raise ValueError(f"unknown case(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CASES)}")
    for option, value in (("--repeats", repeats), ("--batch", batch), ("--images", images),
                          ("--max-channels", max_channels)):
        if value is not None and value < 1:
            raise ValueError(f"{option} must be at least 1, got {value}")
    if size < MIN_SIZE or size & (size - 1):
        raise ValueError(f"--size must be a power of two of at least {MIN_SIZE} (1024 is FFHQ's), got {size}")
    return chosen


def result_row(name: str, result: dict, backend_name: str, machine: dict, max_channels: int | None) -> dict:
    """One case's entry in the report: ``name``, ``description``, ``backend``, ``device``,
    ``params``, ``repeats``, ``times_s``, ``median_s`` (the median of ``times_s``),
    ``throughput`` and ``throughput_unit`` (``None`` where the seconds are the figure),
    ``peak_bytes``/``peak_gib``/``peak_kind`` (``"device"`` or ``"rss"``), ``details``, and
    ``error`` (only when the case failed; its figures are then ``None``)."""
    case = CASES[name]
    times = result.get("times_s") or []
    median = measure.median(times)
    items = result.get("items")
    throughput = items / median if items and median else None
    row = {
        "name": name,
        "description": case.description,
        "backend": backend_name,
        "device": machine.get("device_name"),
        "params": {**result.get("params", {}), "max_channels": max_channels},
        "repeats": len(times),
        "times_s": times,
        "median_s": median,
        "throughput": throughput,
        "throughput_unit": case.unit if throughput is not None else None,
        "peak_bytes": result.get("peak_bytes"),
        "peak_gib": measure.gib(result.get("peak_bytes")),
        "peak_kind": result.get("peak_kind"),
        "details": result.get("details", {}),
    }
    if "error" in result or not times:
        row["error"] = result.get("error", "no timings")
    return row


def run_suite(
    *,
    backend: str | None = None,
    cases: Sequence[str] | None = None,
    repeats: int = DEFAULT_REPEATS,
    size: int = DEFAULT_SIZE,
    batch: int = DEFAULT_BATCH,
    images: int | None = None,
    max_channels: int | None = None,
    clip: str | None = None,
    seed: int = DEFAULT_SEED,
    timeout: float | None = None,
    runner: Callable[[dict, str], dict] | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict:
    """Run the suite's ``cases`` (default all, in :data:`CASES` order) and return the report.

    ``backend``: a name, or ``None``/``"auto"`` for ``$ESSENCEKIT_BACKEND`` or the best available
    (:func:`essencekit.select_backend`; an unknown or unavailable one raises
    :class:`~essencekit.errors.EssencekitError`). ``size``: the generator's (a power of two, at
    least 16; 1024 is FFHQ's). ``batch``: of ``generator-fwd+bwd``. ``images``: timed images of
    ``transfer`` and targets of ``encoder-extract`` (default 8 on the CPU, 128 elsewhere).
    ``max_channels`` caps every feature width (and the style width of the transfer models) for
    smoke tests; ``clip`` is the CLIP variant of ``extract-step`` and ``encoder-train-step``
    (random weights; default: the highest-priority registered one). ``runner(spec, workdir)`` runs one case
    (default: a worker process, given up after ``timeout`` seconds); ``progress`` gets a line
    before and after each case. Options that cannot work raise :class:`ValueError`.
    """
    from ..backends import select_backend
    from ..clip_variant import default_clip_name
    from ..version import __version__

    selected = check_options(cases, repeats=repeats, size=size, batch=batch, images=images,
                             max_channels=max_channels)
    chosen = select_backend(backend or None)
    clip = clip or default_clip_name()
    images = images or default_images(chosen.device.type)
    runner = runner or subprocess_runner(timeout)
    progress = progress or (lambda message: None)
    machine = measure.machine_info(chosen)
    created = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    started = time.perf_counter()
    rows = []
    with tempfile.TemporaryDirectory(prefix="essencekit-bench-suite-") as workdir:
        for index, name in enumerate(selected, 1):
            label = f"[{index}/{len(selected)}] {name}"
            progress(f"{label}: {CASES[name].description} ...")
            spec = {"case": name, "backend": chosen.name, "size": size, "max_channels": max_channels,
                    "repeats": repeats, "batch": batch, "clip": clip, "seed": seed, "workdir": workdir}
            if name == "transfer":
                warmup, photos = workloads.prepare_photos(
                    Path(workdir) / "photos", images, size=size, max_channels=max_channels, seed=seed,
                    batch_size=None, max_batch=chosen.max_batch,
                )
                spec.update(photos=[str(p) for p in photos], warmup=warmup)
            elif name == "encoder-extract":
                photos = workloads.write_photos(_fresh(Path(workdir) / "targets"), images,
                                                1024 if max_channels is None else size, seed)
                spec.update(photos=[str(p) for p in photos])
            t0 = time.perf_counter()
            row = result_row(name, runner(spec, workdir), chosen.name, machine, max_channels)
            rows.append(row)
            progress(f"{label}: {_summary(row)} ({time.perf_counter() - t0:.0f} s)")
    machine["load_average_end"] = measure.load_average()
    return {
        "benchmark": "essencekit-suite",
        "schema_version": SCHEMA_VERSION,
        "essencekit_version": __version__,
        "created": created,
        "machine": machine,
        "settings": {
            "backend": chosen.name, "cases": selected, "repeats": repeats, "size": size, "batch": batch,
            "images": images, "max_channels": max_channels, "clip": clip, "seed": seed, "weights": "random",
            "precision": machine["autocast_dtype"],
        },
        "results": rows,
        "wall_s": time.perf_counter() - started,
    }


# --------------------------------------------------------------------------------------------
# Presentation


def _summary(row: dict) -> str:
    if row.get("error"):
        return f"failed: {row['error']}"
    parts = [f"median {row['median_s']:.3g} s"]
    if row["throughput"] is not None:
        parts.append(f"{row['throughput']:.3g} {row['throughput_unit']}")
    parts.append(f"peak {gib_cell(row['peak_bytes'])} GiB")
    return ", ".join(parts)


def _what(row: dict) -> str:
    p = row["params"]
    if row["name"] == "extract-step":
        text = f"N = {p.get('sources')}, K = {p.get('restarts')}, {p.get('clip')}"
        return text + (f", chunks of {p['batch']}" if p.get("batch") not in (None, p.get("sources")) else "")
    if row["name"] == "transfer":
        return f"{p.get('images')} images, batch {p.get('batch')}"
    if row["name"] == "e4e-inversion":
        return f"{p.get('input_size')} px, batch {p.get('batch')}"
    if row["name"] == "encoder-train-step":
        chunks = f", chunks of {p['chunk']}" if p.get("chunk") not in (None, p.get("sources")) else ""
        return f"{p.get('size')} px, S = {p.get('sources')}, batch 1, {p.get('clip')}{chunks}"
    if row["name"] == "encoder-extract":
        return f"{p.get('targets')} targets, {p.get('input_size')} px in"
    return f"{p.get('size')} px, batch {p.get('batch')}"


def render(report: dict, console) -> None:
    """The machine, then one table row per case (median seconds, throughput, peak memory)."""
    settings = report["settings"]
    console = wide(console)
    print_machine(report, console)
    rows = []
    for row in report["results"]:
        cells = [row["name"], _what(row) if "error" not in row else "failed"]
        if row.get("error"):
            rows.append(cells + ["-"] * 4)
            continue
        rows.append(cells + [
            str(row["repeats"]), fmt(row["median_s"], ".3g"),
            "-" if row["throughput"] is None else f"{row['throughput']:.3g} {row['throughput_unit']}",
            gib_cell(row["peak_bytes"]),
        ])
    columns = [("case", "left"), ("what", "left"), ("runs", "right"), ("median s", "right"),
               ("throughput", "right"), (peak_label(report["results"]), "right")]
    capped = f", widths capped at {settings['max_channels']}" if settings.get("max_channels") else ""
    title = (f"essencekit bench: {settings['size']} px{capped}, random weights, backend {settings['backend']} "
             f"({settings['precision']}), median of the timed runs after a warm-up")
    console.print(rich_table(columns, rows, title=title))
    print_lines(console, [f"FAILED {r['name']}: {r['error']}" for r in report["results"] if r.get("error")])


def default_output(report: dict, folder: Path | None = None) -> Path:
    """``essencekit-bench-<backend>-<YYYYmmdd-HHMMSS>.json`` in ``folder`` (default: here)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return (folder or Path.cwd()) / f"essencekit-bench-{report['settings']['backend']}-{stamp}.json"


# --------------------------------------------------------------------------------------------
# Entry points


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m essencekit.bench.suite --worker SPEC``: run one case, as :func:`subprocess_runner`
    starts it. People run the suite with ``essencekit bench`` (or :func:`run_suite`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["--worker"] or len(argv) != 2:
        print("usage: python -m essencekit.bench.suite --worker SPEC.json (one case of `essencekit bench`, "
              "which runs the suite)", file=sys.stderr)
        return 2
    return measure.worker_main(argv[1], run_case)


if __name__ == "__main__":
    sys.exit(main())
