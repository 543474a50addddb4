"""Runs launched by ``torchrun``: one process per device, on one machine or several.

Commands do not need an entry point of their own: ``torchrun --nproc-per-node 8 -m essencekit
train-encoder ...`` starts 8 copies of the command, and each finds its place from the
variables torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``, and
``MASTER_ADDR``/``MASTER_PORT`` for the rendezvous). :class:`ProcessGroup` joins the job's
process group with the backend's communication library (gloo on CPUs, nccl on CUDA), gives
each process its device (``Backend.for_local_rank``) and, where processes share one machine's
cores, its share of them (``Backend.threads_per_process``). Outside torchrun every helper
here is a no-op for a single process, so a command has one code path.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .errors import EssencekitError, braced

if TYPE_CHECKING:
    from .backends import Backend

T = TypeVar("T")

#: What torchrun sets for every process it starts.
TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


class ReportedElsewhere(EssencekitError):
    """A failure rank 0 reports for the whole job: the other ranks exit 1 without printing it
    again, so a job of 16 processes says what went wrong once."""


@dataclass(frozen=True)
class Launch:
    """Where this process stands in its job: ``rank`` of ``world_size`` processes, and
    ``local_rank`` of the ``local_world_size`` on this machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that prints, validates and writes the job's own files."""
        return self.rank == 0

    def shard(self, items: Sequence[T]) -> list[T]:
        """This process's part of ``items``: every ``world_size``-th item from ``rank`` on.
        Every rank computes it from the same list without talking to the others, and the
        parts are disjoint and cover the list."""
        return list(items[self.rank :: self.world_size])


def launch_environment(environ: Mapping[str, str] | None = None) -> Launch:
    """The :class:`Launch` torchrun's variables describe; a single process without them."""
    environ = os.environ if environ is None else environ
    if not any(name in environ for name in TORCHRUN_VARIABLES):
        return Launch()

    def number(name: str, default: int | None = None) -> int:
        text = environ.get(name)
        if text is None:
            if default is None:
                raise EssencekitError(
                    f"{name} is not set though {', '.join(n for n in TORCHRUN_VARIABLES if n in environ)} is: "
                    "start distributed runs with torchrun, which sets all of them"
                )
            return default
        try:
            return int(text)
        except ValueError:
            raise EssencekitError(f"{name}={text!r} is not a whole number; start distributed runs with torchrun") from None

    world_size = number("WORLD_SIZE")
    rank = number("RANK")
    local_rank = number("LOCAL_RANK")
    local_world_size = number("LOCAL_WORLD_SIZE", default=world_size)
    if not (world_size >= 1 and 0 <= rank < world_size and 0 <= local_rank < local_world_size <= world_size):
        raise EssencekitError(
            f"inconsistent torchrun variables: RANK={rank}, WORLD_SIZE={world_size}, LOCAL_RANK={local_rank}, "
            f"LOCAL_WORLD_SIZE={local_world_size}"
        )
    return Launch(rank, world_size, local_rank, local_world_size)


