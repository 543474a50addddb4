"""Which sources each process of a ``torchrun`` job takes, and the job's results put back together.

Every rank computes the same split from the same input list, without talking to the others:
sources are dealt out in turn (:meth:`essencekit.distributed.Launch.shard`). One exception keeps
the output names exactly those of a single process: a source whose names depend on the faces
found (``--crops``, ``invert``, W+ files) can claim a name another such source could claim
too (``a.png``'s second face is ``a_face1_joker.png``, as is a photo ``a_face1.png``'s edit),
and a single process settles it in input order (``-2``). Such sources go together, with the
shortest base they extend, to one rank, which sees them in the same order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from ..distributed import Launch


def _families(bases: Sequence[str], named: Sequence[bool]) -> list[int]:
    """For each source, the position of the source it must share a rank with: the first
    source whose base is the shortest of those its own base extends past an ``_``, among the
    sources whose names are not known yet (``named`` False); itself otherwise."""
    first: dict[str, int] = {}
    for position, (base, known) in enumerate(zip(bases, named)):
        if not known:
            first.setdefault(base.lower(), position)
    family = []
    for position, (base, known) in enumerate(zip(bases, named)):
        head = position
        if not known:
            folded = base.lower()
            cut = folded.find("_")
            while cut > 0:
                if folded[:cut] in first:
                    head = first[folded[:cut]]
                    break
                cut = folded.find("_", cut + 1)
        family.append(head)
    return family


def shard_positions(bases: Sequence[str], named: Sequence[bool], launch: Launch) -> list[int]:
    """The positions (in input order) of the sources rank ``launch.rank`` works on. ``bases``
    are the sources' output bases, ``named`` whether all their output names were planned
    before any work. The parts are disjoint and cover every position."""
    if not launch.distributed:
        return list(range(len(bases)))
    family = _families(bases, named)
    heads = sorted(set(family))
    mine = set(launch.shard(heads))
    return [position for position, head in enumerate(family) if head in mine]


def portable(result):
    """``result`` without what only the process that made it needs (the image in memory, the
    W+ tensor): what crosses to rank 0 for the job's summary."""
    return dataclasses.replace(result, image=None, w_plus=None, transform=None)


def merge(parts: Sequence[Sequence]) -> list:
    """Every rank's results as one list, in input order (each source's results stay in the
    order they were made)."""
    merged = [result for part in parts for result in part]
    merged.sort(key=lambda result: result.position)  # stable: a source's own order is kept
    return merged
