"""Output names: ``<stem>[_face<i>]_<essence>[_s<strength>].<ext>``, never two alike.

A source's *base* is its path relative to the folder it came from, without the extension, so
``--recursive`` mirrors sub-folders in the output folder. Sources whose bases clash (``a.png``
and ``a.jpg``; files of the same name from two folders given separately) get their extension
appended (``a_png``, ``a_jpg``); anything still clashing then gets ``-2``, ``-3`` in input
order. The comparison ignores case, for case-insensitive file systems. The plan depends only
on the list of sources, so a resumed run (``--skip-existing``) finds the same names.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import PurePosixPath


def format_strength(strength: float) -> str:
    """``s1.2``, ``s0.5``, ``s1``, ``s-0.5``: the shortest exact decimal."""
    return "s" + format(float(strength), "g")


def plan_bases(rels: list[PurePosixPath]) -> list[str]:
    """One unique base (posix relative path without extension) per source, in order."""
    bases = [str(rel.with_suffix("")) for rel in rels]
    groups: dict[str, list[int]] = defaultdict(list)
    for i, base in enumerate(bases):
        groups[base.lower()].append(i)
    for members in groups.values():
        if len(members) > 1:
            for i in members:
                suffix = rels[i].suffix.lower().lstrip(".")
                if suffix:
                    bases[i] = f"{bases[i]}_{suffix}"
    taken: set[str] = set()
    for i, base in enumerate(bases):
        candidate, n = base, 2
        while candidate.lower() in taken:
            candidate, n = f"{base}-{n}", n + 1
        taken.add(candidate.lower())
        bases[i] = candidate
    return bases


def output_name(base: str, essence: str, ext: str, *, face: int | None = None, strength: float | None = None,
                tag: str = "") -> str:
    """``base[_face<i>]_<essence>[_s<strength>][_<tag>]<ext>``; ``face`` only when the source
    gives several crops, ``strength`` only in a sweep, ``tag`` for extras (``grid``)."""
    name = base
    if face is not None:
        name += f"_face{face}"
    if essence:
        name += f"_{essence}"
    if strength is not None:
        name += f"_{format_strength(strength)}"
    if tag:
        name += f"_{tag}"
    return name + ext


class NameRegistry:
    """The output paths a run has claimed: a path asked for twice gets ``-2``, ``-3`` before
    its extension (say a photo ``a_face0.png`` next to the second face of ``a.png``)."""

    def __init__(self):
        self._taken: set[str] = set()

    def claim(self, path):
        from pathlib import Path

        path = Path(path)
        candidate, n = path, 2
        while str(candidate).lower() in self._taken:
            candidate, n = path.with_name(f"{path.stem}-{n}{path.suffix}"), n + 1
        self._taken.add(str(candidate).lower())
        return candidate
