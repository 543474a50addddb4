"""What the commands share, declared once: the options several commands take (the same flag
reads the same in every ``--help`` and is checked the same way) and the help's paragraph of
exit statuses.

An option here is an ``Annotated`` type: a command writes ``backend: Backend = None``, and keeps
its own default where its default differs (``-o``). A command's Python parameter is named as
the library parameter it feeds (``inputs``, ``strengths``), a ``no_`` flag as the negation of
one (``no_cache`` for ``cache``): that is how the command line finds the flag to name when the
library refuses a value (:func:`essencekit.cli.option_errors_as_usage_errors`).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer


def _option(kind, *flags: str, **settings):
    """The type of a parameter that is the option ``flags``: ``kind``, with Typer's declaration."""
    return Annotated[kind, typer.Option(*flags, **settings)]


Backend = _option(
    Optional[str], "--backend", metavar="NAME",
    help="cpu, cuda, mps, cuda:1, a plugin's backend, or auto: $ESSENCEKIT_BACKEND, else the best available "
    "(the default).",
)
Encoder = _option(
    Optional[str], "--encoder", metavar="PATH_OR_ARTIFACT",
    help="e4e checkpoint that inverts the faces (default: e4e-ffhq).",
)
Generator = _option(
    Optional[str], "--generator", metavar="PATH_OR_ARTIFACT",
    help="StyleGAN2 checkpoint that synthesises the faces. Default: the encoder's embedded decoder, the "
    "generator e4e was trained to invert into (extract: stylegan2-ffhq).",
)
Aligner = _option(
    Optional[str], "--aligner", metavar="NAME",
    help="Face aligner: dlib, mediapipe or a plugin's (default: the best installed).",
)
# no min=1 here: the library checks the value and its message names the parameter
BatchSize = _option(
    Optional[int], "--batch-size", metavar="N",
    help="Images per model pass (default: as many as the backend's memory allows).",
)
MaxPixels = _option(
    Optional[int], "--max-pixels", metavar="N",
    help="Refuse images larger than N pixels, from their header, before decoding them (default: 50000000, "
    "50 megapixels: 8K frames and 50 MP phone photos fit; 0: no limit).",
)
ClipInput = _option(
    Literal["raw", "standard"], "--clip-input",
    help="How CLIP sees images: raw [-1, 1] pixels (the published essences' recipe) or CLIP's standard input.",
)
Faces = _option(Literal["largest", "all"], "--faces", help="The largest face of each photo, or all of them.")
NoAlign = _option(bool, "--no-align", help="The inputs are FFHQ-aligned face crops: no detection.")
NoCache = _option(bool, "--no-cache", help="Do not read or write the W+ cache.")
Recursive = _option(bool, "--recursive", "-r", help="Look into sub-folders (mirrored in -o).")
Overwrite = _option(bool, "--overwrite", help="Replace existing outputs.")
SkipExisting = _option(
    bool, "--skip-existing", help="Keep existing outputs and do the rest (resumes an interrupted run).",
)
OutputFolder = _option(Path, "-o", "--output", help="Output folder.")
CacheDir = _option(
    Optional[Path], "--cache-dir", metavar="DIR",
    help="Use DIR as the cache for this run (default: ESSENCEKIT_HOME, else the user cache folder).",
)
# --json means the same everywhere: the result for scripts, on stdout, instead of the text;
# transfer and invert give one line per result, as they go
Json = _option(bool, "--json", help="Print the result as JSON, for scripts, instead of the text.")
JsonLines = _option(bool, "--json", help="Print one JSON line per output or failed input.")


def exit_statuses(success: str = "on success", error: str = "on an error (one line on stderr)",
                  stopped: str = "") -> str:
    """The help's paragraph of exit statuses, the same in every command: a command says what
    0 and 1 mean for it, and what an interrupted run leaves behind (``stopped``)."""
    return (f"Exit status: 0 {success}; 1 {error}; 2 on a usage error (an unknown option or a bad option value); "
            "130 when interrupted (Ctrl-C) and 143 when terminated (SIGTERM)" + (f": {stopped}." if stopped else "."))


EXIT_STATUSES = exit_statuses()
# transfer and invert: what run_with_display (output.py) does with each input
EACH_INPUT_EXIT_STATUSES = exit_statuses(
    "when every input succeeded",
    "when any input failed (each failure is reported and the run goes on with the others) or on an error",
    "finished files stay, no partial file is left; rerun with --skip-existing to resume",
)


def command_help(doc: str | None, exits: str = EXIT_STATUSES) -> str:
    """A docstring (or help text) as Typer's help: paragraphs re-flowed (Rich keeps single line
    breaks, which break oddly at another width), then ``exits``, the exit statuses."""
    paragraphs = inspect.cleandoc(doc or "").split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in [*paragraphs, exits] if p.strip())


def add_command(app: typer.Typer, name: str, function, exits: str = EXIT_STATUSES, *, help: str | None = None,
                **settings) -> None:
    """Add ``function`` to ``app`` as the command ``name``; its help is ``help`` (else its
    docstring) and then ``exits``."""
    app.command(name, help=command_help(help or function.__doc__, exits), **settings)(function)