class ProcessGroup:
    """This process's part in a (possibly distributed) job; a context manager.

    Entering it under torchrun initialises torch.distributed with ``backend``'s
    ``process_group_backend``, pins the backend to this process's device and splits the CPU
    threads; leaving it destroys the group. ``self.backend`` is the backend to compute on,
    ``self.launch`` the :class:`Launch`. In a single process it does nothing.
    """

    def __init__(self, backend: Backend, launch: Launch | None = None):
        self.launch = launch if launch is not None else launch_environment()
        self.backend = backend
        self._owned = False
        self._counters: dict[str, int] = {}

    # -- lifecycle --------------------------------------------------------------------------

    def __enter__(self) -> ProcessGroup:
        if not self.launch.distributed:
            return self
        import torch

        # torch._dynamo imported while a group exists (torchvision and open_clip import it: the
        # CLIP judges, the FID Inception) keeps that group alive past destroy_process_group, so
        # gloo's worker threads outlive it; one still releasing the last collective's tensors
        # when the interpreter shuts down aborts a rank that had finished (SIGABRT, a failed
        # job). Imported first, it holds nothing and leaving the group stops those threads.
        import torch._dynamo  # noqa: F401
        import torch.distributed as dist

        launch = self.launch
        self.backend = self.backend.for_local_rank(launch.local_rank)
        threads = self.backend.threads_per_process(launch.local_world_size)
        if threads is not None:
            torch.set_num_threads(threads)
        if not dist.is_available():
            raise EssencekitError(f"this torch build ({torch.__version__}) has no torch.distributed support")
        if not dist.is_initialized():
            options: dict[str, Any] = {}
            if self.backend.device_per_process:
                options["device_id"] = self.backend.device
                # object collectives (gather of results) and DDP's buffers use the current
                # device: make it this process's, not device 0 for every rank
                accelerator = getattr(torch, "accelerator", None)
                if accelerator is not None and self.backend.device.index is not None:
                    accelerator.set_device_index(self.backend.device.index)
            try:
                dist.init_process_group(
                    self.backend.process_group_backend, rank=launch.rank, world_size=launch.world_size, **options
                )
            except (RuntimeError, ValueError) as error:
                raise EssencekitError(
                    f"cannot join the torchrun job as rank {launch.rank} of {launch.world_size} "
                    f"({self.backend.process_group_backend}): {str(error).splitlines()[0] if str(error) else error}"
                ) from None
            self._owned = True
        return self

    def __exit__(self, *exc) -> None:
        if self._owned:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self._owned = False

    # -- collectives (no-ops for one process) -----------------------------------------------

    @property
    def is_main(self) -> bool:
        return self.launch.is_main

    def barrier(self) -> None:
        if self.launch.distributed:
            import torch.distributed as dist

            dist.barrier()

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value`` (picklable), in rank order, on every rank."""
        if not self.launch.distributed:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.launch.world_size
        dist.all_gather_object(values, value)
        return values

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every rank."""
        if not self.launch.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.launch.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any rank (say, Ctrl-C reached one of them)."""
        return any(self.gather(bool(flag)))

    def collect(self, value: T) -> list[T] | None:
        """Every rank's ``value`` (picklable), in rank order, on rank 0 only (``None`` on the
        others): a job's results need not cross to every process as :meth:`gather`'s do."""
        if not self.launch.distributed:
            return [value]
        import torch.distributed as dist

        values: list[Any] | None = [None] * self.launch.world_size if self.launch.is_main else None
        dist.gather_object(value, values, dst=0)
        return values

    def add(self, name: str, amount: int = 0) -> int:
        """Add ``amount`` to the job-wide counter ``name`` and return its new total (``0``
        reads it). The counters live in torchrun's rendezvous store, not in a collective: a
        rank counts its progress without waiting for the others, and rank 0 reads everyone's."""
        if not self.launch.distributed:
            self._counters[name] = self._counters.get(name, 0) + amount
            return self._counters[name]
        from torch.distributed import distributed_c10d

        # a job torchrun restarts (--max-restarts) keeps its store: count each attempt apart
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        return int(distributed_c10d._get_default_store().add(f"essencekit/{attempt}/{name}", amount))

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """A step every rank takes before the work (checking options, planning outputs): when
        it fails on any rank it fails on all of them, at once, rather than leaving the others
        waiting in the next collective. Rank 0 raises the first failure (its own exception as
        it is, another rank's as one line naming that rank); the others raise
        :class:`ReportedElsewhere`."""
        failure: BaseException | None = None
        try:
            yield
        except Exception as error:  # noqa: BLE001 - any failure must reach the other ranks
            if not self.launch.distributed:
                raise
            failure = error
        if not self.launch.distributed:
            return
        reports = self.gather(None if failure is None else (str(failure) or type(failure).__name__))
        failed = [(rank, report) for rank, report in enumerate(reports) if report is not None]
        if not failed:
            return
        rank, report = failed[0]
        if not self.launch.is_main:
            raise ReportedElsewhere(report) from failure
        if rank == 0:
            raise failure
        mentions = getattr(report, "mentions", ())  # a Message keeps its parameters, for the CLI's flags
        raise EssencekitError(f"rank {rank}: " + getattr(report, "template", braced(report)), mentions=mentions)
