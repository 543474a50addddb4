"""Where the command line writes: results to stdout, progress and logs to stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

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


def print_note(message: str) -> None:
    """A notice from the library as it works (its ``notify`` callback: a fallback used, a
    weight converted), in yellow on stderr."""
    err.print(f"[yellow]{escape(message)}[/yellow]", highlight=False)


def print_log(line: str) -> None:
    """A plain progress line on stderr (``bench``, written where no bar fits)."""
    err.print(escape(line), highlight=False)


def print_error(message: str) -> None:
    """The one line of an error, on stderr."""
    err.print(f"[red]Error:[/red] {escape(message)}", highlight=False)


def human_size(n: int | None) -> str:
    """``n`` bytes in SI units (kB, MB, GB: as disks and downloads count), ``?`` when unknown."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


def progress_bar(*columns):
    """A Rich progress bar on stderr: the task, the bar, done of total, then ``columns``, the
    elapsed time and the ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), *columns, TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=False,
    )


class RunDisplay:
    """Progress on stderr (a Rich bar for a person at a terminal), failures as they happen, one
    JSON line per result with ``--json``, and the summary at the end. ``quiet``: show nothing
    (the ranks of a torchrun job other than rank 0, which shows the job's)."""

    def __init__(self, total: int, verb: str, json_lines: bool, quiet: bool = False):
        self.total, self.verb, self.json_lines, self.quiet = total, verb, json_lines, quiet
        self.counts = {"written": 0, "skipped": 0, "failed": 0, "done": 0}
        self.failures: list[tuple[str, str]] = []
        self.inputs_done = 0
        self.faces = 0
        self.started = time.perf_counter()
        self.progress = None
        self.task = None

    def __enter__(self):
        if progress_enabled(self.quiet):
            from rich.progress import TextColumn

            self.progress = progress_bar(TextColumn("images"), TextColumn("{task.fields[rate]}"))
            self.progress.__enter__()
            self.task = self.progress.add_task(self.verb, total=self.total, rate="")
        return self

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)

    def add(self, result) -> None:
        from . import in_flags

        result.reason = in_flags(result.reason)  # a hint naming a parameter names the flag instead
        self.counts[result.status] = self.counts.get(result.status, 0) + 1
        if self.json_lines:
            sys.stdout.write(json.dumps(result.to_json()) + "\n")
            sys.stdout.flush()
        if result.status == "failed":
            self.failures.append((result.source, result.reason))
            err.print(f"[yellow]failed[/yellow] {escape(result.reason)}", highlight=False)
        for note in result.notes if result.last else ():
            err.print(f"[dim]{escape(result.source)}: skipped a face: {escape(note)}[/dim]", highlight=False)
        if result.last:
            self.inputs_done += 1
            self.faces += result.faces if result.status != "failed" else 0

    def advance(self, inputs: int, faces: int) -> None:
        """The bar at ``inputs`` sources done, ``faces`` faces (the run's count: the whole
        job's, in a torchrun job)."""
        if self.progress is not None:
            elapsed = max(time.perf_counter() - self.started, 1e-9)
            self.progress.update(self.task, completed=inputs, rate=f"{faces / elapsed:.2f} faces/s")

    def summary(self, output: Path | None, what: str, interrupted: bool = False) -> None:
        from rich.table import Table

        console = err if self.json_lines else out
        seconds = time.perf_counter() - self.started
        line = (
            f"{self.inputs_done} of {self.total} inputs, {self.faces} faces in {seconds:.1f} s: "
            f"{self.counts['written']} {what} written" + (f" to {output}" if output is not None else "")
            + f", {self.counts['skipped']} skipped (already there), {self.counts['failed']} failed"
        )
        console.print(escape(line), highlight=False)
        if self.failures:
            table = Table(title="Failed inputs", title_justify="left")
            table.add_column("input", overflow="fold")
            table.add_column("reason", overflow="fold")
            for source, reason in self.failures:
                table.add_row(escape(source), escape(reason.removeprefix(f"{source}: ")))
            console.print(table)
        if interrupted:
            err.print("[yellow]Interrupted: the files written so far are complete; rerun with --skip-existing to "
                      "resume.[/yellow]")


def run_with_display(run, verb: str, what: str, output: Path | None, json_lines: bool) -> None:
    """Consume ``run`` under a :class:`RunDisplay`; exits 1 when an input failed, 130 on Ctrl-C.
    In a torchrun job rank 0 shows the job's progress, results and summary and exits with the
    job's status; the other ranks show nothing and exit 0 once their share is done."""
    display = RunDisplay(run.total, verb, json_lines, quiet=not run.is_main)
    run.progress = display.advance
    try:
        with display:
            for result in run.results():
                display.add(result)
    except KeyboardInterrupt:
        if run.is_main:
            display.summary(output, what, interrupted=True)
        raise typer.Exit(130) from None
    if run.is_main:
        display.summary(output, what)
    if display.failures:
        raise typer.Exit(1)
