"""``essencekit evaluate``: how well essences transfer, measured as the TargetCLIP paper does."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.markup import escape

from ..errors import OptionError
from .job import notes, process_group
from .options import (
    Aligner,
    Backend,
    BatchSize,
    ClipInput,
    Encoder,
    Generator,
    Json,
    NoAlign,
    add_command,
    exit_statuses,
)
from .output import err, out, print_json, print_log, progress_enabled

EXIT_STATUSES = exit_statuses(
    "when the measures were taken (sources that could not be used are listed, and left out of the figures)",
    "on an error (missing weights, unreadable essence or target, no usable source)",
    "nothing is written",
)
JUDGES_HELP = "Comma list of CLIP variants that judge target similarity and consistency."


def _clip_weights(pairs: list[str]) -> dict[str, str]:
    weights = {}
    for pair in pairs:
        name, sep, path = pair.partition("=")
        if not sep or not name or not path:
            raise OptionError(f"give NAME=PATH (ViT-B/32=vit.safetensors), got {pair!r}", parameter="clip_weights")
        weights[name] = path
    return weights


def print_table(evaluation) -> None:
    from rich.table import Table

    table = Table(title="essencekit evaluate: mean ± std over "
                  f"{len(evaluation.sources)} source(s)", title_justify="left")
    table.add_column("essence")
    table.add_column("strength", justify="right")
    table.add_column("identity ↑", justify="right")
    table.add_column("identity leak ↓", justify="right")
    for judge in evaluation.judges:
        table.add_column(f"target sim. {judge} ↑", justify="right")
    fid = evaluation.fid is not None
    if fid:
        table.add_column(f"FID ↓ ({evaluation.fid['real_images']} real)", justify="right")
    for judge in evaluation.judges:
        table.add_column(f"consistency {judge} ↑", justify="right")
    for row in evaluation.rows:
        table.add_row(
            escape(row.essence), f"{row.strength:g}", row.identity.format(), row.identity_leak.format(),
            *[row.target_similarity[j].format() for j in evaluation.judges],
            *([("n/a" if row.fid is None else row.fid.format())] if fid else []),
            *["n/a" if row.consistency[j] is None else f"{row.consistency[j]:.3f}" for j in evaluation.judges],
        )
    if out.is_terminal:
        out.print(table)
    else:
        # piped output has no width to fit: keep each row on one line for the reader of the file
        from rich.console import Console

        Console(file=sys.stdout, width=240, soft_wrap=True).print(table)


def evaluate(
    essences: list[str] = typer.Option(
        ..., "--essence", "-e", metavar="NAME_OR_PATH",
        help="An essence file or published essence name; repeat for several, each paired with a --target.",
    ),
    targets: list[Path] = typer.Option(
        ..., "--target", "-t", metavar="IMAGE", help="The target image of each --essence, in the same order."
    ),
    sources: list[str] = typer.Option(
        ["celebs"], "--sources", metavar="DIR|LATENTS|celebs",
        help="Faces to edit: photo folders or files, W+ latent files (essencekit invert), or celebs (the 68 "
        "published celebrity latents). Repeatable.",
    ),
    strengths: str | None = typer.Option(
        None, "--strength", "-s", metavar="S[,S...]",
        help="Strengths to measure (strength 0, the unedited sources, is always measured). Default: 0.5, 1 and "
        "1.5 times each essence's recommended strength.",
    ),
    max_sources: int | None = typer.Option(
        None, "--max-sources", metavar="N", help="Measure only the first N faces (quicker; default: all)."
    ),
    identity_model: str | None = typer.Option(
        None, "--identity-model", metavar="PATH_OR_NAME", help="ArcFace IR-SE50 weights (default: arcface-ir-se50)."
    ),
    clip: str = typer.Option("ViT-B/32,RN50", "--clip", metavar="NAMES", help=JUDGES_HELP),
    clip_weights: list[str] = typer.Option(
        [], "--clip-weights", metavar="NAME=PATH", help="Weights file of a judge not in the cache. Repeatable."
    ),
    clip_input: ClipInput = "raw",
    report: Path | None = typer.Option(
        None, "--report", metavar="FILE.html",
        help="Also write an HTML report: the table, the identity / target-similarity plot over strength, and an "
        "image grid.",
    ),
    grid_sources: int = typer.Option(4, "--grid-sources", min=0, help="Sources shown in the report's grid."),
    fid: Path | None = typer.Option(
        None, "--fid", metavar="REAL_DIR",
        help="Also measure the FID between each strength's edits and the real face images in REAL_DIR (the paper: "
        "7,000 FFHQ images). Needs the inception-v3-fid weights (essencekit pull-weights inception-v3-fid).",
    ),
    fid_weights: str | None = typer.Option(
        None, "--fid-weights", metavar="PATH_OR_NAME", help="FID Inception weights (default: inception-v3-fid)."
    ),
    no_align: NoAlign = False,
    no_align_target: bool = typer.Option(
        False, "--no-align-target", help="Measure the identity leak on the target's centre square, not its face."
    ),
    aligner: Aligner = None,
    backend: Backend = None,
    batch_size: BatchSize = None,
    encoder: Encoder = None,
    generator: Generator = None,
    no_cache: bool = typer.Option(
        False, "--no-cache", help="Do not read or write the W+ cache nor the FID feature cache."
    ),
    json_: Json = False,
):
    """Measure essences the way the TargetCLIP paper does, over strengths.

    For each essence and strength: identity (ArcFace cosine between each source and its edit),
    identity leak (ArcFace cosine between the edit and the target's face), target similarity
    (CLIP cosine between the edit and the target, for each --clip judge: the variant the essence
    was made with, and an independent one) and consistency (mean pairwise cosine of the
    CLIP-space changes across sources). Pick the strength where the target similarity stops
    rising faster than identity falls: --report draws that trade-off (docs/evaluate.md).
    """
    from ..evaluation.api import Evaluator
    from ..evaluation.report import write_report

    if report is not None and report.suffix.lower() not in (".html", ".htm"):
        raise OptionError(f"the report is an .html file, got {report}", parameter="report")
    judges = [name.strip() for name in clip.split(",") if name.strip()]
    with process_group(backend) as group:  # under torchrun: this rank's share of the sources
        evaluator = Evaluator(
            encoder=encoder, generator=generator, aligner=aligner, identity_model=identity_model, judges=judges,
            clip_weights=_clip_weights(clip_weights), clip_input=clip_input, notify=notes(group), group=group,
            fid_weights=fid_weights,
        )
        options = dict(align=not no_align, align_target=not no_align_target, batch_size=batch_size,
                       cache=not no_cache, grid_sources=grid_sources if report is not None else 0,
                       max_sources=max_sources, fid=fid)
        evaluation = _with_progress(evaluator, (essences, targets, sources, strengths), options, group.is_main)
    if not group.is_main:  # rank 0 prints the job's evaluation
        return
    for failure in evaluation.failures:
        err.print(f"[red]skipped[/red] {escape(failure['source'])}: {escape(failure['reason'])}", highlight=False)
    if json_:
        print_json(evaluation.to_json())
    else:
        print_table(evaluation)
    if report is not None:
        write_report(evaluation, report)
        print_log(f"report: {report}")


def _with_progress(evaluator, args: tuple, options: dict, shown: bool):
    """``evaluator.evaluate(*args, **options)`` under a spinner counting rendered images and,
    with --fid, a bar over the real images (read from the feature cache or measured), when
    ``shown`` and a person watches."""
    if progress_enabled(not shown):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=err) as bar:
            tasks: dict = {}  # each shown from its first image on: the real images come first

            def advance(name: str, n: int, total: int | None = None) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.advance(tasks[name], n)

            return evaluator.evaluate(*args, progress=lambda n: advance("rendering and measuring", n),
                                      real_progress=lambda n, total: advance("FID real images", n, total), **options)
    return evaluator.evaluate(*args, **options)


def register(app: typer.Typer) -> None:
    add_command(app, "evaluate", evaluate, EXIT_STATUSES)
