"""One-time conversions ``pull-weights`` applies to a downloaded file after its checksum holds,
so that no later run unpickles anything:

* ``clip-torchscript``: OpenAI's CLIP TorchScript archive -> ``.safetensors`` in open_clip's
  layout (``torch.jit.load(...).state_dict()`` without ``input_resolution``,
  ``context_length`` and ``vocab_size``; dtypes as published).
* ``essence-npy``: a published TargetCLIP direction (``(1, 18, 512)`` float32 ``.npy``, read
  with ``allow_pickle=False``) -> an essencekit essence ``.pt``.
* ``safe-checkpoint``: a PyTorch checkpoint that ``torch.load(weights_only=True)`` refuses as
  published. It is read with torch's restricted (weights-only) unpickler plus an allow-list of
  exactly the types such checkpoints carry (``argparse.Namespace``, NumPy scalars, dtypes and
  numeric arrays); anything else is refused before a single object is built. The result is
  saved with plain containers (the ``Namespace`` becomes a ``dict``, NumPy values become
  Python numbers or tensors) so it loads with ``weights_only=True``. A checkpoint that already
  loads that way is used as published, with no copy.
* ``open-clip-safetensors``: nothing to convert; the file is checked instead
  (:func:`check_download`, before an unpinned file's first download is pinned): a well-formed
  safetensors file (a JSON header and raw tensor bytes, so no pickle can hide in it) whose keys
  look like an open_clip CLIP state dict (``visual.*``, plus the shapes the artifact lists in
  ``extra["expect_shapes"]``). A web page, a Git LFS pointer or another model is refused.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pickle
import warnings
import zipfile
from pathlib import Path
from typing import Any

from .atomic import atomic_path
from .errors import EssencekitError, first_line
from .weights import WeightArtifact

CLIP_DROPPED_KEYS = ("input_resolution", "context_length", "vocab_size")


# --------------------------------------------------------------------------- CLIP


def clip_torchscript_to_safetensors(source: Path, target: Path, *, metadata: dict[str, str] | None = None) -> Path:
    """Write OpenAI's TorchScript CLIP ``source`` as safetensors ``target`` (open_clip keys)."""
    import torch
    from safetensors.torch import save_file

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.load(str(source), map_location="cpu")
    except Exception as error:  # noqa: BLE001 - any failure here is "not a TorchScript CLIP"
        raise EssencekitError(
            f"{source} passed its checksum but is not a readable TorchScript archive ({first_line(error)}); "
            "report this, or use CLIP weights in open_clip's safetensors layout instead"
        ) from None
    state = module.state_dict()
    for key in CLIP_DROPPED_KEYS:
        state.pop(key, None)
    if not any(key.startswith("visual.") for key in state):
        raise EssencekitError(f"{source} is a TorchScript archive but not a CLIP model (no 'visual.*' weights)")
    # clone: safetensors refuses tensors that share storage, and TorchScript may share
    tensors = {key: value.detach().to("cpu").contiguous().clone() for key, value in state.items()}
    del module, state
    meta = {"format": "pt", "layout": "open_clip", "converted_by": "essencekit pull-weights"}
    meta.update(metadata or {})
    with atomic_path(target) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return target


# --------------------------------------------------------------------------- essences


def essence_npy_to_pt(source: Path, target: Path, *, name: str, metadata: dict[str, str] | None = None,
                      shape: tuple[int, ...] | None = None) -> Path:
    """Turn a published TargetCLIP ``.npy`` into an essencekit essence file ``target``."""
    import numpy as np

    from .essence import Essence

    if shape is not None:
        try:
            array = np.load(source, allow_pickle=False, mmap_mode="r")
        except (ValueError, OSError, EOFError) as error:
            raise EssencekitError(f"{source} is not a plain NumPy array file ({first_line(error)})") from None
        if tuple(array.shape) != tuple(shape) or array.dtype != np.float32:
            raise EssencekitError(
                f"{source} is not the published essence: {array.dtype} {tuple(array.shape)}, expected float32 {tuple(shape)}"
            )
        del array
    essence = Essence.from_npy(source, name=name)
    essence.metadata.update({k: str(v) for k, v in (metadata or {}).items()})
    essence.save(target)
    return target


