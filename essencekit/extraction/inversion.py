"""Inverting face photos to W+ with e4e: the ``inversion`` start and ``--sources DIR``.

Face detection and FFHQ alignment come from :mod:`essencekit.faces`, imported only when a
photo is inverted, so that extraction from sampled sources and random starts needs neither an
aligner nor e4e weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..errors import EssencekitError


def face_inverter(
    load_e4e: Callable[[], object], generator, *, aligner: str | None = None
) -> Callable[[object], Tensor]:
    """A function ``PIL image -> W+ [n_latent, style_dim]`` (CPU float32) of the image's
    largest face. ``load_e4e`` is called on first use (the e4e checkpoint is large).

    Raises :class:`EssencekitError` when no aligner is installed, when the photo has no face
    ("no face" in the message) or when e4e does not fit the generator.
    """
    state: dict = {}

    def invert(image) -> Tensor:
        try:
            from ..faces import align_faces
        except ImportError as error:
            raise EssencekitError(
                f"face alignment is not available in this installation ({error}); install an aligner "
                "(see `essencekit doctor`)"
            ) from None
        faces = align_faces(image, aligner=aligner, which="largest")
        if not faces:
            raise EssencekitError("no face found in the photo")
        if "e4e" not in state:
            e4e = load_e4e()
            if (e4e.n_latent, e4e.style_dim) != (generator.n_latent, generator.style_dim):
                raise EssencekitError(
                    f"the e4e encoder makes [{e4e.n_latent}, {e4e.style_dim}] latents but the generator needs "
                    f"[{generator.n_latent}, {generator.style_dim}]: use the e4e checkpoint of this generator "
                    "(encoder)"
                )
            state["e4e"] = e4e
        e4e = state["e4e"]
        crop = faces[0].crop_tensor(size=e4e.input_size)
        if crop.dim() == 3:
            crop = crop.unsqueeze(0)
        with torch.no_grad():
            return e4e.invert(crop.to(e4e.latent_avg.device, e4e.latent_avg.dtype))[0].float().cpu()

    return invert
