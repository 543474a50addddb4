"""Commands that run under ``torchrun``: the job's process group, and who speaks for the job.

``torchrun --nproc-per-node 8 -m essencekit transfer ...`` starts the same command 8 times; each
copy joins the job's process group here and the library shares the work out. Rank 0 speaks
for the job (progress, notices, results, summary); the other ranks stay quiet, as what they
would say is either the same or reaches rank 0 anyway.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from .output import print_note


@contextlib.contextmanager
def process_group(backend: str | None) -> Iterator:
    """The job's :class:`~essencekit.distributed.ProcessGroup` on ``--backend`` (each rank on
    its own device; a no-op outside torchrun)."""
    from ..backends import resolve_backend
    from ..distributed import ProcessGroup

    with ProcessGroup(resolve_backend(backend)) as group:
        yield group


def notes(group) -> Callable[[str], None] | None:
    """The library's ``notify``: notices printed on rank 0 only."""
    return print_note if group.is_main else None
