"""W+ latent files, the one home of reading, checking and writing them for every command.

``essencekit invert`` writes one safetensors file per face: the tensor ``w_plus``
[n_latent, style_dim] (float32, ``latent_avg`` included, ready for the generator) and string
metadata (``kind`` = ``essencekit-w-plus``, the source file and its sha256, the face index, the
crop quad and transform as JSON, aligner, encoder and its sha256, essencekit version). As
inputs (transfer, evaluate, extract's ``sources``), such files, ``.npy`` arrays (never
unpickled) and ``.pt`` files holding one tensor are accepted, of shape [M, n_latent, style_dim],
[n_latent, style_dim] or [M, style_dim] (a w repeated on every row), like the 68 published
celebrity latents.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .atomic import atomic_path
from .errors import EssencekitError

W_PLUS_KEY = "w_plus"
W_PLUS_KIND = "essencekit-w-plus"


def save_w_plus(path: str | os.PathLike, w_plus: Tensor, metadata: dict) -> Path:
    """Write one face's W+ [n_latent, style_dim] and its metadata (values JSON-encoded unless
    strings) as safetensors, atomically."""
    from safetensors.torch import save_file

    meta = {"kind": W_PLUS_KIND}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    tensor = w_plus.detach().to("cpu", torch.float32).reshape(w_plus.shape[-2:]).contiguous()
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file({W_PLUS_KEY: tensor}, str(tmp), metadata=meta)
    return path


def _read_safetensors(path: Path) -> tuple[Tensor, dict]:
    from safetensors import SafetensorError
    from safetensors.torch import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
            if W_PLUS_KEY in keys:
                key = W_PLUS_KEY
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise EssencekitError(
                    f"{path}: a latents file holds a '{W_PLUS_KEY}' tensor (or just one tensor); this one holds "
                    f"{', '.join(keys[:5]) or 'none'}"
                )
            return handle.get_tensor(key), dict(handle.metadata() or {})
    except (SafetensorError, OSError, ValueError) as error:
        raise EssencekitError(f"cannot read latents {path}: {error}") from None


def read_latents(path: str | os.PathLike, n_latent: int, style_dim: int) -> tuple[Tensor, dict]:
    """``(latents [M, n_latent, style_dim] float32, metadata)`` of a latent file; a file whose
    shape does not fit the generator is refused naming both shapes."""
    path = Path(path)
    if not path.is_file():
        raise EssencekitError(f"{path}: no such latents file")
    if path.stat().st_size == 0:
        raise EssencekitError(f"{path}: the file is empty (0 bytes)")
    if path.suffix.lower() == ".safetensors":
        tensor, metadata = _read_safetensors(path)
    else:
        tensor, metadata = load_latent_file(path), {}
    if tensor.dim() == 2 and tuple(tensor.shape) == (n_latent, style_dim):
        tensor = tensor[None]
    return check_latents(tensor, n_latent, style_dim, str(path)), metadata


def check_latents(latents: Tensor, n_latent: int, style_dim: int, where: str) -> Tensor:
    """``latents`` as float32 [P, n_latent, style_dim] (a [P, style_dim] w is repeated per row)."""
    latents = torch.as_tensor(latents).detach().cpu()
    if not latents.is_floating_point():
        raise EssencekitError(f"{where}: source latents must be floating point, found {latents.dtype}")
    if latents.dim() == 2 and latents.shape[1] == style_dim:
        latents = latents[:, None, :].expand(-1, n_latent, -1)
    if latents.dim() != 3 or tuple(latents.shape[1:]) != (n_latent, style_dim):
        raise EssencekitError(
            f"{where}: source latents of shape {list(latents.shape)} do not fit the generator, which needs "
            f"[count, {n_latent}, {style_dim}] W+ latents (or [count, {style_dim}] w)"
        )
    latents = latents.float().contiguous()
    if not torch.isfinite(latents).all():
        raise EssencekitError(f"{where}: source latents hold NaN or infinite values")
    return latents


def load_latent_file(path: Path) -> Tensor:
    """The tensor of a ``.npy`` (never unpickled) or ``.pt`` latents file."""
    if not path.is_file():
        raise EssencekitError(f"source latents file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            return torch.from_numpy(np.load(path, allow_pickle=False))
        except ValueError as error:
            raise EssencekitError(f"{path} is not a plain NumPy array of latents: {error}") from None
        except (OSError, EOFError) as error:
            raise EssencekitError(f"cannot read source latents {path}: {error}") from None
    from .checkpoints import load_checkpoint

    data = load_checkpoint(path, what="source latents file")
    if isinstance(data, dict):
        tensors = [v for v in data.values() if isinstance(v, Tensor)]
        if len(tensors) != 1:
            raise EssencekitError(
                f"{path} holds a dictionary with {len(tensors)} tensors; a latents file holds one "
                "[count, n_latent, style_dim] tensor"
            )
        data = tensors[0]
    if not isinstance(data, Tensor):
        raise EssencekitError(f"{path} is not a latents file: it holds a {type(data).__name__}, not a tensor")
    return data
