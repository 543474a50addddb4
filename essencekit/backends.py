"""Compute backends: where tensors live, how models are prepared for speed, and the device
policy (batch cap, memory budget, I/O threads, memory format, autocast precision).

Backends come from ``register_backends`` plugins (the built-in cpu, cuda and mps ones too).
Nothing in essencekit calls ``.cuda()`` or asks which kind of device it runs on: models and
tensors move through a backend, and every device decision is a backend attribute.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import EssencekitError, OptionError

if TYPE_CHECKING:  # torch loads only when a tensor is made: listing backends stays quick
    import torch

ENV_BACKEND = "ESSENCEKIT_BACKEND"
#: ``--backend auto`` / ``ESSENCEKIT_BACKEND=auto``: the automatic choice, spelled out
AUTO = "auto"

GIB = 2**30
#: The default memory budget: half the host's available memory, at most this (extract keeps
#: within 8 GiB of peak memory on the CPU, docs/extract.md), or FALLBACK_BUDGET where the host
#: does not say (no /proc/meminfo).
HOST_BUDGET_CAP = 5 * GIB
FALLBACK_BUDGET = 4 * GIB


def available_host_memory() -> int | None:
    """Bytes of host memory available to a new allocation (Linux's MemAvailable), if known."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


class Backend(abc.ABC):
    """A compute backend. Subclass it, set the class attributes, and register an instance.

    ``priority`` orders the automatic choice (highest available wins: cuda 30 > mps 20 >
    cpu 0). The device policy, each with a default for a backend that does not say:

    * ``max_batch`` (32): the most images one pass of the generator or encoder takes, however
      much memory would allow more;
    * :meth:`memory_budget` (half the available host memory, at most 5 GiB): the bytes the
      images of one pass may take, from which batch sizes follow;
    * :meth:`io_workers` (threads from the core count): background readers and writers;
    * :meth:`compute_threads` (None): the models' threads beside those readers and writers,
      and :meth:`inference_session`, the settings a transfer or invert run computes under;
    * ``channels_last`` (False): models and inputs in the channels-last memory format;
    * ``autocast_dtype`` (``torch.float32``, none): the reduced precision of autocast regions;
    * ``fast_grouped_conv`` (True): whether grouped convolutions (``groups > 1``) run about as
      fast as one dense convolution doing the same work; models with a grouped and a dense
      form of a layer pick the dense one where they do not;
    * ``process_group_backend`` ("gloo"): torch.distributed's communication library between
      the processes ``torchrun`` starts on this kind of device ("nccl" for CUDA);
    * ``device_per_process`` (False): whether each of those processes on one machine takes
      its own device (``cuda:LOCAL_RANK``) or they all share :attr:`device` (the CPU);
    * :meth:`threads_per_process` (None): CPU threads for each of several processes sharing
      one machine, so that they do not oversubscribe its cores.
    """

    name: str = ""
    description: str = ""
    priority: int = 0
    max_batch: int = 32
    channels_last: bool = False
    fast_grouped_conv: bool = True
    process_group_backend: str = "gloo"
    device_per_process: bool = False

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

    def memory_budget(self) -> int:
        """Bytes the images of one pass may take on :attr:`device` (batch sizes follow from it).

        The default suits a device that shares the host's memory: half of what is available,
        at most 5 GiB."""
        available = available_host_memory()
        return int(min(available * 0.5, HOST_BUDGET_CAP)) if available else FALLBACK_BUDGET

    def io_workers(self) -> tuple[int, int]:
        """``(readers, writers)``: threads that decode inputs and encode outputs while the
        device computes. The default, for a device that does not compute on the host's cores:
        enough writers to keep up (a 1024 px PNG takes about 0.1 s to encode)."""
        cores = os.cpu_count() or 2
        return max(1, min(4, cores // 4)), max(1, min(8, cores // 2))

    def compute_threads(self, io_threads: int) -> int | None:
        """Intra-op CPU threads for the models while ``io_threads`` reader and writer threads
        run beside them; ``None`` leaves torch's setting (a device that does not compute on the
        host's cores shares nothing with those threads)."""
        return None

    @contextlib.contextmanager
    def inference_session(self, io_threads: int = 0):
        """The process settings of a run of same-shaped inference passes (``transfer`` and
        ``invert``), undone when the block ends: the threads of :meth:`compute_threads`, and
        whatever else a backend wants there (the cpu backend's allocator settings)."""
        threads = self.compute_threads(io_threads)
        if threads is None:
            yield
            return
        import torch

        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def threads_per_process(self, local_processes: int) -> int | None:
        """Intra-op CPU threads for each of ``local_processes`` processes on this machine;
        ``None`` leaves torch's own choice (a device that does not compute on the host's
        cores needs no split)."""
        return None

    def for_local_rank(self, local_rank: int) -> Backend:
        """The backend process ``local_rank`` of a ``torchrun`` job uses on its machine: pinned
        to device ``local_rank`` when :attr:`device_per_process`, else this one."""
        if not self.device_per_process:
            return self
        import torch

        return _pin(self, torch.device(self.device.type, local_rank))

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move ``model`` to the device (channels-last when :attr:`channels_last`) and return it.

        A model with a ``configure_for(backend)`` method is asked to adapt to this backend
        first (the StyleGAN2 generator picks its modulated-convolution form from
        :attr:`fast_grouped_conv`): the backend knows no model, models read the backend.
        """
        configure = getattr(model, "configure_for", None)
        if callable(configure):
            configure(self)
        model = model.to(self.device)
        if self.channels_last:
            _channels_last(model)
        return model

    def autocast(self):
        """A context manager running its block in ``autocast_dtype`` (a no-op for fp32)."""
        import torch

        if self.autocast_dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.autocast_dtype)

    def synchronize(self) -> None:  # noqa: B027 - optional: devices without a queue need nothing
        """Wait for queued device work (for honest timings); a no-op on the CPU."""

    def peak_memory(self) -> int | None:
        """Peak device memory in bytes since the last reset, if the device reports it."""
        return None

    def reset_peak_memory(self) -> None:  # noqa: B027 - optional, as peak_memory
        """Start a new peak-memory measurement."""

    @property
    def available(self) -> bool:
        return self.availability()[0]

    def __repr__(self) -> str:
        return f"<Backend {self.name}>"


def _channels_last(model: torch.nn.Module) -> None:
    """Store ``model``'s 4-D weights and buffers channels-last, in place. Not
    ``model.to(memory_format=...)``: that raises on any 5-D tensor (the StyleGAN2 generator's
    modulated-convolution weights are [1, out, in, k, k])."""
    import torch

    for module in model.modules():
        for param in module.parameters(recurse=False):
            if param.dim() == 4:
                param.data = param.data.contiguous(memory_format=torch.channels_last)
        for name, buffer in module.named_buffers(recurse=False):
            if buffer.dim() == 4:
                setattr(module, name, buffer.contiguous(memory_format=torch.channels_last))


def all_backends() -> dict[str, Backend]:
    """Every registered backend by name, available or not."""
    from .plugins import registered

    return registered("backends")


def _lookup(backends: dict[str, Backend], name: str) -> Backend | None:
    return backends.get(name) or backends.get(name.lower())


def select_backend(name: str | None = None) -> Backend:
    """The backend named ``name``, else ``$ESSENCEKIT_BACKEND``, else the best available one.

    ``"auto"`` (as ``name`` or in the variable) asks for the automatic choice: ``name="auto"``
    still lets the variable choose. Raises :class:`EssencekitError` naming the reason when the
    requested backend is unknown or unavailable here.
    """
    backends = all_backends()
    known = ", ".join(sorted(backends)) or "none"
    if name is not None and not name.strip():
        # an empty --backend "" is a mistake, not a request for the automatic choice
        raise OptionError(f"the backend name is empty; use one of {known}, or auto", parameter="device")
    if name is not None and name.strip().lower() == AUTO:
        name = None
    requested = (name or os.environ.get(ENV_BACKEND) or "").strip()
    if requested and requested.lower() != AUTO:
        # a name given here is a bad argument (the CLI names --backend); one from the variable
        # is a setting of the environment, which the message must point at
        def refuse(message: str):
            if name:
                return OptionError(message, parameter="device")
            return EssencekitError(message)

        source = "" if name else f" (from ${ENV_BACKEND})"
        backend = _lookup(backends, requested)
        if backend is None:
            raise refuse(f"unknown backend {requested!r}{source}; registered backends: {known}, or auto")
        ok, reason = backend.availability()
        if not ok:
            raise refuse(f"backend {backend.name!r}{source} is not available here: {reason}")
        return backend
    candidates = [b for b in backends.values() if b.available]
    if not candidates:
        raise EssencekitError("no compute backend is available (even cpu failed to load; run `essencekit doctor`)")
    return max(candidates, key=lambda b: b.priority)


def resolve_backend(device: str | torch.device | Backend | None) -> Backend:
    """Turn the ``device`` argument of the Python API (and ``--backend``) into a backend.

    Accepts ``None`` or ``"auto"`` (the automatic choice), a registered backend's name
    (``"cuda"``, a plugin's ``"cpu-1"``), a name with a device index (``"cuda:1"``), a
    ``torch.device`` (its type names the backend) or a :class:`Backend`.
    """
    if isinstance(device, Backend):
        return device
    if device is None:
        return select_backend()
    if isinstance(device, str):
        # the registry first: a backend's name need not be a torch device type ("auto",
        # "cpu-1"); only then a trailing ":N" as a device index
        name, index = device.strip(), None
        base, colon, digits = name.rpartition(":")
        backends = all_backends()
        if colon and digits.isdigit() and _lookup(backends, name) is None and _lookup(backends, base) is not None:
            name, index = base, int(digits)
        backend = select_backend(name)
    else:
        backend, index = select_backend(device.type), device.index
    if index is None:
        return backend
    import torch

    pinned = torch.device(backend.device.type, index)
    return backend if backend.device == pinned else _pin(backend, pinned)


def _pinned_device(self) -> torch.device:
    return self._pinned


def _pin(backend: Backend, device: torch.device) -> Backend:
    """``backend`` on another index of its device type (``cuda:1``): a copy of it whose class
    is a subclass of its own with that device, so that every method of the backend (its
    memory budget and ``prepare`` included) sees the pinned device."""
    cls = type(backend)
    namespace = {"device": property(_pinned_device), "__module__": cls.__module__}
    pinned = copy.copy(backend)
    pinned.__class__ = type(cls)(f"Pinned{cls.__name__}", (cls,), namespace)
    pinned._pinned = device
    return pinned
