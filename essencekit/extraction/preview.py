"""The ``--preview`` contact sheet: each source, and it edited at a few strengths."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor

from ..atomic import atomic_path
from ..images import SHEET_TILE


def to_pil(image: Tensor):
    """A [3, H, W] image in [-1, 1] as an 8-bit RGB PIL image."""
    from PIL import Image

    pixels = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), mode="RGB")


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
