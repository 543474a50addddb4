"""``essencekit pull-weights``: fetch, import, verify and list the weight cache.

A thin layer over :mod:`essencekit.pull`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..errors import EssencekitError
from .options import CacheDir, Json, add_command, exit_statuses
from .output import ResultTable, err, human_size, out, print_error, print_json, print_note, progress_enabled

HELP = """Download the model weights and published essences, verified by sha256.

With no NAME, fetches the `faces` group (what transfer and extract need). NAME is an artifact
(`joker`, `clip-rn50`, ...) or a group (`faces`, `essences`, `metrics`, `clip-mirrors`). When
every OpenAI URL of a CLIP model fails, its Hugging Face copy (`clip-vit-b-32-hf`, trusted on
first use) is pulled instead, and says so. Offline, copy the files into a folder and use
`--from FOLDER`; `--mirror URL` (or ESSENCEKIT_MIRROR) tries your own mirror first
(URL/<file name>); ESSENCEKIT_OFFLINE=1 forbids network access, HF_HUB_OFFLINE=1 access to
Hugging Face. Each retry is said on stderr; ESSENCEKIT_CONNECT_TIMEOUT and
ESSENCEKIT_READ_TIMEOUT (seconds) set the network timeouts."""


class _RichProgress:
    """One Rich progress bar per file (size, speed, ETA), on stderr."""

    def __init__(self, progress):
        self._progress = progress
        self._task = None

    def start(self, label: str, total: int | None, completed: int = 0) -> None:
        if self._task is None:
            self._task = self._progress.add_task(label, total=total, completed=completed)
        else:
            self._progress.reset(self._task, total=total, completed=completed, description=label)

    def update(self, completed: int) -> None:
        if self._task is not None:
            self._progress.update(self._task, completed=completed)

    def finish(self) -> None:
        if self._task is not None:
            self._progress.stop_task(self._task)
            self._task = None


class _HashProgress(_RichProgress):
    """A Rich bar while ``--verify`` re-hashes a large file (removed when the file is done:
    small files would only flicker)."""

    MIN_SIZE = 64 * 1000 * 1000

    def start(self, label: str, total: int | None, completed: int = 0) -> None:
        self.finish()
        if total is not None and total >= self.MIN_SIZE:
            self._task = self._progress.add_task(label, total=total, completed=completed)

    def finish(self) -> None:
        if self._task is not None:
            self._progress.remove_task(self._task)
            self._task = None
            refresh = getattr(self._progress, "refresh", None)
            if refresh is not None:
                refresh()  # drop the bar now, before the result line is printed


def _make_progress():
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


def _say(line: str, progress_cm=None) -> None:
    """Print a result line on stdout. While progress bars are live on a terminal that stdout
    shares, print it through the bars' console instead, so it lands above them rather than
    inside the bar line (Rich consoles write past Live's stdout redirection)."""
    if progress_cm is not None and out.is_terminal:
        progress_cm.console.print(line, highlight=False)
    else:
        out.print(line, highlight=False)


def _list(names: list[str], as_json: bool) -> None:
    from .. import cache
    from ..pull import list_artifacts

    rows = list_artifacts(names)
    if as_json:
        print_json({"cache_dir": str(cache.cache_root()), "artifacts": rows})
        return
    from ..weights import license_summary

    # the names are what users type: never cut them; the license text may wrap
    table = ResultTable(f"Weights (cache: {cache.cache_root()})",
                        ("name", "group", "kind", "size", "status", "license"), whole=("name", "size"))
    styles = {"verified": "green", "missing": "dim", "unverified": "yellow", "corrupt": "red", "outdated": "red"}
    for row in rows:
        license_text = license_summary(row["license"])
        if row["license_must_accept"]:
            license_text = ("accepted: " if row["license_accepted"] else "must accept: ") + license_text
        status = row["status"] + (" (pinned on first use)" if row["pinned"] == "first-use" else "")
        style = styles.get(row["status"], "")
        if row["status"] == "missing" and row["provided_by"]:
            status, style = f"via {row['provided_by']}", "green"  # its fallback stands in for it
        table.add_row(
            escape(row["name"]), escape(row["group"]), row["kind"], human_size(row["size"]),
            f"[{style}]{escape(status)}[/]", escape(license_text),
        )
    out.print(table)


def _licenses_accepted(pending, accept_flag: bool) -> bool:
    """Show each license that must be accepted; accept with the flag, or ask a person."""
    for artifact in pending:
        err.print(f"[bold]{escape(artifact.name)}[/bold] ({escape(artifact.description)}) is licensed as:")
        err.print(f"  {escape(artifact.license)}", highlight=False)
    if accept_flag:
        err.print("Accepted with --accept-licenses (remembered in the cache).")
        return True
    if not sys.stdin.isatty():
        return False
    return typer.confirm("Do you accept these license terms?", default=False, err=True)


def pull_weights(
    names: Optional[list[str]] = typer.Argument(None, metavar="NAME", help="Artifacts or groups (default: faces)."),
    all_: bool = typer.Option(False, "--all", help="Every registered artifact."),
    list_: bool = typer.Option(
        False, "--list", help="List the artifacts, their size, license and cache status (as JSON with --json)."
    ),
    json_: Json = False,
    verify_: bool = typer.Option(False, "--verify", help="Re-hash the cached files and report bad ones."),
    repair: bool = typer.Option(False, "--repair", help="With --verify: fetch bad files again (implies --verify)."),
    from_dir: Optional[Path] = typer.Option(
        None, "--from", metavar="DIR", help="Import files copied by hand into DIR (no network; checked by sha256).",
        file_okay=False, dir_okay=True,
    ),
    link: bool = typer.Option(False, "--link", help="With --from: hard-link instead of copying when possible."),
    mirror: Optional[list[str]] = typer.Option(
        None, "--mirror", metavar="URL", help="Try URL/<file name> first (repeatable; also ESSENCEKIT_MIRROR).",
    ),
    accept_licenses: bool = typer.Option(False, "--accept-licenses", help="Accept the licenses that require it."),
    cache_dir: CacheDir = None,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or per-file lines."),
):
    names = list(names or [])
    if json_ and not list_:
        raise typer.BadParameter("--json works with --list", param_hint="--json")
    if all_ and names:
        raise typer.BadParameter("give NAMEs or --all, not both", param_hint="--all")
    if list_ and (verify_ or repair or from_dir or mirror):
        raise typer.BadParameter("--list cannot be combined with --verify, --repair, --from or --mirror",
                                 param_hint="--list")
    if from_dir is not None and mirror:  # --from means no network
        raise typer.BadParameter("--from imports local files; it cannot be combined with --mirror",
                                 param_hint="--from")
    if link and from_dir is None:
        raise typer.BadParameter("--link works with --from", param_hint="--link")
    verify_ = verify_ or repair

    from .. import cache

    try:
        with cache.using_cache_root(cache_dir):
            if list_:
                _list(names, json_)
                return
            if verify_:
                code = _verify(names, all_, repair, quiet, from_dir, link, mirror)
            else:
                code = _pull(names, all_, accept_licenses, from_dir, link, mirror, quiet)
    except EssencekitError as error:
        print_error(str(error))
        raise typer.Exit(1) from None
    if code:
        raise typer.Exit(code)


def _result_line(result) -> str:
    via = f" as its fallback {escape(result.via)}" if result.via else ""
    if result.action == "present":
        return f"[green]ok[/green] {escape(result.name)}: already in the cache{via} ({escape(str(result.path))})"
    verb = {"verified": "found in the cache"}.get(result.action, result.action)
    checked = "sha256 pinned on first use" if result.pinned_now else "sha256 verified"
    return (f"[green]ok[/green] {escape(result.name)}: {verb}{via}, {checked}, {human_size(result.size)} -> "
            f"{escape(str(result.path))}")


def _pull(names, all_, accept_licenses, from_dir, link, mirror, quiet) -> int:
    from .. import pull

    show_progress = progress_enabled(quiet)
    progress_cm = _make_progress() if show_progress else None
    failures = []

    def on_result(result) -> None:
        if result.ok:
            if not quiet:
                _say(_result_line(result), progress_cm)
        else:
            failures.append(result)
            print_error(f"{result.name}: {result.message}")

    # licenses first, before any progress display takes the terminal
    pending = pull.licenses_to_accept(pull.select(names, all=all_))
    if pending:
        if _licenses_accepted(pending, accept_licenses):
            pull.accept_licenses(pending)
        else:
            raise pull.license_error(pending, shown=True)  # the terms were just printed: one short line

    kwargs = dict(
        from_dir=from_dir, link=link, mirrors=list(mirror) if mirror else None,
        notify=print_note, on_result=on_result,
    )
    try:
        if progress_cm is not None:
            with progress_cm:
                pull.pull(names, all=all_, progress=_RichProgress(progress_cm), **kwargs)
        else:
            pull.pull(names, all=all_, **kwargs)
    except pull.PullFailed:
        return 1  # each failure was printed as it happened
    return 0 if not failures else 1


def _verify(names, all_, repair, quiet, from_dir, link, mirror) -> int:
    from .. import pull

    counts: dict[str, int] = {}
    bad = []
    styles = {"verified": "green", "missing": "dim"}
    progress_cm = _make_progress() if progress_enabled(quiet) else None

    def on_result(result) -> None:
        counts[result.state] = counts.get(result.state, 0) + 1
        if not result.ok:
            bad.append(result)
        if result.ok and (quiet or (result.state == "missing" and not names)):
            return  # a full check lists what is there; missing ones are counted below
        style = styles.get(result.state, "red")
        detail = f": {escape(result.message)}" if result.message else ""
        line = f"[{style}]{result.state}[/{style}] {escape(result.name)}{detail}"
        if result.ok:
            _say(line, progress_cm)
        else:
            err.print(line, highlight=False)

    options = dict(
        on_result=on_result, from_dir=from_dir, link=link, mirrors=list(mirror) if mirror else pull.env_mirrors(),
        notify=print_note,  # retries during --repair: through the console, so they land above the bars
    )
    if progress_cm is not None:
        with progress_cm:
            pull.verify(names, all=all_ or not names, repair=repair, progress=_RichProgress(progress_cm),
                        hash_progress=_HashProgress(progress_cm), **options)
    else:
        pull.verify(names, all=all_ or not names, repair=repair, **options)
    if not quiet:
        summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        err.print(f"checked {sum(counts.values())} artifact(s): {summary}", highlight=False)
    if bad and not repair:
        print_error(f"{len(bad)} cached file(s) failed verification; run `essencekit pull-weights --verify --repair`")
    elif bad:
        print_error(f"{len(bad)} cached file(s) could not be repaired")
    return 1 if bad else 0


def register(app: typer.Typer) -> None:
    """Add ``pull-weights`` to the ``essencekit`` app."""
    add_command(app, "pull-weights", pull_weights, exit_statuses(
        error="on a failure (one line per problem on stderr)",
        stopped="a partial download is kept, and the next run resumes it",
    ), help=HELP, no_args_is_help=False)
