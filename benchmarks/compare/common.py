"""What the comparison benchmarks share beyond :mod:`essencekit.bench` (which ``essencekit
bench`` ships): their worker processes, ratio cells, Markdown tables, and the command-line
plumbing of the ``benchmarks/*.py`` scripts.

Importing this module imports neither torch nor Rich; the functions that draw import Rich.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from essencekit.atomic import atomic_path
from essencekit.bench import measure
from essencekit.bench.report import fmt, print_lines, print_machine, save_json, wide
from essencekit.hugepages import HUGE_PAGES_ENV

# Where the ``compare`` package is importable from: the worker processes need it on their path.
BENCHMARKS = Path(__file__).resolve().parent.parent

# A reference loop's worker process uses torch's CPU allocator as the reference implementation
# does: without the transparent huge pages that importing essencekit asks for.
REFERENCE_PROCESS_ENV = {HUGE_PAGES_ENV: "0"}

# A table column: (header, "left" | "right").
Column = tuple[str, str]


def worker_env(loop: str) -> dict[str, str]:
    """The environment settings of a worker that runs ``loop`` (see :func:`worker_runner`)."""
    return dict(REFERENCE_PROCESS_ENV) if loop == "reference" else {}


def worker_runner(module: str, timeout: float | None = None) -> Callable[[dict, str], dict]:
    """Runs each spec in a fresh ``python -m module --worker`` process (``module`` in this
    package), wherever the benchmark was started from."""
    path = os.pathsep.join(p for p in (str(BENCHMARKS), os.environ.get("PYTHONPATH")) if p)
    return measure.worker_runner(module, timeout, env={"PYTHONPATH": path})


# --------------------------------------------------------------------------------------------
# Cells and tables


def ratio(value: float | None) -> str:
    """A speed ratio: ``2.38x``, or ``-``."""
    return fmt(value, ".2f", "x")


def failed(rows: Iterable[dict]) -> bool:
    return any(r.get("error") for r in rows)


def markdown(columns: Sequence[Column], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table; a row with fewer cells than columns is padded with blank cells."""

    def line(cells: Sequence[str]) -> str:
        cells = list(cells) + [""] * (len(columns) - len(cells))
        return "|" + "|".join(f" {c} " if c else " " for c in cells) + "|"

    lines = [line([h for h, _ in columns]), line(["---:" if j == "right" else "---" for _, j in columns])]
    lines.extend(line(cells) for cells in rows)
    return "\n".join(lines) + "\n"


def text_renderer(title: str, table: Callable[[dict], str]) -> Callable[[dict, object], None]:
    """A ``render(report, console)`` that prints the machine, ``title`` (formatted with the
    report's ``settings``) and ``table(report)`` (Markdown text)."""

    def render(report: dict, console) -> None:
        print_machine(report, console)
        print_lines(console, [title.format(**report["settings"]), table(report)])

    return render


def save_text(text: str, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


# --------------------------------------------------------------------------------------------
# The scripts' command lines (argparse)


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

    from essencekit.errors import EssencekitError

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


def loops_command(
    build_parser: Callable[[], argparse.ArgumentParser],
    benchmark: Callable[..., dict],
    worker: Callable[[dict], dict],
    subprocess_runner: Callable[[float | None], Callable[[dict, str], dict]],
    *,
    render: Callable[[dict, object], None],
    markdown: Callable[[dict], str],
    loops: Sequence[str],
    quick: dict,
    defaults: dict,
    settings: Sequence[str] = (),
) -> Callable[..., int]:
    """The ``main(argv=None, *, runner=None)`` of a benchmark with ``--loops`` (see
    :func:`command_line`): ``benchmark`` gets the options of ``defaults`` (see :func:`options`),
    the chosen ``loops``, the backend, the seed, ``runner`` (default: worker processes), the
    progress callback, and the options named in ``settings`` as given."""

    def main(argv: Sequence[str] | None = None, *, runner: Callable[[dict, str], dict] | None = None) -> int:
        args = build_parser().parse_args(argv)

        def run(progress: Callable[[str], None]) -> dict:
            return benchmark(
                **options(args, quick, defaults), loops=names(args.loops, loops, "loop"), backend=args.backend,
                seed=args.seed, runner=runner or subprocess_runner(args.timeout), progress=progress,
                **{name: getattr(args, name) for name in settings},
            )

        return command_line(args, worker=worker, run=run, render=render, markdown=markdown)

    return main
