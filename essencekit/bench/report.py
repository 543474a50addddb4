"""Presenting benchmark reports, shared by every benchmark in :mod:`essencekit.bench`: number
cells, peak-memory labels, tables (Rich and Markdown), the machine header, goal lines, JSON
files, and the command-line plumbing of the ``benchmarks/`` scripts.

A report is plain data (JSON-serialisable): ``machine`` (:func:`measure.machine_info`),
``settings``, ``results`` (one dict per row, with ``peak_bytes``/``peak_kind`` and, for a failed
case, ``error``), optionally ``goals``. Each benchmark module keeps only its own columns and
verdicts.

Importing this module imports neither torch nor Rich; the functions that draw import Rich.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Iterable, Sequence
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


def ratio(value: float | None) -> str:
    """A speed ratio: ``2.38x``, or ``-``."""
    return fmt(value, ".2f", "x")


def gib_cell(n_bytes: float | None) -> str:
    """Bytes as GiB with two decimals, or ``-``."""
    return fmt(measure.gib(n_bytes), ".2f")


def peak_label(rows: Iterable[dict]) -> str:
    """The peak-memory column's header: device memory, RSS, or both kinds mixed."""
    kinds = {r.get("peak_kind") for r in rows if r.get("peak_kind")}
    return "peak device GiB" if kinds == {"device"} else "peak RSS GiB" if kinds == {"rss"} else "peak GiB"


def failed(rows: Iterable[dict]) -> bool:
    return any(r.get("error") for r in rows)


# --------------------------------------------------------------------------------------------
# Tables


def markdown(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; a row with fewer cells than columns is padded with blank cells."""

    def line(cells: Sequence[str]) -> str:
        cells = list(cells) + [""] * (len(columns) - len(cells))
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"

    lines = [line([h for h, _ in columns]), line(["---:" if j == "right" else "---" for _, j in columns])]
    lines.extend(line(cells) for cells in rows)
    return "\n".join(lines) + "\n"


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


def goal_lines(goals: Iterable[dict]) -> list[str]:
    """``Goal <what>: <value> -> met`` per goal (``goal``, ``value``, ``met``)."""
    return [f"Goal {g['goal']}: {fmt(g['value'], '.2f')} -> {'met' if g['met'] else 'NOT met'}" for g in goals]


def text_renderer(title: str, table: Callable[[dict], str]) -> Callable[[dict, object], None]:
    """A ``render(report, console)`` that prints the machine, ``title`` (formatted with the
    report's ``settings``), ``table(report)`` (Markdown text) and the goals."""

    def render(report: dict, console) -> None:
        print_machine(report, console)
        print_lines(console, [title.format(**report["settings"]), table(report)])
        print_lines(console, goal_lines(report.get("goals") or []))

    return render


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


def save_text(text: str, path: str | os.PathLike) -> Path:
    from ..atomic import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# The benchmarks' command lines (argparse)


def int_list(text: str) -> list[int]:
    """``--sizes 256,1024``: positive integers, comma-separated (an argparse type)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def names(text: str, choices: Iterable[str], what: str) -> list[str]:
    """The comma-separated names in ``text``; :class:`ValueError` naming the choices when one is
    unknown or there is none."""
    choices = list(choices)
    chosen = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in chosen if n not in choices]
    if unknown or not chosen:
        raise ValueError(f"unknown {what}(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(choices)}")
    return chosen


def add_common_arguments(
    parser: argparse.ArgumentParser, *, quick: str, size: int | None = None, loops: Sequence[str] = ()
) -> None:
    """The options every benchmark script takes (``quick``: what ``--quick`` runs), and
    ``--size`` (given its default) and ``--loops`` (given the loops) for those that have them."""
    if size is not None:
        parser.add_argument("--size", type=int, help=f"generator size (default {size})")
    if loops:
        parser.add_argument("--loops", default=",".join(loops), help=f"{','.join(loops)} (default all)")
    parser.add_argument("--backend", help="compute backend (default: $ESSENCEKIT_BACKEND or the best available)")
    parser.add_argument("--max-channels", type=int, metavar="N", help="cap every feature width (smoke tests)")
    parser.add_argument("--quick", action="store_true", help=f"a short smoke run: {quick}")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default 0)")
    parser.add_argument("--timeout", type=float, metavar="SECONDS", help="give up on a worker process after this")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write every figure to this JSON file")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table as Markdown to this file")
    parser.add_argument("--worker", metavar="SPEC", help=argparse.SUPPRESS)


def options(args: argparse.Namespace, quick: dict, defaults: dict) -> dict:
    """Each option of ``defaults`` as given on the command line, else its ``--quick`` value (with
    ``--quick``), else its default."""
    chosen = quick if args.quick else {}
    return {name: getattr(args, name) or chosen.get(name, default) for name, default in defaults.items()}


def command_line(
    args: argparse.Namespace,
    *,
    worker: Callable[[dict], dict],
    run: Callable[[Callable[[str], None]], dict],
    render: Callable[[dict, object], None],
    markdown: Callable[[dict], str] | None = None,
) -> int:
    """The body of a benchmark script's ``main``; returns the exit status.

    With ``--worker SPEC`` runs ``worker`` on the spec (a worker process). Otherwise calls
    ``run(progress)`` for the report (progress lines go to stderr; a :class:`ValueError` or
    :class:`~essencekit.errors.EssencekitError` is a one-line error, status 2), prints it with
    ``render(report, console)`` on stdout, writes ``--json`` and ``--markdown``, and returns 1
    when a case failed.
    """
    if args.worker:
        return measure.worker_main(args.worker, worker)
    from rich.console import Console

    from ..errors import EssencekitError

    out, err = wide(Console()), Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        report = run(lambda message: err.print(message, markup=False))
    except (EssencekitError, ValueError) as error:
        err.print(f"error: {error}", markup=False)
        return 2
    render(report, out)
    if args.json:
        err.print(f"figures written to {save_json(report, args.json)}", markup=False)
    if args.markdown and markdown is not None:
        err.print(f"Markdown table written to {save_text(markdown(report), args.markdown)}", markup=False)
    return 1 if failed(report["results"]) else 0
