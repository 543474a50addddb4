"""The ``essencekit`` command line: a thin layer over the Python API.

Exit codes scripts can rely on: 0 success, 1 an error (one line on stderr), 2 a usage error,
130 interrupted (Ctrl-C), 143 terminated (SIGTERM: ``kill``, a job scheduler, ``docker stop``).
Results go to stdout, progress and logs to stderr.
"""

from __future__ import annotations

import contextvars
import importlib
import os
import re
import signal
import sys

import click
import typer
from rich.markup import escape

from ..distributed import ReportedElsewhere, launch_environment
from ..errors import EssencekitError, Message, OptionError
from .options import command_help
from .output import err, print_error

# Typer >= 0.17 vendors Click; usage errors derive from its ClickException, not click's
_USAGE_ERRORS = tuple({click.ClickException, *(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")})
_EXITS = tuple({click.exceptions.Exit, typer.Exit})
_ABORTS = tuple({click.exceptions.Abort, typer.Abort, KeyboardInterrupt})

EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised wherever the program is. A KeyboardInterrupt, so that it unwinds exactly
    as Ctrl-C does: temporary files removed, a partial download kept for resuming, extract's
    best essence so far saved. Without it SIGTERM kills the process on the spot and leaves
    ``.tmp`` files behind."""


_terminated = False


def _on_sigterm(signum, frame):
    global _terminated
    _terminated = True
    # a second SIGTERM (the cleanup hangs) kills at once, as the default handler would
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    raise Terminated()


def _interrupted() -> int:
    """The line and exit status of a run cut short by Ctrl-C or SIGTERM."""
    if _terminated:
        err.print("[yellow]Terminated.[/yellow]")
        return EXIT_TERMINATED
    err.print("[yellow]Interrupted.[/yellow]")
    return EXIT_INTERRUPTED


# each module adds its command(s) through register(app)
COMMAND_MODULES = (
    "essencekit.cli.pull_weights_cmd",
    "essencekit.cli.cache_cmd",
    "essencekit.cli.plugins_cmd",
    "essencekit.cli.doctor_cmd",
    "essencekit.cli.extract_cmd",
    "essencekit.cli.train_encoder_cmd",
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
        help=command_help(HELP),
        no_args_is_help=True,
        pretty_exceptions_show_locals=False,
        add_completion=True,  # --install-completion, --show-completion (docs/guide.md)
        context_settings={"help_option_names": HELP_OPTION_NAMES},
    )

    def _print_version(value: bool):
        if value:
            from ..version import __version__

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


_LIST_TYPE = re.compile(r"<list\[(.*)\]>")


def _element_type(param, display):
    """``<list[str]>`` -> ``<str>...`` for an argument that takes several values (``<str>`` for
    a repeatable option: each use takes one)."""
    several = "..." if param.nargs != 1 else ""

    def shown(ctx):
        text = display(ctx)
        return _LIST_TYPE.sub(rf"<\1>{several}", text) if text else text

    return shown


def _usage_name(param):
    """``SRC...`` and ``[NAME]...`` in the usage line, where Typer 0.29 writes ``{SRC}...``
    (braces read as a set of choices) and a metavar of its own is wrapped again."""

    def shown():
        name = param.metavar or param.name.upper()
        name = name if param.required else f"[{name}]"
        return name + ("..." if param.nargs != 1 else "")

    return shown


def tidy_help(command) -> None:
    """Make ``--help`` read as a person expects, in ``command`` and every subcommand: flags
    without a type (Typer 0.29 prints ``<bool>`` beside each, though a flag takes no value, the
    help option's included), ``<str>...`` rather than ``<list[str]>`` for an argument taking
    several values, and ``SRC...`` in the usage line. Only Typer's display methods are replaced, on each parameter,
    where this Typer has them; parsing is untouched."""
    for sub in getattr(command, "commands", {}).values():
        tidy_help(sub)
    params = list(getattr(command, "params", []))
    try:  # the help option is made on demand; a Typer without it just keeps its type column
        params.append(command.get_help_option(command.context_class(command, help_option_names=HELP_OPTION_NAMES)))
    except Exception:  # noqa: BLE001 - cosmetic only, never worth failing the command for
        pass
    for param in params:
        if getattr(param, "is_flag", False) and getattr(param, "metavar", "") is None:
            param.metavar = ""
        if hasattr(param, "display_type_rich"):
            param.display_type_rich = _element_type(param, param.display_type_rich)
        if hasattr(param, "_usage_display_name"):  # Typer's arguments
            param._usage_display_name = _usage_name(param)


def _detected_shell() -> str | None:
    try:
        import shellingham  # what Typer itself detects the shell with

        return shellingham.detect_shell()[0]
    except Exception:  # noqa: BLE001 - not installed, or no shell among the parent processes
        return None


def shell_from_environment(command) -> None:
    """``--install-completion`` and ``--show-completion`` find the shell among the parent
    processes; where none is a shell (an IDE, ``docker exec``, a CI step) Typer gives up with
    "Shell  not supported". Fall back to ``$SHELL`` there."""

    def with_fallback(callback):
        def run(ctx, param, value):
            if value is True and _detected_shell() is None:
                value = os.path.basename(os.environ.get("SHELL", "")) or value
            return callback(ctx, param, value)

        return run

    for param in getattr(command, "params", []):
        if param.name in ("install_completion", "show_completion") and param.callback is not None:
            param.callback = with_fallback(param.callback)


# the innermost command being invoked, for in_flags (Typer's vendored Click keeps its own
# context stack, out of reach of click.get_current_context)
_running: contextvars.ContextVar = contextvars.ContextVar("essencekit_command", default=None)

# library parameters whose option the commands name otherwise (the API's device= is --backend)
_ALIASES = {"device": ("backend",)}


def _flag_of(command, parameter: str):
    """The option or argument of ``command`` that feeds the library's ``parameter``: named as it
    is, with the ``_`` that keeps a Python keyword free (``format_``), or negated (``no_cache``
    for ``cache``), or as :data:`_ALIASES` says. ``None`` when the command has none."""
    names = (parameter, f"{parameter}_", f"no_{parameter}", *_ALIASES.get(parameter, ()))
    return next((param for param in command.params if param.name in names), None)


def _flag_name(command, parameter: str) -> str:
    """How a user of ``command`` sets ``parameter``: its flag (``--overwrite``), else the name."""
    param = _flag_of(command, parameter) if command is not None else None
    flags = [opt for opt in getattr(param, "opts", ()) if opt.startswith("--")]
    return flags[0] if flags else parameter


def in_flags(text: str, command=None) -> str:
    """``text`` with the parameters a :class:`~essencekit.errors.Message` mentions named as
    ``command``'s flags (the command being run by default): the library speaks Python names,
    a CLI user can only type flags."""
    if not isinstance(text, Message):
        return text
    command = command if command is not None else _running.get()
    return text.render(lambda parameter: _flag_name(command, parameter))


def option_errors_as_usage_errors(command) -> None:
    """Make an :class:`OptionError` from ``command`` or any subcommand a usage error that names
    the flag (``Invalid value for '--steps': steps must be at least 1, got 0``, exit 2): the
    library names its parameter, the command line knows which flag set it. Every command, a
    plugin's included, gets this, as Click treats a value it refuses itself."""
    for sub in getattr(command, "commands", {}).values():
        option_errors_as_usage_errors(sub)
    invoke = command.invoke

    def run(ctx):
        token = _running.set(command)
        try:
            return invoke(ctx)
        except OptionError as error:
            raise typer.BadParameter(in_flags(str(error), command), ctx=ctx, param=_flag_of(command, error.parameter)) from None
        except ReportedElsewhere:  # rank 0 renders and prints it: stays quiet, whatever it mentions
            raise
        except EssencekitError as error:
            message = str(error)
            if not isinstance(message, Message):
                raise
            # rendered here, while the command is known: _run prints str(error) as it is
            raise EssencekitError(in_flags(message, command)) from error
        finally:
            _running.reset(token)

    command.invoke = run


def _rank_label() -> str:
    """``rank N: `` in a torchrun job's ranks other than 0, whose own errors need saying whose
    they are; empty in rank 0 and in a single process."""
    try:
        launch = launch_environment()
    except EssencekitError:  # inconsistent variables: the command reports that itself
        return ""
    return "" if launch.is_main else f"rank {launch.rank}: "


def _run(args: list[str] | None) -> int:
    command = typer.main.get_command(build_app())
    tidy_help(command)
    shell_from_environment(command)
    option_errors_as_usage_errors(command)
    try:
        result = command.main(args=args, prog_name="essencekit", standalone_mode=False)
    except _EXITS as exit_:
        result = exit_.exit_code
    except _USAGE_ERRORS as error:  # usage errors: Click's own message and hint
        if not _rank_label():  # every rank of a job parses the same command line: rank 0 says it
            error.show()
        return error.exit_code
    except _ABORTS:
        return _interrupted()
    except ReportedElsewhere:  # rank 0 of the job says it
        return 1
    except EssencekitError as error:
        print_error(_rank_label() + str(error))
        return 1
    except MemoryError:
        print_error("out of memory; try a smaller --batch-size or another backend")
        return 1
    except OSError as error:
        # full disks and permission problems surface here; name the file when we know it
        where = f" ({error.filename})" if getattr(error, "filename", None) else ""
        print_error(f"{error.strerror or error}{where}")
        return 1
    code = result if isinstance(result, int) else 0
    if code == EXIT_INTERRUPTED:  # newer Typers turn Ctrl-C into an exit code themselves
        return _interrupted()
    return code


def _catch_sigterm():
    """Install the SIGTERM handler; returns the one to restore (None where it cannot be set:
    outside the main thread, as when an application calls ``main`` from a worker)."""
    global _terminated
    _terminated = False
    try:
        return signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        return None


def main(args: list[str] | None = None) -> None:
    """Console-script entry point."""
    previous = _catch_sigterm()
    try:
        if os.environ.get("ESSENCEKIT_DEBUG"):
            # for bug reports: let unexpected exceptions show their traceback
            sys.exit(_run(args))
        try:
            code = _run(args)
        except KeyboardInterrupt:  # while the commands load, before Click handles it
            code = _interrupted()
        except Exception as error:  # noqa: BLE001 - the last line of defence against tracebacks
            err.print(
                f"[red]Internal error:[/red] {type(error).__name__}: {escape(str(error))}. "
                "Rerun with ESSENCEKIT_DEBUG=1 for the traceback and report it.",
                highlight=False,
            )
            code = 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    sys.exit(code)
