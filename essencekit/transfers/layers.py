"""``--layers``: which W+ rows an edit touches.

Rows are named by the resolution they drive, StyleGAN's two styles per resolution: rows
``2k`` and ``2k + 1`` belong to ``4 * 2**k`` px (in StyleGAN2's wiring an odd row also styles
the next resolution's up-convolution, but the split below is the one the literature and the
TargetCLIP authors use). So for any generator size:

* ``coarse``: 4 to 8 px, rows 0-3 (pose, face shape);
* ``medium``: 16 to 32 px, rows 4-7 (features, hair style, eyes open or closed);
* ``fine``: 64 px and up, rows 8 to the last (colour scheme, micro-structure).

A 1024 px generator has 18 rows (fine = 8-17), a 256 px one 14 (8-13), a 64 px one 10 (8-9).
"""

from __future__ import annotations

import torch

from ..errors import OptionError

GROUPS = {"coarse": (4, 8), "medium": (16, 32), "fine": (64, None)}


def row_resolution(row: int) -> int:
    """The resolution (px) W+ row ``row`` drives."""
    return 2 ** (row // 2 + 2)


def group_rows(group: str, n_latent: int) -> list[int]:
    low, high = GROUPS[group]
    return [r for r in range(n_latent) if row_resolution(r) >= low and (high is None or row_resolution(r) <= high)]


def describe_groups(n_latent: int) -> str:
    """``coarse = rows 0-3, medium = rows 4-7, fine = rows 8-17`` for this W+ size."""
    parts = []
    for name in GROUPS:
        rows = group_rows(name, n_latent)
        parts.append(f"{name} = rows {rows[0]}-{rows[-1]}" if rows else f"{name} = no rows")
    return ", ".join(parts)


def parse_layers(spec: str | None, n_latent: int) -> tuple[int, ...]:
    """The sorted rows of ``spec`` (``None``: all): comma-separated group names, row numbers
    and ranges ``a-b``, e.g. ``medium``, ``0-7``, ``4,5,6``, ``coarse,10-13``. Raises
    :class:`~essencekit.errors.OptionError` (a ``ValueError``) with a one-line reason for anything else."""
    if spec is None:
        return tuple(range(n_latent))
    rows: set[int] = set()
    last = n_latent - 1
    for token in (t.strip().lower() for t in str(spec).split(",")):
        if not token:
            raise OptionError(f"empty item in layers {spec!r}", parameter="layers")
        if token in GROUPS:
            found = group_rows(token, n_latent)
            if not found:
                raise OptionError(f"layers {token!r}: this generator has no {token} rows ({describe_groups(n_latent)})",
                                  parameter="layers")
            rows.update(found)
            continue
        low, sep, high = token.partition("-")
        try:
            first, final = int(low), int(high if sep else low)
        except ValueError:
            raise OptionError(
                f"layers takes coarse, medium, fine, row numbers and ranges such as 0-7 or 4,5,6; got {token!r}",
                parameter="layers",
            ) from None
        if first > final:
            raise OptionError(f"layers range {token!r} runs backwards", parameter="layers")
        if first < 0 or final > last:
            raise OptionError(f"layers {token!r}: this generator's W+ rows are 0-{last} ({describe_groups(n_latent)})",
                              parameter="layers")
        rows.update(range(first, final + 1))
    return tuple(sorted(rows))


def row_mask(rows, n_latent: int) -> torch.Tensor:
    """[n_latent, 1] float mask: 1 on ``rows``, 0 elsewhere."""
    mask = torch.zeros(n_latent, 1)
    mask[list(rows)] = 1.0
    return mask
