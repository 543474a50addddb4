"""The ``--preview`` contact sheet: each source, and it edited at a few strengths."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ..atomic import atomic_path
from ..images import SHEET_TILE, to_pil


def strengths_for(recommended: float) -> list[float]:
    return [0.5, 1.0, float(recommended)]


@torch.no_grad()
def render_preview(
    generator, sources: Tensor, direction: Tensor, recommended: float, path: str | os.PathLike, *,
    tile: int = SHEET_TILE, batch_size: int | None = None, autocast=None,
) -> Path:
    """Write a PNG grid, one row per source: the source, then strengths 0.5, 1.0 and
    ``recommended``, with a label row on top. Rendered at the generator's full size and
    scaled to ``tile`` px; written atomically."""
    import contextlib

    from ..images import contact_sheet

    autocast = autocast or contextlib.nullcontext
    device = sources.device
    strengths = strengths_for(recommended)
    direction = direction.to(device, torch.float32)
    rows = []
    for source in sources:
        latents = torch.stack([source] + [source + s * direction for s in strengths])
        images = []
        step = batch_size or latents.shape[0]
        for start in range(0, latents.shape[0], step):
            with autocast():
                images.append(generator.synthesis(latents[start : start + step], noise="const").float())
        rows.append([to_pil(image) for image in torch.cat(images)])
    labels = ["source", f"strength {strengths[0]:.2f}", f"strength {strengths[1]:.2f}",
              f"recommended {strengths[2]:.2f}"]
    sheet = contact_sheet(labels, rows, tile)
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def preview_on_sampled_sources(essence, path: str | os.PathLike, *, generator=None, device=None, count: int = 4) -> Path:
    """The contact sheet of ``essence`` on ``count`` sources sampled from ``generator`` (default
    ``stylegan2-ffhq``; seed 0, truncation 0.7): for an essence made without sources of its own
    (``--method encoder``)."""
    from ..api import load_generator
    from ..backends import resolve_backend
    from .sources import sample_latents

    backend = resolve_backend(device)
    model = load_generator(generator, backend)
    sources = sample_latents(model, count, 0, "preview").to(backend.device)
    return render_preview(model, sources, essence.direction, essence.recommended_strength, path,
                          autocast=backend.autocast)
