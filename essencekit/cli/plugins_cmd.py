"""``essencekit plugins``: what is installed and what each plugin registered."""

from __future__ import annotations

import typer
from rich.markup import escape

from .options import Json, add_command
from .output import ResultTable, err, human_size, out, print_json


def _table(title: str, columns: list[str], rows: list[list[str]]) -> ResultTable:
    result = ResultTable(title, columns, whole=("name",))
    for row in rows:
        result.add_row(*[escape(str(cell)) for cell in row])
    return result


def plugins(json_: Json = False):
    """List plugins, their hooks, and the backends, CLIP variants, weights and aligners they register.

    Backends are listed, not probed (that needs torch, seconds): `essencekit doctor` says which
    work here."""
    from ..inventory import plugins_report
    from ..weights import license_summary

    report = plugins_report()
    if json_:
        print_json(report)
        return
    out.print(_table(
        "Plugins", ["name", "kind", "hooks"],
        [[p["name"], "built-in" if p["builtin"] else (p["distribution"] or "third-party"), ", ".join(p["hooks"])]
         for p in report["plugins"]],
    ))
    out.print(_table(
        "Backends (which work here: essencekit doctor)", ["name", "priority", "description", "plugin"],
        [[b["name"], b["priority"], b["description"], b["plugin"]] for b in report["backends"]],
    ))
    out.print(_table(
        "CLIP variants", ["name", "weights", "plugin"],
        [[c["name"], c["weights"], c["plugin"]] for c in report["clip_models"]],
    ))
    out.print(_table(
        "Weight artifacts", ["name", "group", "kind", "size", "license", "plugin"],
        [[w["name"], w["group"], w["kind"], human_size(w["size"]),
          ("must accept: " if w["license_must_accept"] else "") + license_summary(w["license"]), w["plugin"]]
         for w in report["weights"]],
    ))
    if report["aligners"]:
        out.print(_table(
            "Face aligners", ["name", "available", "reason", "plugin"],
            [[a["name"], "yes" if a["available"] else "no", a["reason"], a["plugin"]] for a in report["aligners"]],
        ))
    for error in report["errors"]:
        err.print(f"[yellow]plugin problem:[/yellow] {escape(error['plugin'])}: {escape(error['message'])}")


def register(app: typer.Typer) -> None:
    add_command(app, "plugins", plugins)