# --------------------------------------------------------------------------- pickled checkpoints


def _safe_globals() -> list:
    """The allow-list: exactly the non-tensor types found in published research checkpoints."""
    import numpy as np

    items: list = [(argparse.Namespace, "argparse.Namespace")]
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    reconstruct = core.multiarray._reconstruct
    for prefix in ("numpy.core", "numpy._core"):  # NumPy 1 and 2 pickle different paths
        items.append((scalar, f"{prefix}.multiarray.scalar"))
        items.append((reconstruct, f"{prefix}.multiarray._reconstruct"))
    items.append((np.ndarray, "numpy.ndarray"))
    items.append((np.dtype, "numpy.dtype"))
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:
        for name in ("Float16DType", "Float32DType", "Float64DType", "Int8DType", "Int16DType",
                     "Int32DType", "Int64DType", "UInt8DType", "UInt16DType", "UInt32DType",
                     "UInt64DType", "BoolDType"):
            cls = getattr(dtypes, name, None)
            if cls is not None:
                items.append((cls, f"numpy.dtypes.{name}"))
    return items


def allowed_global_names() -> set[str]:
    return {name for _, name in _safe_globals()}


def _plain(obj: Any) -> Any:
    """Replace the allow-listed Python objects with plain containers ``weights_only`` accepts."""
    import numpy as np
    import torch

    if isinstance(obj, argparse.Namespace):
        return {key: _plain(value) for key, value in vars(obj).items()}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        if obj.dtype.kind not in "biuf":
            raise EssencekitError(f"a checkpoint array has dtype {obj.dtype}; only numeric arrays are converted")
        return torch.from_numpy(np.array(obj, copy=True))
    if isinstance(obj, dict):
        return type(obj)((key, _plain(value)) for key, value in obj.items()) if type(obj) is not dict \
            else {key: _plain(value) for key, value in obj.items()}
    if isinstance(obj, list):
        return [_plain(value) for value in obj]
    if isinstance(obj, tuple):
        return tuple(_plain(value) for value in obj)
    return obj


def unsafe_globals(source: Path) -> list[str] | None:
    """The globals ``weights_only`` would refuse in ``source``, or ``None`` if that cannot be
    told without loading (a legacy, non-zip checkpoint)."""
    import torch

    if not zipfile.is_zipfile(source):
        return None
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(source)))
    except Exception:  # noqa: BLE001 - unknown layout: decide by loading
        return None


def safe_checkpoint(source: Path, target: Path) -> Path:
    """Return ``source`` when it already loads with ``weights_only=True``; otherwise write its
    plain-container conversion to ``target`` (allow-listed types only) and return ``target``."""
    import torch

    needed = unsafe_globals(source)
    allowed = allowed_global_names()
    if needed is not None:
        if not needed:
            return source
        refused = sorted(set(needed) - allowed)
        if refused:
            raise EssencekitError(
                f"{source} holds Python objects essencekit will not unpickle ({', '.join(refused[:6])}); "
                "it cannot be converted to a safe checkpoint"
            )
    else:
        with contextlib.suppress(pickle.UnpicklingError):
            torch.load(source, map_location="cpu", weights_only=True)
            return source
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            loaded = torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise EssencekitError(
            f"{source} holds objects outside essencekit's allow-list ({first_line(error)[:160]}); "
            "it cannot be converted to a safe checkpoint"
        ) from None
    except (RuntimeError, EOFError, ValueError, OSError) as error:
        raise EssencekitError(f"cannot read checkpoint {source}: {first_line(error)}") from None
    plain = _plain(loaded)
    del loaded
    with atomic_path(target) as tmp:
        torch.save(plain, tmp)
    # prove the promise: the converted file loads with the plain weights-only unpickler
    torch.load(target, map_location="cpu", weights_only=True, mmap=True)
    return target


# --------------------------------------------------------------------------- safetensors, checked

_MAX_SAFETENSORS_HEADER = 100 << 20  # the safetensors library's own limit


