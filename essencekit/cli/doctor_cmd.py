"""``essencekit doctor``: check the installation and say what to fix."""

from __future__ import annotations

import typer
from rich.markup import escape

from .output import out, print_json

_STYLES = {"ok": "green", "info": "dim", "warn": "yellow", "error": "bold red"}


def doctor(json_: bool = typer.Option(False, "--json", help="Print machine-readable JSON.")):
    """Check Python, torch, open_clip, backends, the cache, weights and plugins.

    Exits with status 1 unless `essencekit transfer photos/ --essence joker` can run (its
    weights verified, a face aligner installed; each ERROR line names its fix) and when
    something required is broken (no usable backend, a cache folder that cannot be created, a
    corrupt weight file, a missing dependency). Warnings alone, a read-only cache among them,
    exit 0.
    """
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
    app.command("doctor")(doctor)
