"""Source latents (the faces an essence is optimised on) and initial directions.

A run uses N training sources and M held-out sources, drawn from one pool:

* ``None``: sampled from the mapping network with truncation 0.7 (the published recipe),
  training and held-out from two separate random streams of the seed;
* ``"celebs"``: the 68 celebrity W+ latents of pull-weights' ``celebs`` artifact;
* a W+ latents file (``.npy``, or a ``.pt`` holding one tensor) of shape [P, n_latent,
  style_dim] or [P, style_dim];
* a folder of face photos, each aligned and inverted with e4e;
* a tensor of latents (Python API).

From a file, a folder or the celebrities, the first N latents (in file order; photos sorted by
name) are the training sources and the next M the held-out ones.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..cache import sha256_file
from ..errors import EssencekitError
from ..latents import check_latents, load_latent_file
from .settings import TRUNCATION

Inverter = Callable[[object], Tensor]  # PIL image -> W+ [n_latent, style_dim]


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one use of the run's seed (sources, restart k, ...).

    Every random draw of a run has its own stream, so adding restarts or held-out sources
    never changes what the others get.
    """
    digest = hashlib.sha256(f"essencekit:{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


@torch.no_grad()
def sample_latents(generator, count: int, seed: int, purpose: str, truncation: float = TRUNCATION) -> Tensor:
    """``count`` W+ latents [count, n_latent, style_dim] (every row the same w) from
    ``mapping(z, truncation)``, z drawn on the CPU from ``derive_seed(seed, purpose-i)``."""
    if count == 0:
        return torch.zeros(0, generator.n_latent, generator.style_dim)
    streams = [torch.Generator().manual_seed(derive_seed(seed, f"{purpose}-{i}")) for i in range(count)]
    z = torch.cat([torch.randn(1, generator.style_dim, generator=stream) for stream in streams])
    device = generator.latent_avg.device
    w = generator.mapping(z.to(device), truncation=truncation).float().cpu()
    return w[:, None, :].expand(-1, generator.n_latent, -1).contiguous()


def random_directions(generator, restarts: range, seed: int, truncation: float = TRUNCATION) -> Tensor:
    """The reference's random start for each restart index: a truncated random latent
    [len(restarts), n_latent, style_dim], restart k's from its own stream."""
    if not restarts:
        return torch.zeros(0, generator.n_latent, generator.style_dim)
    return torch.cat([sample_latents(generator, 1, seed, f"init-{k}", truncation) for k in restarts])


def invert_folder(folder: Path, inverter: Inverter, needed: int, notify: Callable[[str], None]) -> Tensor:
    """W+ latents of the face photos in ``folder`` (sorted by name), until ``needed`` are found."""
    from ..images import photo_suffixes, read_image

    suffixes = photo_suffixes()  # the formats transfer reads, HEIC included where pillow-heif is
    photos = sorted(p for p in folder.iterdir() if p.suffix.lower() in suffixes and p.is_file())
    if not photos:
        raise EssencekitError(f"no photos (.jpg, .png, .webp, .heic, ...) in the sources folder {folder}")
    latents, skipped = [], []
    for photo in photos:
        if len(latents) == needed:
            break
        try:
            image = read_image(photo)
        except EssencekitError:
            skipped.append(f"{photo.name} (unreadable)")
            continue
        try:
            latent = inverter(image).detach().float().cpu()
            latents.append(latent.reshape(1, *latent.shape[-2:]))
        except EssencekitError as error:
            if "no face" not in str(error).lower():
                raise
            skipped.append(f"{photo.name} (no face)")
    if skipped:
        notify(f"sources: skipped {len(skipped)} photo(s) in {folder}: {', '.join(skipped[:5])}"
               + (" ..." if len(skipped) > 5 else ""))
    if not latents:
        raise EssencekitError(f"no face could be inverted from the photos in {folder}")
    return torch.cat(latents)


@dataclass
class SourceSet:
    """Training and held-out source latents, and what they are for the essence's metadata."""

    train: Tensor  # [N, n_latent, style_dim]
    held_out: Tensor  # [M, n_latent, style_dim]
    kind: str  # "sampled", "celebs", "file", "folder", "tensor"
    details: dict = field(default_factory=dict)


def resolve_sources(
    spec,
    generator,
    *,
    num_sources: int,
    held_out: int,
    seed: int,
    truncation: float = TRUNCATION,
    inverter_factory: Callable[[], Inverter] | None = None,
    notify: Callable[[str], None] = lambda message: None,
) -> SourceSet:
    """The :class:`SourceSet` of ``spec`` (see the module docstring) for ``generator``."""
    n_latent, style_dim = generator.n_latent, generator.style_dim
    needed = num_sources + held_out
    if spec is None or (isinstance(spec, str) and spec == "sampled"):
        return SourceSet(
            train=sample_latents(generator, num_sources, seed, "source", truncation),
            held_out=sample_latents(generator, held_out, seed, "held-out", truncation),
            kind="sampled",
            details={"truncation": truncation, "seed": seed},
        )
    if isinstance(spec, Tensor):
        pool = check_latents(spec, n_latent, style_dim, "source latents")
        kind, details = "tensor", {}
    else:
        path = Path(os.fspath(spec))
        if str(spec) == "celebs" and not path.exists():
            from ..cache import resolve_artifact

            path = resolve_artifact("celebs")
            kind, details = "celebs", {"artifact": "celebs", "sha256": sha256_file(path)}
            pool = check_latents(load_latent_file(path), n_latent, style_dim, str(path))
        elif path.is_dir():
            if inverter_factory is None:
                raise EssencekitError(f"sources folder {path}: inverting photos needs an e4e encoder")
            pool = check_latents(
                invert_folder(path, inverter_factory(), needed, notify), n_latent, style_dim, str(path)
            )
            kind, details = "folder", {"folder": path.name}
        elif path.exists():
            pool = check_latents(load_latent_file(path), n_latent, style_dim, str(path))
            kind, details = "file", {"file": path.name, "sha256": sha256_file(path)}
        else:
            raise EssencekitError(
                f"sources {spec}: no such file or folder (give a W+ latents file, a folder of face photos, "
                "or 'celebs')"
            )
    if pool.shape[0] < needed:
        raise EssencekitError(
            f"the sources ({kind}{': ' + str(spec) if not isinstance(spec, Tensor) else ''}) provide "
            f"{pool.shape[0]} latents, but num_sources {num_sources} and held_out {held_out} need {needed}; "
            "lower them or give more sources"
        )
    details["count"] = int(pool.shape[0])
    return SourceSet(
        train=pool[:num_sources].clone(), held_out=pool[num_sources:needed].clone(), kind=kind, details=details
    )
