"""Essence files: a W+ direction with its coefficients and metadata.

Three formats, chosen by the file's extension when saving and sniffed from its first bytes
when loading:

* ``.pt``: ``torch.save({"direction": [n_latent, style_dim] float32, "coefficients": [N]
  float32, "metadata": {str: str}})``; read with ``weights_only=True``, so a file from a
  stranger cannot run code;
* ``.safetensors``: the same two tensors, and the same str-to-str metadata in the header;
* ``.npy``: the published TargetCLIP format, one (1, n_latent, style_dim) float32 array
  (read with ``allow_pickle=False``). It carries no metadata.

Whatever the format, a file is refused (one line naming it) when its tensors are not
floating-point, its values are not finite or far larger than any W+ edit (:data:`MAX_ROW_NORM`),
or its ``recommended_strength`` is not a number.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_path
from .checkpoints import is_safetensors_file, load_checkpoint
from .errors import EssencekitError

FORMAT_VERSION = "1"
SUFFIXES = (".pt", ".safetensors", ".npy")
#: The largest norm a row of a direction (and, in ``essencekit transfer``, of the whole edit
#: strength x weight x direction) may have. The 19 published TargetCLIP essences have row norms
#: from 0.19 to 4.38 (total norms 6.4 to 13.4), and extraction starts its coefficients at 1, so
#: its directions have the same scale; 100 is 23 times the largest published row. Anything
#: beyond it only saturates the generator into noise, so it is refused rather than rendered
#: (docs/essence-format.md).
MAX_ROW_NORM = 100.0
_NPY_MAGIC = b"\x93NUMPY"


@dataclass
class Essence:
    """An essence direction ``d`` in W+, applied as ``w + strength * d``.

    ``metadata`` maps strings to strings (structured values JSON-encoded), so it survives
    every format. ``recommended_strength`` is the mean of the optimised per-source
    coefficients, or 1.0 when none were recorded (the published essences).
    """

    direction: torch.Tensor
    coefficients: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self):
        direction = torch.as_tensor(self.direction).detach().to("cpu", torch.float32)
        if direction.ndim == 3 and direction.shape[0] == 1:
            direction = direction[0]
        if direction.ndim != 2 or direction.numel() == 0:
            raise EssencekitError(
                f"an essence direction must have shape [n_latent, style_dim], got {list(direction.shape)}"
            )
        if not torch.isfinite(direction).all():
            raise EssencekitError("the essence direction holds NaN or infinite values")
        coefficients = torch.as_tensor(self.coefficients).detach().to("cpu", torch.float32).reshape(-1)
        bad = [k for k, v in self.metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise EssencekitError(f"essence metadata must map strings to strings; offending keys: {bad[:5]}")
        self.direction = direction.contiguous()
        self.coefficients = coefficients.contiguous()
        # plain str copies: a str subclass (torch.__version__ is one) would pickle as an object
        # that weights_only loading refuses
        self.metadata = {str.__str__(k): str.__str__(v) for k, v in self.metadata.items()}

    def validate(self) -> Essence:
        """Refuse what no edit can mean: a direction far larger than any W+ offset
        (:data:`MAX_ROW_NORM`), coefficients or a ``recommended_strength`` that are not finite
        numbers. Done when a file is read and when an essence is applied, not on construction,
        so an extraction always keeps what it found."""
        # in float64: a float32 norm of values near 1e30 overflows to inf and would say nothing
        rows = self.direction.double().norm(dim=1)
        if float(rows.max()) > MAX_ROW_NORM:
            row = int(rows.argmax())
            raise EssencekitError(
                f"the essence direction is far too large to be a W+ edit: row {row} has norm {float(rows[row]):.3g}, "
                f"over {MAX_ROW_NORM:g} (the published essences' rows stay under 4.4)"
            )
        if not torch.isfinite(self.coefficients).all():
            raise EssencekitError("the essence coefficients hold NaN or infinite values")
        self.recommended_strength  # noqa: B018 - raises for a malformed metadata value
        return self

    @property
    def n_latent(self) -> int:
        return self.direction.shape[0]

    @property
    def style_dim(self) -> int:
        return self.direction.shape[1]

    @property
    def name(self) -> str:
        return self.metadata.get("name", "")

    @property
    def recommended_strength(self) -> float:
        value = self.metadata.get("recommended_strength")
        if value is not None:
            number = _number(value)
            if not math.isfinite(number):
                raise EssencekitError(
                    f"essence metadata field 'recommended_strength' must be a finite number, got {value!r}"
                )
            return number
        return float(self.coefficients.mean()) if self.coefficients.numel() else 1.0

    def info(self) -> dict:
        """The metadata with structured values (JSON lists and objects) decoded, plus the
        direction's shape and norm and the coefficients: what ``essencekit info`` shows."""
        decoded: dict = {}
        for key, value in self.metadata.items():
            decoded[key] = value
            if value[:1] in ("[", "{"):
                try:
                    decoded[key] = json.loads(value)
                except ValueError:
                    pass
        decoded.setdefault("format_version", FORMAT_VERSION)
        decoded["direction_shape"] = list(self.direction.shape)
        decoded["direction_norm"] = float(self.direction.norm())
        decoded["recommended_strength"] = self.recommended_strength
        decoded["coefficients"] = [float(c) for c in self.coefficients]
        return decoded

    @classmethod
    def from_npy(cls, path: str | os.PathLike, name: str | None = None) -> Essence:
        """Import a published TargetCLIP direction ((1, n_latent, style_dim) float32 ``.npy``)."""
        path = Path(path)
        try:
            array = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise EssencekitError(f"{path} is not a plain NumPy array file: {error}") from None
        except (OSError, EOFError) as error:
            raise EssencekitError(f"cannot read {path}: {error}") from None
        if array.dtype.kind != "f" or array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[0] != 1):
            raise EssencekitError(
                f"{path} is not a TargetCLIP essence: expected a (1, n_latent, style_dim) float array, "
                f"found {array.dtype} {array.shape}"
            )
        direction = torch.from_numpy(np.ascontiguousarray(array.reshape(array.shape[-2:]), dtype=np.float32))
        metadata = {
            "format_version": FORMAT_VERSION,
            "name": name or path.stem,
            "source": "TargetCLIP published .npy",
            "latent_space": "w+",
            "shape": json.dumps(list(direction.shape)),
            "recommended_strength": "1.0",
        }
        try:
            return cls(direction, torch.zeros(0), metadata).validate()
        except EssencekitError as error:
            raise EssencekitError(f"{path}: {error}") from None

    def save(self, path: str | os.PathLike) -> Path:
        """Write to ``path`` in the format its extension names, atomically; returns the path."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in SUFFIXES:
            raise EssencekitError(f"unknown essence format {suffix!r} for {path}; use one of {', '.join(SUFFIXES)}")
        metadata = {"format_version": FORMAT_VERSION, **self.metadata}
        with atomic_path(path) as tmp:
            if suffix == ".pt":
                payload = {"direction": self.direction, "coefficients": self.coefficients, "metadata": metadata}
                torch.save(payload, tmp)
            elif suffix == ".safetensors":
                from safetensors.torch import save_file

                save_file({"direction": self.direction, "coefficients": self.coefficients}, str(tmp), metadata=metadata)
            else:
                with open(tmp, "wb") as handle:
                    np.save(handle, self.direction.numpy()[None])
        return path


def _number(text: str) -> float:
    """``float(text)``, or NaN for anything that is not a number."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _sniff(path: Path) -> str:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(_NPY_MAGIC):
        return "npy"
    return "safetensors" if is_safetensors_file(path) else "pt"


