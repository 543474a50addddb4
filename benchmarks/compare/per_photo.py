"""Benchmark of transfer's per-photo path on whole photos, against the reference form, with a
breakdown of where each photo's time goes.

Every loop runs the same JPEG photos (1600x1200, one face-sized region, random pixels), the
same random weights (an FFHQ-shaped 1024 px generator and an ir_se-50 e4e) and the same
random essence, at batch 1, one photo after another:

* ``reference``: the reference per-photo path: decode, detect, align (essencekit's FFHQ
  crop), resize the crop to 256 px, e4e (the same modules: e4e's code is the reference's), add
  the essence, synthesise with the reference's resampling ops and op sequence
  (:mod:`compare.reference_ops`, fp32), paste the edited face back (essencekit's
  ``paste_back``: the reference repository has none) and save the PNG with Pillow's defaults;
  in a process without transparent huge pages, as the reference runs.
* ``before``: ``essencekit transfer --paste edited`` as it ran before the per-photo work of
  issue 15: the encoder as loaded (no folding) and no inference session from the backend.
* ``after``: ``essencekit transfer --paste edited`` as it runs now.

Detection is a stand-in (:class:`FixedAligner`: the same landmarks for every photo, at no
cost), so that the figures need no landmark model; dlib's cost is the same on both sides.

Each run is a fresh worker process: the models are built, one photo warms up, then ``photos``
photos are timed. The loops take turns, ``runs`` times (three by default), so that a slow spell
of a shared machine falls on every side; the figure is the median of the runs' seconds per
photo. The timed photos of essencekit's runs compute in the backend's inference session the
warm-up opened, as the photos after the first of a long run do. Beside the wall time, each run's CPU time per photo (user and kernel, every thread of
the worker): on a machine that other jobs share, the wall time depends on what they leave over,
the CPU time far less. essencekit's runs also report their time per section of the pipeline
(:mod:`essencekit.transfers.timing`) and, after the run, the synthesis of the same image timed
alone in the same process: what "synthesis inside transfer costs what it costs alone" is
checked against.

Run ``python benchmarks/per_photo.py --help``; docs/performance.md has a run's figures.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from essencekit.bench import measure, workloads
from essencekit.bench.report import gib_cell, print_lines, print_machine

from .common import add_common_arguments, command_line, markdown, names, ratio, worker_env, worker_runner

MODULE = "compare.per_photo"
LOOPS = ("reference", "before", "after")
SECTIONS = ("decode", "detect", "align", "encode", "synthesise", "paste", "write")
DEFAULT_PHOTOS = 3
DEFAULT_RUNS = 3
PHOTO_SIZE = (1600, 1200)
# eyes and mouth corners of the face every photo holds: an FFHQ square of about 800 px
LANDMARKS = {"eye_left": (700.0, 480.0), "eye_right": (900.0, 480.0), "mouth_left": (730.0, 690.0),
             "mouth_right": (870.0, 690.0), "box": (560.0, 300.0, 1040.0, 860.0)}
QUICK = {"photos": 1, "max_channels": 16, "size": 64}


def fixed_aligner():
    """An aligner that "finds" the face of :data:`LANDMARKS` in any photo, instantly."""
    from essencekit import Aligner, FaceLandmarks

    class FixedAligner(Aligner):
        name = "fixed"
        description = "the benchmark photos' known landmarks"

        def detect(self, image):
            return [FaceLandmarks(**LANDMARKS)]

    return FixedAligner()


def write_photos(folder: Path, count: int, seed: int) -> list[Path]:
    """``count`` JPEG photos of :data:`PHOTO_SIZE`, random pixels (what a camera's file costs to decode)."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        pixels = rng.integers(0, 256, (PHOTO_SIZE[1], PHOTO_SIZE[0], 3), dtype=np.uint8)
        path = folder / f"photo{i:03d}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        paths.append(path)
    return paths


# --------------------------------------------------------------------------------------------
# The worker: one run of one loop


def _reference_loop(e4e, direction, photos: list[Path], out: Path, backend) -> None:
    import numpy as np
    import torch
    from PIL import Image

    from essencekit.faces import align_faces, paste_back
    from essencekit.images import read_image

    aligner = fixed_aligner()
    size = e4e.input_size
    direction = direction.to(backend.device)
    for photo in photos:
        image = read_image(photo)
        face = align_faces(image, aligner=aligner)[0]
        small = face.crop.resize((size, size), Image.BILINEAR)
        x = torch.from_numpy(np.asarray(small, dtype=np.float32).copy()).permute(2, 0, 1)[None] / 127.5 - 1
        with torch.no_grad():
            w = e4e.invert(x.to(backend.device))
            edited = e4e.generator.synthesis(w + direction, noise="const")
        pixels = ((edited[0].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        paste_back(image, [face], [Image.fromarray(pixels)], feather=0.1).save(out / f"{photo.stem}.png")


def _essencekit_loop(form: str, extra: dict) -> Callable:
    """essencekit's pipeline in ``form`` (``before`` or ``after``); the timed call's sections
    go to ``extra["sections"]``. The models are made ready once, at the warm-up (a run of many
    photos pays for that once too)."""
    held: dict = {}

    def loop(e4e, direction, photos: list[Path], out: Path, backend) -> None:
        from essencekit.essence import Essence
        from essencekit.transfers.api import Transferrer
        from essencekit.transfers.timing import Timings

        if "models" not in held:
            if form == "before":
                # a copy of the backend: the registered one keeps its session for other runs
                backend = copy.copy(backend)
                backend.inference_session = lambda io_threads=0: contextlib.nullcontext()
            models = Transferrer(encoder=e4e, device=backend, aligner=fixed_aligner())
            if form == "before":
                models._encoder = e4e  # the encoder as loaded, not its folded inference form
            held["models"] = models
        run = held["models"].transfer(photos, Essence(direction, metadata={"name": "bench"}), output=out,
                                      paste="edited", overwrite=True, cache=False, batch_size=1)
        timings = Timings()
        run.pipeline.timings = timings
        for result in run:
            if result.status != "written":
                raise RuntimeError(f"{result.source}: {result.status} {result.reason}")
        extra["sections"] = {name: timings.seconds.get(name, 0.0) / len(photos) for name in SECTIONS}
        extra["sections_cpu"] = {name: timings.cpu_seconds.get(name, 0.0) / len(photos) for name in SECTIONS}

    return loop


def _synthesis_alone(e4e, direction, backend, repeats: int) -> tuple[float, float]:
    """Median (wall, calling thread's CPU) seconds of the synthesis (and its 8-bit copy) of one
    edit, alone, over ``repeats`` calls."""
    import torch

    from essencekit.transfers.pipeline import to_uint8

    w = (e4e.latent_avg + direction).unsqueeze(0).to(backend.device)
    cpu: list[float] = []

    def step():
        start = time.thread_time()
        to_uint8(e4e.generator.synthesis(w, noise="const"))
        cpu.append(time.thread_time() - start)

    with torch.no_grad():
        step()
        cpu.clear()
        times, _ = measure.time_repeats(step, repeats=repeats, synchronize=backend.synchronize)
    return measure.median(times), measure.median(cpu)


def _cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _with_cpu_time(loop: Callable, extra: dict) -> Callable:
    """``loop``, recording the CPU seconds (user and kernel, every thread) per photo of its
    last call, the timed one: on a machine other jobs share, wall time is what they left over,
    CPU time is close to what the work itself took."""

    def timed(e4e, direction, photos, out, backend):
        start = _cpu_seconds()
        loop(e4e, direction, photos, out, backend)
        extra["cpu_s_per_photo"] = (_cpu_seconds() - start) / len(photos)

    return timed


def run_case(spec: dict) -> dict:
    """One run of ``spec["loop"]`` in this process (see :func:`essencekit.bench.workloads.transfer_case`)."""
    loop = spec["loop"]
    if spec.get("threads"):
        import torch

        torch.set_num_threads(int(spec["threads"]))
    extra: dict = {"load_average": measure.load_average()}
    if loop == "reference":
        from .reference_ops import use_reference_ops

        record = workloads.transfer_case(spec, adapt=use_reference_ops, loop=_with_cpu_time(_reference_loop, extra))
    else:
        held: dict = {}
        run_loop = _essencekit_loop(loop, extra)

        def loop_fn(e4e, direction, photos, out, backend):
            held.update(e4e=e4e, direction=direction, backend=backend)
            run_loop(e4e, direction, photos, out, backend)

        from essencekit.backends import select_backend

        # the warm-up's session stays open over the timed photos, as over photos 2..N of a long
        # run: allocator settings made per run would otherwise be timed as if every run had 3
        # photos ("before" ignores it: it had no session)
        session = select_backend(spec.get("backend")).inference_session() if loop == "after" else contextlib.nullcontext()
        with session:
            record = workloads.transfer_case(spec, loop=_with_cpu_time(loop_fn, extra))
        extra["synthesis_alone_s"], extra["synthesis_alone_cpu_s"] = _synthesis_alone(
            held["e4e"], held["direction"], held["backend"], record["images"]
        )
    return {"loop": loop, "s_per_photo": record["seconds"] / record["images"], **extra,
            "peak_bytes": record["peak_bytes"], "torch_threads": record["torch_threads"]}


def subprocess_runner(timeout: float | None = None) -> Callable[[dict, str], dict]:
    """Runs each run in a fresh ``python -m compare.per_photo --worker`` process."""
    return worker_runner(MODULE, timeout)


# For tests: the runs in this process.
in_process_runner = measure.in_process(run_case)


# --------------------------------------------------------------------------------------------
# The parent


def benchmark(
    *, photos: int = DEFAULT_PHOTOS, runs: int = DEFAULT_RUNS, loops: Sequence[str] = LOOPS, size: int = 1024,
    backend: str | None = None, max_channels: int | None = None, seed: int = 0, threads: int | None = None,
    runner: Callable[[dict, str], dict] | None = None, progress: Callable[[str], None] | None = None,
) -> dict:
    """Run ``runs`` rounds of every loop, taking turns, and return the report (plain data).
    ``threads``: torch's intra-op threads in every worker (default: torch's own choice)."""
    from essencekit.backends import select_backend

    if runs < 1 or photos < 1:
        raise ValueError("--runs and --photos must be at least 1")
    chosen = select_backend(backend)
    runner = runner or subprocess_runner()
    progress = progress or (lambda message: None)
    info = measure.machine_info(chosen)
    started = time.perf_counter()
    samples: dict[str, list[dict]] = {loop: [] for loop in loops}
    errors: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="essencekit-bench-per-photo-") as workdir:
        paths = write_photos(Path(workdir) / "photos", photos + 1, seed)
        for round_ in range(1, runs + 1):
            for loop in loops:
                if loop in errors:
                    continue
                label = f"[run {round_}/{runs}] {loop}, {photos} photo(s)"
                progress(f"{label} ...")
                spec = {"loop": loop, "size": size, "max_channels": max_channels, "backend": chosen.name,
                        "seed": seed, "photos": [str(p) for p in paths], "warmup": 1, "workdir": workdir,
                        "threads": threads, "env": worker_env(loop)}
                t0 = time.perf_counter()
                result = runner(spec, workdir)
                if "error" in result:
                    errors[loop] = result["error"]
                    progress(f"{label}: failed: {result['error']}")
                    continue
                samples[loop].append(result)
                progress(f"{label}: {result['s_per_photo']:.2f} s/photo ({time.perf_counter() - t0:.0f} s)")
    rows = [summarise(loop, samples[loop], errors.get(loop)) for loop in loops]
    base = next((r for r in rows if r["loop"] == "reference" and "error" not in r), None)
    for row in rows:
        if base is not None and "error" not in row:
            row["vs_reference"] = base["s_per_photo"] / row["s_per_photo"]
            row["cpu_vs_reference"] = base["cpu_s_per_photo"] / row["cpu_s_per_photo"]
    info["load_average_end"] = measure.load_average()
    return {
        "benchmark": "transfer-per-photo",
        "machine": info,
        "settings": {"photos": photos, "runs": runs, "loops": list(loops), "size": size, "max_channels": max_channels,
                     "seed": seed, "threads": threads, "photo_size": list(PHOTO_SIZE), "batch_size": 1,
                     "weights": "random",
                     "paste": "edited"},
        "results": rows,
        "wall_s": time.perf_counter() - started,
    }


def summarise(loop: str, samples: list[dict], error: str | None) -> dict:
    """One loop's row: medians over its runs (every run's figure kept beside them)."""
    if error is not None and not samples:
        return {"loop": loop, "error": error}
    per_photo = [s["s_per_photo"] for s in samples]
    row = {"loop": loop, "runs": len(samples), "s_per_photo": statistics.median(per_photo),
           "runs_s_per_photo": per_photo, "peak_bytes": max(s["peak_bytes"] or 0 for s in samples),
           "cpu_s_per_photo": statistics.median(s["cpu_s_per_photo"] for s in samples),
           "runs_cpu_s_per_photo": [s["cpu_s_per_photo"] for s in samples],
           "runs_load_average": [s["load_average"] for s in samples]}
    if error is not None:
        row["error"] = error
    if samples and "sections" in samples[0]:
        row["sections"] = {name: statistics.median(s["sections"][name] for s in samples) for name in SECTIONS}
        row["other_s"] = statistics.median(s["s_per_photo"] - sum(s["sections"].values()) for s in samples)
        row["synthesis_alone_s"] = statistics.median(s["synthesis_alone_s"] for s in samples)
        row["synthesis_inside_vs_alone"] = row["sections"]["synthesise"] / row["synthesis_alone_s"]
        row["sections_cpu"] = {name: statistics.median(s["sections_cpu"][name] for s in samples) for name in SECTIONS}
        row["synthesis_alone_cpu_s"] = statistics.median(s["synthesis_alone_cpu_s"] for s in samples)
        row["synthesis_inside_vs_alone_cpu"] = row["sections_cpu"]["synthesise"] / row["synthesis_alone_cpu_s"]
    return row


def comparison_table(report: dict) -> str:
    columns = [("loop", "left"), ("runs", "right"), ("s/photo (median)", "right"), ("every run", "right"),
               ("vs reference", "right"), ("CPU s/photo", "right"), ("every run", "right"),
               ("CPU vs reference", "right"), ("peak RSS GiB", "right")]
    rows = []
    for row in report["results"]:
        if "s_per_photo" not in row:
            rows.append([row["loop"], f"failed: {row['error'][:60]}"])
            continue
        rows.append([row["loop"], str(row["runs"]), f"{row['s_per_photo']:.2f}",
                     " ".join(f"{v:.2f}" for v in row["runs_s_per_photo"]), ratio(row.get("vs_reference")),
                     f"{row['cpu_s_per_photo']:.2f}", " ".join(f"{v:.2f}" for v in row["runs_cpu_s_per_photo"]),
                     ratio(row.get("cpu_vs_reference")), gib_cell(row["peak_bytes"])])
    return markdown(columns, rows)


def breakdown_table(report: dict) -> str:
    """Seconds per photo in each section of the pipeline (medians over the runs), per essencekit loop."""
    timed = [row for row in report["results"] if "sections" in row]
    columns = [("section", "left")]
    for row in timed:
        columns += [(f"{row['loop']} s/photo", "right"), (f"{row['loop']} thread CPU s", "right")]

    def cells(wall, cpu):
        return [c for row in timed for c in (wall(row), cpu(row))]

    rows = [[name] + cells(lambda r, n=name: f"{r['sections'][n]:.3f}", lambda r, n=name: f"{r['sections_cpu'][n]:.3f}")
            for name in SECTIONS]
    rows.append(["other (planning, the loop)"]
                + cells(lambda r: f"{r['other_s']:.3f}", lambda r: ""))
    rows.append(["**total**"] + cells(lambda r: f"**{r['s_per_photo']:.3f}**", lambda r: ""))
    rows.append(["synthesis alone, same process"]
                + cells(lambda r: f"{r['synthesis_alone_s']:.3f}", lambda r: f"{r['synthesis_alone_cpu_s']:.3f}"))
    rows.append(["synthesis inside / alone"]
                + cells(lambda r: ratio(r["synthesis_inside_vs_alone"]), lambda r: ratio(r["synthesis_inside_vs_alone_cpu"])))
    return markdown(columns, rows)


def markdown_tables(report: dict) -> str:
    return comparison_table(report) + "\n" + breakdown_table(report)


def render(report: dict, console) -> None:
    s = report["settings"]
    print_machine(report, console)
    print_lines(console, [
        f"Transfer per photo, {s['size']} px models (random weights), {s['photo_size'][0]}x{s['photo_size'][1]} JPEG "
        f"photos, batch 1, paste-back and PNG; {s['photos']} photo(s) per run, {s['runs']} run(s) per loop, in turns"
        + (f"; torch threads {s['threads']}" if s.get("threads") else ""),
        comparison_table(report), "Where each photo's time goes inside transfer (medians over the runs):",
        breakdown_table(report),
    ])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="benchmarks/per_photo.py",
        description="Seconds per photo of transfer's whole path (decode, detect, align, e4e, synthesis, paste-back, "
        "PNG) at batch 1: the reference form, essencekit before and after issue 15's changes, in turns, each run in "
        "its own process; with the breakdown per section and the synthesis timed alone.",
    )
    parser.add_argument("--photos", type=int, default=DEFAULT_PHOTOS, help="timed photos per run (default %(default)s)")
    parser.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="runs per loop (default %(default)s)")
    parser.add_argument("--threads", type=int, help="torch threads in every run (default: torch's; 1 makes the "
                        "thread CPU times the whole work, whatever else shares the machine)")
    add_common_arguments(parser, quick="64 px, 16 channels, 1 photo", size=1024, loops=LOOPS)
    return parser


def main(argv: Sequence[str] | None = None, *, runner: Callable[[dict, str], dict] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quick = args.quick

    def run(progress: Callable[[str], None]) -> dict:
        return benchmark(
            photos=QUICK["photos"] if quick and args.photos == DEFAULT_PHOTOS else args.photos, runs=args.runs,
            loops=names(args.loops, LOOPS, "loop"), size=args.size or (QUICK["size"] if quick else 1024),
            backend=args.backend, max_channels=args.max_channels or (QUICK["max_channels"] if quick else None),
            seed=args.seed, threads=args.threads, runner=runner or subprocess_runner(args.timeout),
            progress=progress,
        )

    return command_line(args, worker=run_case, run=run, render=render, markdown=markdown_tables)


if __name__ == "__main__":
    sys.exit(main())
