"""``essencekit transfer``: apply essences to the faces in photos, in bulk, and write whole photos."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer

from .job import notes, process_group
from .options import (
    EACH_INPUT_EXIT_STATUSES,
    Aligner,
    Backend,
    BatchSize,
    Encoder,
    Faces,
    Generator,
    JsonLines,
    MaxPixels,
    NoAlign,
    NoCache,
    OutputFolder,
    Overwrite,
    Recursive,
    SkipExisting,
    add_command,
)
from .output import run_with_display


def transfer(
    inputs: list[str] = typer.Argument(
        ..., metavar="SRC",
        help="Photos, folders, glob patterns ('shots/*.jpg'), or W+ latent files from `essencekit invert` (and "
        ".npy/.pt latent arrays).",
    ),
    essence: list[str] = typer.Option(
        ..., "--essence", "-e", metavar="NAME_OR_PATH[@WEIGHT]",
        help="An essence file (.pt, .safetensors, TargetCLIP .npy) or a published essence name (joker, keanu, ...); "
        "repeat to add several up, @WEIGHT scales one.",
    ),
    output: OutputFolder = Path("essencekit-out"),
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
    faces: Faces = "largest",
    no_align: NoAlign = False,
    crops: bool = typer.Option(False, "--crops", help="Write the edited aligned crops instead of whole photos."),
    paste: Literal["difference", "edited"] = typer.Option(
        "difference", "--paste",
        help="Paste back what the edit changed (difference: the photo's own detail stays, strength 0 gives the "
        "photo back exactly) or the edited face image itself.",
    ),
    recursive: Recursive = False,
    format_: Literal["png", "jpg", "webp"] = typer.Option("png", "--format", help="Output format."),
    quality: int | None = typer.Option(None, "--quality", min=1, max=100, help="JPEG/WebP quality (default 95)."),
    overwrite: Overwrite = False,
    skip_existing: SkipExisting = False,
    grid: bool = typer.Option(
        False, "--grid", help="Also write a contact sheet per input: aligned crop, inversion, each strength."
    ),
    aligner: Aligner = None,
    backend: Backend = None,
    batch_size: BatchSize = None,
    encoder: Encoder = None,
    generator: Generator = None,
    max_pixels: MaxPixels = None,
    no_cache: NoCache = False,
    json_: JsonLines = False,
):
    """Apply essences to every face in photos and write the whole photos back, edited.

    Each face is found, aligned as FFHQ, inverted with e4e (cached, so another essence skips
    this), edited as w + s * d, synthesised and pasted back into the full-resolution photo.
    Outputs are named STEM_ESSENCE.EXT, with _face<i> after the stem for several --crops of one
    photo and _s<strength> at the end in a sweep (docs/transfer.md).
    """
    from ..images import DEFAULT_MAX_PIXELS
    from ..transfers.api import Transferrer

    with process_group(backend) as group:  # under torchrun: this rank's share of the photos
        models = Transferrer(encoder=encoder, generator=generator, aligner=aligner, notify=notes(group), group=group)
        run = models.transfer(
            inputs, essence, strength, output=output, layers=layers, faces=faces, align=not no_align, crops=crops,
            paste=paste, recursive=recursive, format=format_, quality=quality, overwrite=overwrite,
            skip_existing=skip_existing, grid=grid, batch_size=batch_size,
            max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels, cache=not no_cache,
        )
        run_with_display(run, "transfer", "files", output, json_)


def register(app: typer.Typer) -> None:
    add_command(app, "transfer", transfer, EACH_INPUT_EXIT_STATUSES)
