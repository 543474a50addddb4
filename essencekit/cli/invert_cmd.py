"""``essencekit invert``: photos to W+ latent files, one per face."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import typer
from rich.markup import escape

from .output import err
from .transfer_cmd import command_help, run_with_display, usage_errors


def invert(
    sources: list[str] = typer.Argument(..., metavar="SRC", help="Photos, folders or glob patterns."),
    output: Path = typer.Option(Path("essencekit-latents"), "-o", "--output", help="Output folder."),
    faces: Literal["largest", "all"] = typer.Option("largest", "--faces", help="Invert the largest face, or all."),
    no_align: bool = typer.Option(False, "--no-align", help="The inputs are FFHQ-aligned face crops: no detection."),
    recursive: bool = typer.Option(False, "--recursive", "-r", help="Look into sub-folders (mirrored in -o)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs."),
    skip_existing: bool = typer.Option(False, "--skip-existing", help="Keep existing outputs and do the rest."),
    aligner: str | None = typer.Option(
        None, "--aligner", help="Face aligner: dlib (default when installed), mediapipe."
    ),
    backend: str | None = typer.Option(None, "--backend", help="cpu, cuda, mps (default: the best available)."),
    batch_size: int | None = typer.Option(
        None, "--batch-size", min=1, help="Faces per encoder pass (default: by memory; 1 on the CPU)."
    ),
    encoder: str | None = typer.Option(
        None, "--encoder", metavar="PATH_OR_ARTIFACT", help="e4e checkpoint (default: e4e-ffhq)."
    ),
    max_pixels: int | None = typer.Option(
        None, "--max-pixels", metavar="N",
        help="Refuse images larger than N pixels, from their header, before decoding them (default: "
        "50000000, 50 megapixels; 0: no limit).",
    ),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not read or write the W+ cache."),
    json_: bool = typer.Option(False, "--json", help="Print one JSON line per output or failed input."),
):
    """Invert the faces in photos into W+ with e4e: one safetensors file per face.

    Each file holds the tensor w_plus (n_latent x style_dim) and metadata (source file and its
    sha256, face index, crop quad). `essencekit transfer` accepts these files as sources.
    """
    from ..images import DEFAULT_MAX_PIXELS
    from ..transfers.api import Transferrer

    def notify(message: str) -> None:
        err.print(f"[yellow]{escape(message)}[/yellow]", highlight=False)

    models = Transferrer(encoder=encoder, device=backend, aligner=aligner, notify=notify)
    run = usage_errors(lambda: models.invert(
        sources, output=output, faces=faces, align=not no_align, recursive=recursive, overwrite=overwrite,
        skip_existing=skip_existing, batch_size=batch_size,
        max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels, cache=not no_cache,
    ))
    run_with_display(run, "invert", "latent files", output, json_)



def register(app: typer.Typer) -> None:
    app.command("invert", help=command_help(invert.__doc__))(invert)
