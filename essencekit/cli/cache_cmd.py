"""``essencekit cache``: see what the cache holds, remove a weight artifact, prune old W+ records.

A thin layer over :mod:`essencekit.cache_admin`.
"""

from __future__ import annotations

import datetime
import re
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from ..errors import EssencekitError
from .options import CacheDir, Json, add_command, command_help, exit_statuses
from .output import ResultTable, err, human_size, out, print_json

HELP = """Show and clean up the cache: downloaded weights, the W+ cache of transfer/invert, the aligned
photos of train-encoder and the FID features of evaluate's real images.

`essencekit cache list` shows what is there and its size; `essencekit cache remove NAME`
deletes one weight artifact (`pull-weights NAME` brings it back); `essencekit cache prune
--older-than YYYY-MM-DD` deletes W+ records, aligned training photos and FID features not used
since that day (each costs one new inversion, alignment or Inception pass if the image comes
back)."""

cache_app = typer.Typer(name="cache", help=command_help(HELP), no_args_is_help=True, add_completion=False)


def _root(cache_dir: Optional[Path]):
    from ..cache import using_cache_root

    return using_cache_root(cache_dir)


def list_(
    json_: Json = False,
    cache_dir: CacheDir = None,
):
    """List the weight artifacts and the per-image caches (W+, aligned photos, FID features), with their sizes."""
    from ..cache_admin import usage

    with _root(cache_dir):
        found = usage()
    if json_:
        print_json(found.to_dict())
        return
    if found.artifacts:
        table = ResultTable("Weights", ["name", "size", "files", "status", "fetched"], whole=["name"])
        for a in found.artifacts:
            status = a.status if a.registered else f"{a.status}, not registered"
            table.add_row(escape(a.name), human_size(a.size), str(a.files), escape(status), escape(a.fetched_at[:10]))
        out.print(table)
    if found.latents:
        table = ResultTable("W+ cache (transfer, invert)", ["recipe", "encoder", "aligner", "entries", "size", "last used", "oldest"])
        for group in found.latents:
            table.add_row(escape(group.recipe), escape(group.encoder), escape(group.aligner), str(group.entries),
                          human_size(group.size), group.last_used, group.oldest)
        out.print(table)
    if found.aligned:
        table = ResultTable("Aligned training photos (train-encoder)", ["recipe", "aligner", "entries", "size", "last used", "oldest"])
        for group in found.aligned:
            table.add_row(escape(group.recipe), escape(group.aligner), str(group.entries), human_size(group.size),
                          group.last_used, group.oldest)
        out.print(table)
    if found.features:
        table = ResultTable("FID features of real images (evaluate --fid)",
                            ["recipe", "inception", "entries", "size", "last used", "oldest"])
        for group in found.features:
            table.add_row(escape(group.recipe), escape(group.inception), str(group.entries), human_size(group.size),
                          group.last_used, group.oldest)
        out.print(table)
    if not (found.artifacts or found.latents or found.aligned or found.features):
        out.print(f"The cache {escape(str(found.root))} is empty.", highlight=False)
        return
    out.print(f"Total: {human_size(found.size)} in {escape(str(found.root))}", highlight=False)


def remove(
    name: str = typer.Argument(..., metavar="NAME", help="A weight artifact in the cache (see `essencekit cache list`)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_: Json = False,
    cache_dir: CacheDir = None,
):
    """Delete one weight artifact from the cache (`pull-weights NAME` fetches it again)."""
    from ..cache_admin import find_artifact, remove_artifact

    with _root(cache_dir):
        # measured once, for the question and the report (an unknown name is refused here)
        target = find_artifact(name)
        if not yes:
            if not sys.stdin.isatty():
                raise EssencekitError(f"removing {name} needs confirmation: pass --yes (no terminal to ask on)")
            if not typer.confirm(f"Remove {name} ({human_size(target.size)}, {target.path})?", default=False, err=True):
                err.print("Nothing removed.")
                raise typer.Exit(1)
        removed = remove_artifact(name, target)
    if json_:
        print_json({"removed": name, "path": str(removed.path), "size": removed.size, "files": removed.files})
    else:
        out.print(f"Removed {escape(name)} ({human_size(removed.size)}) from {escape(str(removed.path))}",
                  highlight=False)


def _date(value: str) -> datetime.date:
    # strptime, not date.fromisoformat: Python 3.11's also takes 20250131 or 2025-W05, 3.10's
    # does not, and the help promises one format everywhere
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
            raise ValueError(value)
        day = datetime.datetime.strptime(value, "%Y-%m-%d").date()
    except (TypeError, ValueError):
        raise typer.BadParameter(f"{value!r} is not a date; write it as YYYY-MM-DD, e.g. 2025-01-31") from None
    if day > datetime.date.today():
        # every record was last used before a future day: a typo here would empty the W+ cache
        raise typer.BadParameter(f"{value} is after today; give a day up to {datetime.date.today().isoformat()}")
    return day


def prune(
    older_than: str = typer.Option(
        ..., "--older-than", metavar="YYYY-MM-DD", callback=_date,
        help="Remove W+ records, aligned photos and FID features last used before this day (local time).",
    ),
    dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would be removed."),
    json_: Json = False,
    cache_dir: CacheDir = None,
):
    """Delete W+ cache records (transfer, invert), aligned training photos (train-encoder) and
    FID features of real images (evaluate --fid) not used since a date. Weights are kept."""
    from ..cache_admin import prune_aligned, prune_features, prune_latents

    with _root(cache_dir):
        result = prune_latents(older_than, dry_run=dry_run)
        aligned = prune_aligned(older_than, dry_run=dry_run)
        features = prune_features(older_than, dry_run=dry_run)
    if json_:
        print_json({**result.to_dict(), "aligned": aligned.to_dict(), "features": features.to_dict()})
        return
    verb = "Would remove" if dry_run else "Removed"
    parts = [f"{result.entries} W+ record(s) ({human_size(result.size)})"]
    if aligned.entries:
        parts.append(f"{aligned.entries} aligned photo(s) ({human_size(aligned.size)})")
    if features.entries:
        parts.append(f"the FID features of {features.entries} image(s) ({human_size(features.size)})")
    line = f"{verb} {', '.join(parts[:-1])} and {parts[-1]}" if len(parts) > 1 else f"{verb} {parts[0]}"
    out.print(f"{line} last used before {result.before}", highlight=False)


add_command(cache_app, "list", list_)
add_command(cache_app, "remove", remove, exit_statuses(error="on an error, or when the removal is declined"))
add_command(cache_app, "prune", prune)


def register(app: typer.Typer) -> None:
    app.add_typer(cache_app, name="cache")
