"""``essencekit invert``: photos to W+ latent files, one per face."""

from __future__ import annotations

from pathlib import Path

import typer

from .job import notes, process_group
from .options import (
    EACH_INPUT_EXIT_STATUSES,
    Aligner,
    Backend,
    BatchSize,
    Encoder,
    Faces,
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


def invert(
    inputs: list[str] = typer.Argument(..., metavar="SRC", help="Photos, folders or glob patterns."),
    output: OutputFolder = Path("essencekit-latents"),
    faces: Faces = "largest",
    no_align: NoAlign = False,
    recursive: Recursive = False,
    overwrite: Overwrite = False,
    skip_existing: SkipExisting = False,
    aligner: Aligner = None,
    backend: Backend = None,
    batch_size: BatchSize = None,
    encoder: Encoder = None,
    max_pixels: MaxPixels = None,
    no_cache: NoCache = False,
    json_: JsonLines = False,
):
    """Invert the faces in photos into W+ with e4e: one safetensors file per face.

    Each file holds the tensor w_plus (n_latent x style_dim) and metadata (source file and its
    sha256, face index, crop quad). `essencekit transfer` accepts these files as sources.
    """
    from ..images import DEFAULT_MAX_PIXELS
    from ..transfers.api import Transferrer

    with process_group(backend) as group:  # under torchrun: this rank's share of the photos
        models = Transferrer(encoder=encoder, aligner=aligner, notify=notes(group), group=group)
        run = models.invert(
            inputs, output=output, faces=faces, align=not no_align, recursive=recursive, overwrite=overwrite,
            skip_existing=skip_existing, batch_size=batch_size,
            max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels, cache=not no_cache,
        )
        run_with_display(run, "invert", "latent files", output, json_)


def register(app: typer.Typer) -> None:
    add_command(app, "invert", invert, EACH_INPUT_EXIT_STATUSES)
