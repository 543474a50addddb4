"""The ``essencekit`` command line: a thin layer over the Python API.

Exit codes scripts can rely on: 0 success, 1 an error (one line on stderr), 2 a usage error,
130 interrupted (Ctrl-C). Results go to stdout, progress and logs to stderr.
"""

from __future__ import annotations

import importlib
import os
import sys

import click
import typer
from rich.markup import escape

from ..errors import EssencekitError
from .output import err

# Typer >= 0.17 vendors Click; usage errors derive from its ClickException, not click's
_USAGE_ERRORS = tuple({click.ClickException, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})
_EXITS = tuple({click.exceptions.Exit, typer.Exit})
_ABORTS = tuple({click.exceptions.Abort, typer.Abort, KeyboardInterrupt})

# each module adds its command(s) through register(app)
COMMAND_MODULES = (
    "essencekit.cli.pull_weights",
    "essencekit.cli.plugins_cmd",
    "essencekit.cli.doctor_cmd",
    "essencekit.cli.extract_cmd",
    "essencekit.cli.essence_cmd",
    "essencekit.cli.transfer_cmd", "essencekit.cli.invert_cmd",
    "essencekit.cli.bench_cmd",
    "essencekit.cli.evaluate_cmd",
)

HELP_OPTION_NAMES = ["-h", "--help"]

HELP = """Image-based CLIP-guided essence transfer (TargetCLIP) for StyleGAN2 faces.

Start with `essencekit pull-weights`, then `essencekit extract TARGET.jpg -o my.pt`
and `essencekit transfer photos/ --essence my.pt`. `essencekit doctor` checks the setup."""


def build_app() -> typer.Typer:
    """The Typer app with the built-in commands and every plugin's commands."""
    app = typer.Typer(
        name="essencekit",
        help=HELP,
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        add_completion=False,
        context_settings={"help_option_names": HELP_OPTION_NAMES},
    )

    def _print_version(value: bool):
        if value:
            from .. import __version__

            typer.echo(f"essencekit {__version__}")
            raise typer.Exit()

    @app.callback()
    def _root(
        version: bool = typer.Option(
            False, "--version", help="Print the version and exit.", is_eager=True, callback=_print_version
        ),
    ):
        pass

    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name != module_name:  # a missing dependency, not a missing command
                raise
            continue
        module.register(app)

    from ..plugins import add_commands

    add_commands(app)
    return app


def hide_flag_types(command) -> None:
    """Show flags without a type in ``--help`` (Typer 0.29 prints ``<bool>`` beside each, though
    a flag takes no value), in ``command`` and every subcommand, the help option included."""
    for sub in getattr(command, "commands", {}).values():
        hide_flag_types(sub)
    params = list(getattr(command, "params", []))
    try:  # the help option is made on demand; a Typer without it just keeps its type column
        params.append(command.get_help_option(command.context_class(command, help_option_names=HELP_OPTION_NAMES)))
    except Exception:  # noqa: BLE001 - cosmetic only, never worth failing the command for
        pass
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""


def _run(args: list[str] | None) -> int:
    command = typer.main.get_command(build_app())
    hide_flag_types(command)
    try:
        result = command.main(args=args, prog_name="essencekit", standalone_mode=False)
    except _EXITS as exit_:
        result = exit_.exit_code
    except _USAGE_ERRORS as error:  # usage errors: Click's own message and hint
        error.show()
        return error.exit_code
    except _ABORTS:
        err.print("[yellow]Interrupted.[/yellow]")
        return 130
    except EssencekitError as error:
        err.print(f"[red]Error:[/red] {escape(str(error))}", highlight=False)
        return 1
    except MemoryError:
        err.print("[red]Error:[/red] out of memory; try a smaller --batch-size or another backend")
        return 1
    except OSError as error:
        # full disks and permission problems surface here; name the file when we know it
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        err.print(f"[red]Error:[/red] {escape(str(error.strerror or error))}{escape(where)}", highlight=False)
        return 1
    code = result if isinstance(result, int) else 0
    if code == 130:  # newer Typers turn Ctrl-C into an exit code themselves
        err.print("[yellow]Interrupted.[/yellow]")
    return code


def main(args: list[str] | None = None) -> None:
    """Console-script entry point."""
    if os.environ.get("ESSENCEKIT_DEBUG"):
        # for bug reports: let unexpected exceptions show their traceback
        sys.exit(_run(args))
    try:
        code = _run(args)
    except Exception as error:  # noqa: BLE001 - the last line of defence against tracebacks
        err.print(
            f"[red]Internal error:[/red] {type(error).__name__}: {escape(str(error))}. "
            "Rerun with ESSENCEKIT_DEBUG=1 for the traceback and report it.",
            highlight=False,
        )
        code = 1
    sys.exit(code)
