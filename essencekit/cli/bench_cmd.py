"""``essencekit bench``: time essencekit on this machine (random weights, nothing to download)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

import typer

from .options import Backend, Json, add_command, exit_statuses
from .output import out, print_json, print_log

EXIT_STATUSES = exit_statuses(
    "when every case ran",
    "when a case failed (the others still run and are saved) or on an error (an unavailable backend, an "
    "unwritable -o)",
    "nothing is saved",
)
ADVANCED = "Advanced (smoke tests)"


def _check_writable(path: Path) -> None:
    from ..errors import EssencekitError

    if path.is_dir():
        raise EssencekitError(f"-o {path}: a folder; name the JSON file to write (for example {path / 'bench.json'})")
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    try:  # before the run, not after it: try a file there
        fd, probe = tempfile.mkstemp(prefix=".essencekit-bench-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        raise EssencekitError(
            f"cannot write {path}: {parent}: {error.strerror or error} (choose another -o)"
        ) from None


def bench(
    backend: Backend = "auto",
    repeats: int = typer.Option(3, "--repeats", min=1, help="Timed runs of each case after a warm-up."),
    only: str | None = typer.Option(
        None, "--only", metavar="CASE,...",
        help="Run only these cases: generator-forward, generator-fwd+bwd, e4e-inversion, extract-step, transfer, "
        "encoder-train-step, encoder-extract.",
    ),
    size: int = typer.Option(1024, "--size", help="Generator size in px (1024 is FFHQ's; a power of two >= 16)."),
    batch: int = typer.Option(4, "--batch", min=1, help="Batch of generator-fwd+bwd (smaller needs less memory)."),
    images: int | None = typer.Option(
        None, "--images", min=1,
        help="Timed images of the transfer case, targets of encoder-extract (default: 8 on the CPU, 128 on a GPU).",
    ),
    json_: Json = False,
    output: Path | None = typer.Option(
        None, "-o", "--output", metavar="FILE.json",
        help="Save the JSON here (default: essencekit-bench-*.json, named after the backend, date and time, in "
        "the current folder; with --json, only when -o is given).",
    ),
    max_channels: int | None = typer.Option(
        None, "--max-channels", min=1, metavar="N", rich_help_panel=ADVANCED,
        help="Cap every feature width at N (tiny models: figures for testing the command, not for comparing).",
    ),
    clip: Optional[str] = typer.Option(
        None, "--clip", metavar="NAME", rich_help_panel=ADVANCED,
        help="CLIP variant of extract-step and encoder-train-step (default: the highest-priority registered one, ViT-B/32).",
    ),
    seed: int = typer.Option(0, "--seed", rich_help_panel=ADVANCED, help="Seed of the random weights and inputs."),
    timeout: float | None = typer.Option(
        None, "--timeout", metavar="SECONDS", rich_help_panel=ADVANCED, help="Give up on a case after this long."
    ),
):
    """Time essencekit here: each case in its own process, full-size models with random weights.

    Cases: generator-forward (StyleGAN2 synthesis, batch 1), generator-fwd+bwd (forward and backward to W+, as
    extraction runs it, batch --batch), e4e-inversion (the ir_se-50 encoder at 256 px), extract-step (one
    optimisation step, 4 sources, 1 restart), transfer (inversion + synthesis + PNG write), encoder-train-step
    (one train-encoder step at batch 1, 5 sources) and encoder-extract (extract --method encoder, targets/s).
    Each is warmed up, then timed --repeats times: the table shows the median seconds, images per second and peak memory (peak
    device memory on a GPU, the process's peak RSS on the CPU, models included), under the machine it ran on.

    The JSON (every run's time, the machine, the settings) is saved to -o, or to a timestamped file here; --json
    prints it instead of the table. Progress goes to stderr. At 1024 px the whole suite takes roughly ten
    minutes on a 2-core CPU; --only and a smaller --size make a quick check. The per-area comparisons with the reference
    implementation are the scripts in benchmarks/ (see docs/performance.md).
    """
    from ..bench.report import save_json
    from ..bench.suite import check_options, default_output, render, run_suite

    cases = None if only is None else [c.strip() for c in only.split(",") if c.strip()]
    try:
        check_options(cases, repeats=repeats, size=size, batch=batch, images=images, max_channels=max_channels)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None
    if output is not None:
        _check_writable(output)
    elif not json_:
        _check_writable(Path.cwd() / "essencekit-bench.json")

    report = run_suite(
        backend=backend, cases=cases, repeats=repeats, size=size, batch=batch, images=images,
        max_channels=max_channels, clip=clip, seed=seed, timeout=timeout,
        progress=print_log,
    )
    if json_:
        print_json(report)
    else:
        render(report, out)
    path = output if output is not None else None if json_ else default_output(report)
    if path is not None:
        save_json(report, path)
        print_log(f"saved {path}")
    if any(row.get("error") for row in report["results"]):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    add_command(app, "bench", bench, EXIT_STATUSES)
