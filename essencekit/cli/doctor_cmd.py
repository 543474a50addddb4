"""``essencekit doctor``: check the installation and say what to fix."""

from __future__ import annotations

import typer
from rich.markup import escape

from .options import Json, add_command, exit_statuses
from .output import out, print_json

_STYLES = {"ok": "green", "info": "dim", "warn": "yellow", "error": "bold red"}


EXIT_STATUSES = exit_statuses(
    "when `essencekit transfer photos/ --essence joker` can run (warnings alone, a read-only cache among them, "
    "exit 0)",
    "when it cannot (its weights not verified, no face aligner: each ERROR line names its fix) or something "
    "required is broken (no usable backend, a cache folder that cannot be created, a corrupt weight file, a "
    "missing dependency)",
)


def doctor(json_: Json = False):
    """Check Python, torch, open_clip, backends, the cache, weights and plugins."""
    from ..doctor import report

    result = report()
    if json_:
        print_json(result)
    else:
        section = None
        for check in result["checks"]:
            if check["section"] != section:
                section = check["section"]
                out.print(f"[bold]{section}[/bold]")
            status = check["status"]
            label = f"[{_STYLES[status]}]{status.upper() if status == 'error' else status:<5}[/]"
            out.print(f"  {label} {escape(check['name'])}: {escape(check['detail'])}", highlight=False)
        verdict = "[green]ready[/green]" if result["ok"] else "[red]not ready (each ERROR line says what to do)[/red]"
        out.print(f"\n{verdict}")
    if not result["ok"]:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    add_command(app, "doctor", doctor, EXIT_STATUSES)
