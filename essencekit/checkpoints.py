"""Reading checkpoint files safely.

Every ``.pt``/``.pth`` file goes through :func:`load_checkpoint`, which never unpickles an
arbitrary object (``weights_only=True``) and always maps storages to the CPU first: the
published checkpoints carry CUDA-tagged storages that would otherwise fail to load on a
machine without a GPU. Models are moved to their device afterwards, by the backend.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from .errors import EssencekitError


def load_checkpoint(path: str | os.PathLike, *, what: str = "checkpoint") -> Any:
    """Load ``path`` with ``torch.load(weights_only=True)`` onto the CPU.

    Raises :class:`EssencekitError` with a one-line message for a missing, empty, truncated,
    non-PyTorch or code-carrying file; ``what`` names the expected content in that message.
    """
    path = Path(path)
    if not path.exists():
        raise EssencekitError(f"{what} not found: {path}")
    if path.is_dir():
        raise EssencekitError(f"{what} path is a folder, not a file: {path}")
    if path.stat().st_size == 0:
        raise EssencekitError(f"{what} is empty (0 bytes): {path}; download it again")
    if is_safetensors_file(path):
        return _load_safetensors(path, what)
    try:
        # an open file, not the path: torch picks its reader by the file's extension (a
        # ".safetensors" name goes to safetensors), and a renamed file must read as what it is
        with open(path, "rb") as handle:
            return torch.load(handle, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not _looks_like_torch_file(path):
            raise _not_torch(path, what) from None
        # weights_only refuses any global outside torch's allow-list: a hostile or
        # foreign pickle ends here, before a single object is built.
        raise EssencekitError(
            f"{path} is not a plain {what}: it holds objects that essencekit will not unpickle "
            f"({_refused_global(error)}); only tensors, numbers and strings are accepted"
        ) from None
    except PermissionError as error:
        raise EssencekitError(f"cannot read {what} {path}: {error.strerror or error}") from None
    except Exception as error:  # noqa: BLE001 - a foreign file derails the unpickler in many ways
        if not _looks_like_torch_file(path):
            raise _not_torch(path, what) from None
        first_line = (str(error).strip().splitlines() or ["unreadable"])[0]
        raise EssencekitError(
            f"cannot read {what} {path}: {first_line[:200]} (is the file complete? "
            "re-download it with `essencekit pull-weights`)"
        ) from None


def is_safetensors_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts as a safetensors file does: an 8-byte little-endian header
    length, then the JSON header's ``{``."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    if len(head) < 9:
        return False
    return 0 < int.from_bytes(head[:8], "little") < 100_000_000 and head[8:9] == b"{"


def _load_safetensors(path: Path, what: str) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as error:
        raise EssencekitError(f"cannot read {what} {path} (a safetensors file): {error}") from None


def _not_torch(path: Path, what: str) -> EssencekitError:
    article = "an" if what[:1] in "aeiou" else "a"
    return EssencekitError(
        f"{path} is not {article} {what}: it is not a PyTorch file (neither a torch.save zip archive nor a pickle)"
    )


def _looks_like_torch_file(path: Path) -> bool:
    """Whether ``path`` starts as ``torch.save`` output does: a zip archive, or (the legacy
    format) a pickle of protocol 2 or higher."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
    except OSError:
        return True  # unreadable for another reason: keep the original error
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _refused_global(error: Exception) -> str:
    """The line of torch's long weights_only message that names what was refused."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line or "unsupported" in line:
            return line.rstrip(".")[:200]
    return lines[-1][:200] if lines else "unsupported content"


def require_mapping(obj: Any, path: str | os.PathLike, what: str) -> dict:
    """Return ``obj`` if it is a dict, else raise a one-line error naming ``path``."""
    if not isinstance(obj, dict):
        raise EssencekitError(
            f"{path} is not a {what}: expected a dictionary of tensors, found {type(obj).__name__}"
        )
    return obj
