"""The sources an evaluation measures: photo folders and files, W+ latent files, or
``celebs`` (the 68 published celebrity latents), optionally cut to the first N faces."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import OptionError


def resolve_sources(sources) -> list:
    """The inputs as transfer takes them; ``"celebs"`` becomes the cached artifact's path."""
    items = [sources] if isinstance(sources, (str, os.PathLike)) else list(sources)
    if not items:
        raise OptionError("give the sources to measure on (a folder, a W+ latents file or 'celebs')", parameter="sources")
    resolved = []
    for item in items:
        if str(item) == "celebs" and not Path(str(item)).exists():
            from ..cache import resolve_artifact

            item = resolve_artifact("celebs")
        resolved.append(item)
    return resolved


def limit_sources(items: list, limit: int, generator, scratch: Path) -> list:
    """The first ``limit`` sources: whole photos in order, and latent files cut to the rows
    still needed (a cut file is written to ``scratch``). A photo counts as one source."""
    from ..inputs import discover
    from ..latents import read_latents

    kept: list = []
    left = limit
    for source in discover(items):
        if left <= 0:
            break
        if source.kind != "latents" or source.error:
            kept.append(source.path)
            left -= 1
            continue
        latents, _ = read_latents(source.path, generator.n_latent, generator.style_dim)
        if latents.shape[0] <= left:
            kept.append(source.path)
        else:
            cut = scratch / str(len(kept)) / f"{source.path.stem}.pt"  # the same name in the results
            cut.parent.mkdir(parents=True)
            torch.save(latents[:left].clone(), cut)
            kept.append(cut)
        left -= min(left, latents.shape[0])
    return kept
