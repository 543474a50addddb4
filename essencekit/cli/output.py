"""Where the command line writes: results to stdout, progress and logs to stderr."""

from __future__ import annotations

import json
import sys
from typing import Iterable

from rich.console import Console

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def print_json(data) -> None:
    """Write ``data`` as indented JSON to stdout, unstyled so scripts can parse it."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


class ResultTable:
    """Rows of results (cells are Rich markup) that stay readable at any width, 80 columns
    included: a table while every word fits in its column (cells wrap at spaces; columns in
    ``whole``, the names people type, are not wrapped), else stacked: each row's first cell on
    a line, then its other cells as ``column: value; ...`` wrapped below it. Never a cell cut
    to "…": a cut licence or name hides what the reader came for."""

    def __init__(self, title: str, columns: Iterable[str], *, whole: Iterable[str] = ()):
        self.title = title
        self.columns = list(columns)
        self.whole = set(whole)
        self.rows: list[tuple[str, ...]] = []

    def add_row(self, *cells: str) -> None:
        self.rows.append(tuple(str(cell) for cell in cells))

    def _table(self):
        from rich import box
        from rich.table import Table

        # a light frame and one space of padding (plus the divider): the width goes to the text
        table = Table(title=self.title, title_justify="left", box=box.SIMPLE_HEAD, show_edge=False,
                      padding=(0, 1, 0, 0))
        for column in self.columns:
            table.add_column(column, overflow="fold", no_wrap=column in self.whole)
        for row in self.rows:
            table.add_row(*row)
        return table

    def _widths(self, console, options, table) -> list[int] | None:
        """Column widths that break no word within ``options.max_width``, or ``None``. Rich
        itself narrows the widest columns below their longest word, splitting "non-commercial"
        while a short column keeps spare room; here every column gets its longest word (its
        whole text in ``whole`` columns) and the rest of the width goes where text is longer."""
        from rich.measure import Measurement

        unbounded = options.update_width(1 << 16)  # natural sizes, not clipped to the screen

        def measure(renderable):
            return Measurement.get(console, unbounded, renderable)

        lows, highs = [], []
        for index, column in enumerate(self.columns):
            sizes = [measure(console.render_str(cell, highlight=False))
                     for cell in [column, *(row[index] for row in self.rows)]]
            high = max(size.maximum for size in sizes)
            lows.append(high if column in self.whole else max(size.minimum for size in sizes))
            highs.append(high)
        # what the frame and the cell padding take: the table at its widest, less its text
        room = options.max_width - (measure(table).maximum - sum(highs))
        if sum(lows) > room:
            return None
        if sum(highs) <= room:
            return highs
        spare, slack = room - sum(lows), sum(highs) - sum(lows)
        return [low + spare * (high - low) // slack for low, high in zip(lows, highs)]

    def __rich_console__(self, console, options):
        from rich.padding import Padding

        table = self._table()
        widths = self._widths(console, options, table)
        if widths is not None:
            for column, width in zip(table.columns, widths):
                column.width = width
            yield table
            return
        def wrapped(content: str, **kwargs):
            text = console.render_str(content, highlight=False, **kwargs)
            text.no_wrap, text.overflow = False, "fold"  # wrapped even on a soft-wrapping console
            return text

        yield wrapped(self.title, style="table.title", markup=False)
        for row in self.rows:
            yield wrapped(row[0], style="bold")
            details = "; ".join(f"{column}: {cell}" for column, cell in zip(self.columns[1:], row[1:]) if cell)
            yield Padding(wrapped(details), (0, 0, 0, 2), expand=False)


def progress_enabled(quiet: bool = False) -> bool:
    """Progress bars only for a person watching: not with --quiet, not when stderr is piped."""
    return not quiet and err.is_terminal
