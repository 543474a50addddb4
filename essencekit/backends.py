"""Compute backends: where tensors live and how models are prepared for speed.

Backends come from ``register_backends`` plugins (the built-in cpu, cuda and mps ones too).
Nothing in essencekit calls ``.cuda()``: models and tensors move through a backend.
"""

from __future__ import annotations

import abc
import contextlib
import os
from typing import TYPE_CHECKING

from .errors import EssencekitError

if TYPE_CHECKING:  # torch loads only when a tensor is made: listing backends stays quick
    import torch

ENV_BACKEND = "ESSENCEKIT_BACKEND"


class Backend(abc.ABC):
    """A compute backend. Subclass it, set the class attributes, and register an instance.

    ``priority`` orders the automatic choice (highest available wins: cuda 30 > mps 20 >
    cpu 0). ``modulated_conv`` names the StyleGAN2 modulated-convolution form that measured
    fastest on this kind of device (``"grouped"`` or ``"shared"``; see docs/performance.md).
    """

    name: str = ""
    description: str = ""
    priority: int = 0
    modulated_conv: str = "grouped"

    @abc.abstractmethod
    def availability(self) -> tuple[bool, str]:
        """``(True, "")`` when usable here, else ``(False, reason the user can act on)``."""

    @property
    @abc.abstractmethod
    def device(self) -> torch.device:
        """The ``torch.device`` tensors and models go to."""

    @property
    def autocast_dtype(self) -> torch.dtype:
        """The reduced precision for autocast regions; ``torch.float32`` means none."""
        import torch

        return torch.float32

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device and apply what makes it fast here; returns it."""
        if hasattr(model, "set_modulated_conv"):
            model.set_modulated_conv(self.modulated_conv)
        return model.to(self.device)

    def autocast(self):
        """A context manager running its block in ``autocast_dtype`` (a no-op for fp32)."""
        import torch

        if self.autocast_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def synchronize(self) -> None:
        """Wait for queued device work (for honest timings); a no-op on the CPU."""

    def peak_memory(self) -> int | None:
        """Peak device memory in bytes since the last reset, if the device reports it."""
        return None

    def reset_peak_memory(self) -> None:
        """Start a new peak-memory measurement."""

    @property
    def available(self) -> bool:
        return self.availability()[0]

    def __repr__(self) -> str:
        return f"<Backend {self.name}>"


def all_backends() -> dict[str, Backend]:
    """Every registered backend by name, available or not."""
    from .plugins import registered

    return registered("backends")


def select_backend(name: str | None = None) -> Backend:
    """The backend named ``name``, else ``$ESSENCEKIT_BACKEND``, else the best available one.

    Raises :class:`EssencekitError` naming the reason when the requested backend is unknown
    or unavailable here.
    """
    backends = all_backends()
    requested = name or os.environ.get(ENV_BACKEND) or None
    if requested:
        requested = requested.strip().lower()
        if requested not in backends:
            known = ", ".join(sorted(backends)) or "none"
            raise EssencekitError(f"unknown backend {requested!r}; registered backends: {known}")
        backend = backends[requested]
        ok, reason = backend.availability()
        if not ok:
            source = "--backend" if name else f"${ENV_BACKEND}"
            raise EssencekitError(f"backend {requested!r} ({source}) is not available here: {reason}")
        return backend
    candidates = [b for b in backends.values() if b.available]
    if not candidates:
        raise EssencekitError("no compute backend is available (even cpu failed to load; run `essencekit doctor`)")
    return max(candidates, key=lambda b: b.priority)


def resolve_backend(device: str | torch.device | Backend | None) -> Backend:
    """Turn the ``device`` argument of the Python API into a backend.

    Accepts ``None`` (automatic), a backend name (``"cuda"``), a device string with an index
    (``"cuda:1"``), a ``torch.device`` or a :class:`Backend`.
    """
    if isinstance(device, Backend):
        return device
    if device is None:
        return select_backend()
    import torch

    torch_device = torch.device(device) if not isinstance(device, torch.device) else device
    backend = select_backend(torch_device.type)
    if torch_device.index is not None and backend.device != torch_device:
        return _PinnedDevice(backend, torch_device)
    return backend


class _PinnedDevice(Backend):
    """A backend's behaviour on another device index of the same type (``cuda:1``)."""

    def __init__(self, base: Backend, device: torch.device):
        self._base = base
        self._device = device
        self.name = base.name
        self.description = base.description
        self.priority = base.priority
        self.modulated_conv = base.modulated_conv

    def availability(self):
        return self._base.availability()

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def autocast_dtype(self) -> torch.dtype:
        return self._base.autocast_dtype

    def prepare(self, model):
        model = self._base.prepare(model)
        return model.to(self._device)

    def synchronize(self):
        self._base.synchronize()

    def peak_memory(self):
        return self._base.peak_memory()

    def reset_peak_memory(self):
        self._base.reset_peak_memory()
