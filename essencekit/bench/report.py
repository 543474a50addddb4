"""Presenting benchmark reports (``essencekit bench``'s, and the development benchmarks' in a
source checkout's ``benchmarks/``): number cells, peak-memory labels, Rich tables, the machine
header and JSON files.

A report is plain data (JSON-serialisable): ``machine`` (:func:`measure.machine_info`),
``settings`` and ``results`` (one dict per row, with ``peak_bytes``/``peak_kind`` and, for a
failed case, ``error``). Each benchmark keeps only its own columns and verdicts.

Importing this module imports neither torch nor Rich; the functions that draw import Rich.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from . import measure

# A table column: (header, "left" | "right").
Column = tuple[str, str]
# In the rows given to rich_table: start a new section (a rule between groups of rows).
SECTION = None


# --------------------------------------------------------------------------------------------
# Cells


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    """``value`` formatted with ``spec`` and ``suffix``, or ``-`` for a missing figure."""
    return "-" if value is None else f"{value:{spec}}{suffix}"


def gib_cell(n_bytes: float | None) -> str:
    """Bytes as GiB with two decimals, or ``-``."""
    return fmt(measure.gib(n_bytes), ".2f")


def peak_label(rows: Iterable[dict]) -> str:
    """The peak-memory column's header: device memory, RSS, or both kinds mixed."""
    kinds = {r.get("peak_kind") for r in rows if r.get("peak_kind")}
    return "peak device GiB" if kinds == {"device"} else "peak RSS GiB" if kinds == {"rss"} else "peak GiB"


# --------------------------------------------------------------------------------------------
# Tables


def rich_table(columns: Sequence[Column], rows: Iterable[Sequence[str] | None], *, title: str | None = None):
    """A Rich table; a :data:`SECTION` in ``rows`` draws a rule before the next row. Cells are
    plain text (no Rich markup)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=title, title_justify="left")
    for header, justify in columns:
        table.add_column(header, justify=justify)
    pending_section = False
    for cells in rows:
        if cells is SECTION:
            pending_section = table.row_count > 0
            continue
        if pending_section:
            table.add_section()
            pending_section = False
        table.add_row(*(Text(str(c)) for c in cells))
    return table


# --------------------------------------------------------------------------------------------
# Printing a report


def wide(console, width: int = 160):
    """``console`` at a terminal; for files and pipes (which have no width to fit) a console on
    the same file ``width`` columns wide, so that table rows stay whole."""
    if console.is_terminal:
        return console
    from rich.console import Console

    return Console(file=console.file, width=width, soft_wrap=console.soft_wrap, highlight=False)


def print_lines(console, lines: Iterable[str]) -> None:
    """Plain lines (no markup, no highlighting)."""
    for line in lines:
        console.print(line, highlight=False, markup=False)


def print_machine(report: dict, console) -> None:
    """The lines that say what the figures were measured on."""
    print_lines(console, measure.describe_machine(report["machine"]))


# --------------------------------------------------------------------------------------------
# Files


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, default=str) + "\n"


def save_json(report: dict, path: str | os.PathLike) -> Path:
    """Write ``report`` as indented JSON to ``path`` atomically (a reader sees all or nothing)."""
    from ..atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(to_json(report))
    return path
