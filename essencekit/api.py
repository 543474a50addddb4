"""The model loaders of the Python API (re-exported as ``essencekit.load_*``)."""

from __future__ import annotations

import os

import torch

from .backends import Backend, resolve_backend
from .weights import resolve_weights  # a module global: tests substitute it

DEFAULT_GENERATOR = "stylegan2-ffhq"
DEFAULT_ENCODER = "e4e-ffhq"
DEFAULT_IDENTITY = "arcface-ir-se50"

DeviceLike = str | torch.device | Backend | None


def load_generator(path: str | os.PathLike | None = None, device: DeviceLike = None):
    """Load a StyleGAN2 generator checkpoint (rosinality format) onto a backend.

    ``path`` is a checkpoint file or an artifact name (default ``stylegan2-ffhq`` from the
    cache). ``device`` is a backend name, a ``torch.device``, a :class:`Backend` or ``None``
    for the automatic choice. Returns a frozen, eval-mode
    :class:`essencekit.models.stylegan2.Generator`.
    """
    from .models.stylegan2 import load_generator_checkpoint

    backend = resolve_backend(device)
    generator = load_generator_checkpoint(resolve_weights(path, DEFAULT_GENERATOR))
    return backend.prepare(generator)


def load_encoder(path: str | os.PathLike | None = None, device: DeviceLike = None):
    """Load an encoder checkpoint onto a backend: an e4e inversion checkpoint, or an essence
    encoder trained by ``essencekit train-encoder``.

    ``path`` is a checkpoint file or an artifact name (default ``e4e-ffhq``). An e4e
    checkpoint gives a frozen :class:`essencekit.models.e4e.E4E` with ``invert(images)``,
    ``latent_avg`` and ``generator``; an essence encoder (a run's ``best.pt``) gives an
    :class:`essencekit.essence_encoder.EssenceEncoder` whose ``directions(images)`` are the
    targets' essences. Either is read with ``weights_only=True``: a checkpoint cannot run code.
    """
    from .checkpoints import load_checkpoint
    from .essence_encoder import check_encoder_checkpoint, encoder_from_checkpoint, is_essence_encoder_checkpoint
    from .models.e4e import e4e_from_checkpoint

    backend = resolve_backend(device)
    resolved = resolve_weights(path, DEFAULT_ENCODER)
    loaded = load_checkpoint(resolved, what="encoder checkpoint")
    if is_essence_encoder_checkpoint(loaded):
        return backend.prepare(encoder_from_checkpoint(check_encoder_checkpoint(loaded, resolved), str(resolved)))
    return backend.prepare(e4e_from_checkpoint(loaded, resolved))


def load_identity_model(path: str | os.PathLike | None = None, device: DeviceLike = None):
    """Load the ArcFace IR-SE identity model (``model_ir_se50.pth``) onto a backend.

    ``path`` is a state-dict file or an artifact name (default ``arcface-ir-se50``). Returns a
    frozen, eval-mode :class:`essencekit.models.arcface.ArcFaceIRSE`: ``embed(images)`` maps
    aligned faces [B, 3, S, S] in [-1, 1] to unit embeddings [B, 512] through the evaluation's
    crop; identity similarity is the dot product of two embeddings.
    """
    from .models.arcface import load_identity_checkpoint

    backend = resolve_backend(device)
    model = load_identity_checkpoint(resolve_weights(path, DEFAULT_IDENTITY))
    return backend.prepare(model)


def load_clip(name: str | None = None, device: DeviceLike = None, **options):
    """Load a registered CLIP variant (``None``: the highest-priority one, ViT-B/32 among the
    built-ins); see :func:`essencekit.clip.load_clip` for ``options`` (``input_mode``,
    ``generator_size``, ``weights``, ``text``: also keep the text tower)."""
    from .clip import load_clip as _load_clip

    return _load_clip(name, device, **options)
