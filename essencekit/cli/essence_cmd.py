"""``essencekit info`` and ``essencekit export``: look into and convert essence files."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from .options import Json, Overwrite, add_command
from .output import out, print_json, print_note

_SHOWN_FIRST = (
    "name", "kind", "format_version", "latent_space", "direction_shape", "direction_norm", "recommended_strength",
    "coefficients", "generator", "generator_sha256", "clip_model", "clip_input", "target_file", "target_sha256",
    "target_text", "target", "seed", "loss", "transfer_loss", "consistency_loss", "held_out_loss", "chosen_restart", "selection",
)


def _text(value) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list) and value and all(isinstance(v, float) for v in value):
        return "[" + ", ".join(f"{v:.4g}" for v in value) + "]"
    if isinstance(value, (list, dict)):
        import json

        return json.dumps(value)
    return str(value)


def info(
    essence: str = typer.Argument(
        ..., metavar="ESSENCE",
        help="An essence file (.pt, .safetensors or TargetCLIP .npy) or a published essence name (joker, ...).",
    ),
    json_: Json = False,
):
    """Show an essence's metadata: how it was made, its losses and recommended strength."""
    from ..essence import load_essence
    from ..essence_mix import resolve_essence

    path, _ = resolve_essence(essence)  # as `transfer --essence` does: a file, else a published name
    data = load_essence(path).info()
    data = {"file": str(path), **data}
    if json_:
        print_json(data)
        return
    keys = ["file"] + [k for k in _SHOWN_FIRST if k in data]
    keys += sorted(k for k in data if k not in keys and k != "restarts")
    width = max(len(k) for k in keys)
    for key in keys:
        out.print(f"[bold]{escape(key.ljust(width))}[/bold]  {escape(_text(data[key]))}", highlight=False)
    restarts = data.get("restarts")
    if isinstance(restarts, list) and restarts:
        from rich.table import Table

        table = Table(title="Restarts", title_justify="left")
        columns = [c for c in ("restart", "init", "best_step", "loss", "transfer", "consistency", "held_out_loss",
                               "strength", "chosen") if any(c in r for r in restarts)]
        for column in columns:
            table.add_column(column)
        for row in restarts:
            cells = []
            for column in columns:
                value = row.get(column, "")
                if column == "chosen":
                    value = "yes" if value else ""
                elif isinstance(value, float):
                    value = f"{value:.4f}"
                cells.append(escape(_text(value)))
            table.add_row(*cells)
        out.print(table)


def export(
    essence: str = typer.Argument(..., metavar="ESSENCE", help="The essence file (or published name) to convert."),
    output: Path = typer.Argument(..., metavar="OUT", help="Where to write: .npy (TargetCLIP), .pt or .safetensors."),
    overwrite: Overwrite = False,
):
    """Write an essence in another format; OUT.npy is the published TargetCLIP format ((1, 18, 512) float32)."""
    from ..atomic import check_output_file
    from ..errors import EssencekitError, OptionError
    from ..essence import SUFFIXES, load_essence
    from ..essence_mix import resolve_essence

    if output.suffix.lower() not in SUFFIXES:
        raise OptionError(
            f"unknown essence format {output.suffix!r} for {output}; use one of {', '.join(SUFFIXES)}",
            parameter="output",
        )
    check_output_file(output)  # before reading the essence, which may mean a download
    if output.exists() and not overwrite:
        raise EssencekitError(f"{output} already exists; pass --overwrite to replace it")
    loaded = load_essence(resolve_essence(essence)[0])
    loaded.save(output)
    if output.suffix.lower() == ".npy" and loaded.metadata:
        message = f"{output} holds only the direction: the .npy format has no metadata"
        strength = loaded.recommended_strength
        if strength != 1.0:
            # a .npy is read back at strength 1.0: say so, or the edit silently changes strength
            message += (
                f"; the recommended strength ({strength:g}) is lost, and later uses of {output.name} default to "
                f"strength 1.0 unless you pass --strength {strength:g}"
            )
        print_note(message)
    out.print(f"wrote {escape(str(output))}", highlight=False)


def register(app: typer.Typer) -> None:
    add_command(app, "info", info)
    add_command(app, "export", export)