def safetensors_header(path: Path) -> dict[str, dict]:
    """The tensor entries (name -> ``{"dtype", "shape", "data_offsets"}``) of the safetensors
    file ``path``, read from its header alone; raises :class:`EssencekitError` (``"not a
    safetensors file (why)"``, to follow "the file is") when ``path`` is not a complete,
    well-formed safetensors file."""
    def refuse(reason: str) -> EssencekitError:
        return EssencekitError(f"not a safetensors file ({reason})")

    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise refuse(f"only {size} bytes")
        length = int.from_bytes(head, "little")
        if length < 2 or length > _MAX_SAFETENSORS_HEADER or 8 + length > size:
            raise refuse("no valid header; it starts with " + repr(head[:8])[:40])
        raw = handle.read(length)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise refuse("its header is not JSON") from None
    if not isinstance(header, dict):
        raise refuse("its header is not a JSON object")
    header.pop("__metadata__", None)
    data = size - 8 - length
    end = 0
    for key, entry in header.items():
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        shape = entry.get("shape") if isinstance(entry, dict) else None
        if (not isinstance(entry.get("dtype") if isinstance(entry, dict) else None, str)
                or not isinstance(shape, list) or not all(isinstance(n, int) and n >= 0 for n in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(n, int) for n in offsets) or not 0 <= offsets[0] <= offsets[1] <= data):
            raise refuse(f"malformed entry {key!r}")
        end = max(end, offsets[1])
    if end != data:
        raise refuse(f"its tensors cover {end:,} of the {data:,} data bytes: truncated or padded")
    return header


def check_open_clip_safetensors(path: Path, *, expect_shapes: dict | None = None) -> None:
    """Refuse ``path`` unless it is a safetensors file holding an open_clip CLIP state dict:
    ``visual.*`` keys, and each name of ``expect_shapes`` with its shape. The error reads after
    "the file is" (``"not a safetensors file (...)"``, ``"a safetensors file but ..."``)."""
    header = safetensors_header(path)
    if not any(key.startswith("visual.") for key in header):
        example = next(iter(header), "none")
        raise EssencekitError(
            f"a safetensors file but not an open_clip CLIP state dict (no 'visual.*' keys among its "
            f"{len(header)} tensors, e.g. {example!r})"
        )
    for key, shape in (expect_shapes or {}).items():
        if key not in header:
            raise EssencekitError(f"a CLIP state dict but not the expected model (it has no {key!r})")
        if list(header[key]["shape"]) != list(shape):
            raise EssencekitError(
                f"a CLIP state dict but not the expected model ({key} is {tuple(header[key]['shape'])}, "
                f"expected {tuple(shape)})"
            )


def check_download(artifact: WeightArtifact, path: Path) -> None:
    """Check the content of a freshly downloaded or imported ``path`` before it is pinned or
    converted: for ``open-clip-safetensors`` artifacts, :func:`check_open_clip_safetensors`
    (nothing for the other kinds: their conversion reads the file anyway). Raises
    :class:`EssencekitError` when the file is not what the artifact promises."""
    if artifact.convert == "open-clip-safetensors":
        check_open_clip_safetensors(path, expect_shapes=artifact.extra.get("expect_shapes"))


# --------------------------------------------------------------------------- dispatch


def convert_artifact(artifact: WeightArtifact, source: Path, target: Path, *, metadata: dict[str, str]) -> Path:
    """Apply ``artifact.convert`` to the verified ``source``; returns the ready file (which is
    ``source`` itself when nothing needed converting)."""
    if artifact.convert is None:
        return source
    if metadata.get("source_url"):  # the converted file gets shared: no mirror's password in it
        from .urls import redact_url

        metadata = {**metadata, "source_url": redact_url(str(metadata["source_url"]))}
    if artifact.convert == "open-clip-safetensors":
        try:
            check_download(artifact, source)
        except EssencekitError as error:
            raise EssencekitError(f"{source} is {error}") from None
        return source
    if artifact.convert == "clip-torchscript":
        return clip_torchscript_to_safetensors(source, target, metadata=metadata)
    if artifact.convert == "essence-npy":
        shape = artifact.extra.get("shape")
        return essence_npy_to_pt(source, target, name=artifact.name, metadata=metadata,
                                 shape=tuple(shape) if shape else None)
    if artifact.convert == "safe-checkpoint":
        return safe_checkpoint(source, target)
    raise EssencekitError(f"unknown conversion {artifact.convert!r} for {artifact.name}")