def load_essence(path: str | os.PathLike) -> Essence:
    """Read an essence file of any supported format, refusing anything that is not plain data."""
    path = Path(path)
    if not path.is_file():
        raise EssencekitError(f"essence file not found: {path}")
    if path.stat().st_size == 0:
        raise EssencekitError(f"essence file is empty (0 bytes): {path}")
    kind = _sniff(path)
    if kind == "npy":
        return Essence.from_npy(path)
    if kind == "safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                tensors = {key: handle.get_tensor(key) for key in handle.keys()}
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError) as error:
            raise EssencekitError(f"cannot read essence {path}: {error}") from None
    else:
        data = load_checkpoint(path, what="essence file")
        if not isinstance(data, dict):
            raise EssencekitError(f"{path} is not an essence file: expected a dictionary, found {type(data).__name__}")
        tensors = data
        metadata = data.get("metadata", {})
        if not isinstance(metadata, dict):
            raise EssencekitError(f"{path} is not an essence file: its metadata is not a dictionary")
    direction = tensors.get("direction")
    if not isinstance(direction, torch.Tensor):
        raise EssencekitError(f"{path} is not an essence file: it has no 'direction' tensor")
    coefficients = tensors.get("coefficients", torch.zeros(0))
    if not isinstance(coefficients, torch.Tensor):
        raise EssencekitError(f"{path} is not an essence file: 'coefficients' is not a tensor")
    for key, tensor in (("direction", direction), ("coefficients", coefficients)):
        # as the .npy reader does: integers or booleans are not a direction someone optimised
        if not tensor.dtype.is_floating_point:
            kind = str(tensor.dtype).removeprefix("torch.")
            raise EssencekitError(
                f"{path} is not an essence file: its '{key}' tensor holds {kind} values, not floating-point numbers"
            )
    try:
        return Essence(direction, coefficients, metadata).validate()
    except EssencekitError as error:
        raise EssencekitError(f"{path}: {error}") from None
