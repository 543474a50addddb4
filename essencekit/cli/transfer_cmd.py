"""``essencekit transfer``: apply essences to the faces in photos, in bulk, and write whole photos."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Literal

import typer
from rich.markup import escape

from .output import err, out, progress_enabled

EXIT_HELP = (
    "Exit status: 0 when every input succeeded; 1 when any input failed (each failure is reported and the "
    "run goes on with the others) or on an error; 2 on a usage error; 130 when interrupted (Ctrl-C: "
    "finished files stay, no partial file is left; rerun with --skip-existing to resume)."
)


class RunDisplay:
    """Progress on stderr (a Rich bar for a person at a terminal), failures as they happen, one
    JSON line per result with ``--json``, and the summary at the end."""

    def __init__(self, total: int, verb: str, json_lines: bool):
        self.total, self.verb, self.json_lines = total, verb, json_lines
        self.counts = {"written": 0, "skipped": 0, "failed": 0, "done": 0}
        self.failures: list[tuple[str, str]] = []
        self.inputs_done = 0
        self.faces = 0
        self.started = time.perf_counter()
        self.progress = None
        self.task = None

    def __enter__(self):
        if progress_enabled():
            from rich.progress import (
                BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn,
            )

            self.progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("images"),
                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                console=err, transient=False,
            )
            self.progress.__enter__()
            self.task = self.progress.add_task(self.verb, total=self.total, rate="")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def add(self, result) -> None:
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        if self.json_lines:
            sys.stdout.write(json.dumps(result.to_json()) + "\n")
            sys.stdout.flush()
        if result.status == "failed":
            self.failures.append((result.source, result.reason))
            err.print(f"[yellow]failed[/yellow] {escape(result.reason)}", highlight=False)
        for note in result.notes if result.last else ():
            err.print(f"[dim]{escape(result.source)}: skipped a face: {escape(note)}[/dim]", highlight=False)
        if result.last:
            self.inputs_done += 1
            self.faces += result.faces if result.status != "failed" else 0
            if self.progress is not None:
                elapsed = max(time.perf_counter() - self.started, 1e-9)
                self.progress.update(self.task, completed=self.inputs_done, rate=f"{self.faces / elapsed:.2f} faces/s")

    def summary(self, output: Path | None, what: str, interrupted: bool = False) -> None:
        from rich.table import Table

        console = err if self.json_lines else out
        seconds = time.perf_counter() - self.started
        line = (
            f"{self.inputs_done} of {self.total} inputs, {self.faces} faces in {seconds:.1f} s: "
            f"{self.counts['written']} {what} written" + (f" to {output}" if output is not None else "")
            + f", {self.counts['skipped']} skipped (already there), {self.counts['failed']} failed"
        )
        console.print(escape(line), highlight=False)
        if self.failures:
            table = Table(title="Failed inputs", title_justify="left")
            table.add_column("input", overflow="fold")
            table.add_column("reason", overflow="fold")
            for source, reason in self.failures:
                table.add_row(escape(source), escape(reason.removeprefix(f"{source}: ")))
            console.print(table)
        if interrupted:
            err.print("[yellow]Interrupted: the files written so far are complete; rerun with --skip-existing to "
                      "resume.[/yellow]")


def run_with_display(run, verb: str, what: str, output: Path | None, json_lines: bool) -> None:
    """Consume ``run`` under a :class:`RunDisplay`; exits 1 when an input failed, 130 on Ctrl-C."""
    display = RunDisplay(run.total, verb, json_lines)
    try:
        with display:
            for result in run:
                display.add(result)
    except KeyboardInterrupt:
        display.summary(output, what, interrupted=True)
        raise typer.Exit(130) from None
    display.summary(output, what)
    if display.failures:
        raise typer.Exit(1)


def command_help(doc: str, exits: str = EXIT_HELP) -> str:
    """A docstring as Typer's help: paragraphs re-flowed (Rich keeps single line breaks), then
    the exit statuses."""
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in [*paragraphs, exits])


def usage_errors(call):
    """Run ``call()``, turning an option that cannot work into a usage error (exit 2)."""
    from ..errors import OptionError

    try:
        return call()
    except OptionError as error:
        raise typer.BadParameter(str(error)) from None


def transfer(
    sources: list[str] = typer.Argument(
        ..., metavar="SRC",
        help="Photos, folders, glob patterns ('shots/*.jpg'), or W+ latent files from `essencekit invert` (and "
        ".npy/.pt latent arrays).",
    ),
    essence: list[str] = typer.Option(
        ..., "--essence", "-e", metavar="NAME_OR_PATH[@WEIGHT]",
        help="An essence file (.pt, .safetensors, TargetCLIP .npy) or a published essence name (joker, keanu, ...); "
        "repeat to add several up, @WEIGHT scales one.",
    ),
    output: Path = typer.Option(Path("essencekit-out"), "-o", "--output", help="Output folder."),
    strength: str | None = typer.Option(
        None, "--strength", "-s", metavar="S[,S...]",
        help="Edit strength, or a comma list for a sweep (0.5,1,1.5). Default: each essence's recommended strength "
        "(1.0 for the published ones, whose authors advise 0.5 to 1.3).",
    ),
    layers: str | None = typer.Option(
        None, "--layers", metavar="coarse|medium|fine|ROWS",
        help="Edit only these W+ rows: coarse (4-8 px), medium (16-32 px), fine (64 px and up), 0-7, 4,5,6, "
        "or a mix (coarse,10-13). Default: all.",
    ),
    faces: Literal["largest", "all"] = typer.Option(
        "largest", "--faces", help="Edit the largest face of each photo, or all of them (in one output)."
    ),
    no_align: bool = typer.Option(False, "--no-align", help="The inputs are FFHQ-aligned face crops: no detection."),
    crops: bool = typer.Option(False, "--crops", help="Write the edited aligned crops instead of whole photos."),
    paste: Literal["difference", "edited"] = typer.Option(
        "difference", "--paste",
        help="Paste back what the edit changed (difference: the photo's own detail stays, strength 0 gives the "
        "photo back exactly) or the edited face image itself.",
    ),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders (mirrored in -o)."),
    format_: Literal["png", "jpg", "webp"] = typer.Option("png", "--format", help="Output format."),
    quality: int | None = typer.Option(None, "--quality", min=1, max=100, help="JPEG/WebP quality (default 95)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(
        False, "--skip-existing", help="Keep existing outputs and do the rest (resumes an interrupted run)."
    ),
    grid: bool = typer.Option(
        False, "--grid", help="Also write a contact sheet per input: aligned crop, inversion, each strength."
    ),
    aligner: str | None = typer.Option(
        None, "--aligner", help="Face aligner: dlib (default when installed), mediapipe."
    ),
    backend: str | None = typer.Option(None, "--backend", help="cpu, cuda, mps (default: the best available)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Faces per model pass (default: by memory; 1 on the CPU)."
    ),
    encoder: str | None = typer.Option(
        None, "--encoder", metavar="PATH_OR_ARTIFACT", help="e4e checkpoint that inverts the faces (default: e4e-ffhq)."
    ),
    generator: str | None = typer.Option(
        None, "--generator", metavar="PATH_OR_ARTIFACT",
        help="StyleGAN2 checkpoint that synthesises the edits. Default: the encoder's embedded decoder, the "
        "generator e4e was trained to invert into.",
    ),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", metavar="N",
        help="Refuse images larger than N pixels, from their header, before decoding them (default: "
        "50000000, 50 megapixels: 8K frames and 50 MP phone photos fit; 0: no limit).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the W+ cache."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON line per output or failed input."),
):
    """Apply essences to every face in photos and write the whole photos back, edited.

    Each face is found, aligned as FFHQ, inverted with e4e (cached, so another essence skips
    this), edited as w + s * d, synthesised and pasted back into the full-resolution photo.
    Outputs are named STEM_ESSENCE.EXT, with _face<i> after the stem for several --crops of one
    photo and _s<strength> at the end in a sweep (docs/transfer.md).
    """
    from ..images import DEFAULT_MAX_PIXELS
    from ..transfers.api import Transferrer

    def notify(message: str) -> None:
        err.print(f"[yellow]{escape(message)}[/yellow]", highlight=False)

    models = Transferrer(encoder=encoder, generator=generator, device=backend, aligner=aligner, notify=notify)
    run = usage_errors(lambda: models.transfer(
        sources, essence, strength, output=output, layers=layers, faces=faces, align=not no_align, crops=crops,
        paste=paste, recursive=recursive, format=format_, quality=quality, overwrite=overwrite,
        skip_existing=skip_existing, grid=grid, batch_size=batch_size,
        max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels, cache=not no_cache,
    ))
    run_with_display(run, "transfer", "files", output, json_)



def register(app: typer.Typer) -> None:
    app.command("transfer", help=command_help(transfer.__doc__))(transfer)
