"""The command line's contract: exit codes, one-line errors, stdout vs stderr."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

import essencekit


@pytest.fixture
def failing_commands(register_plugin):
    class Failing:
        @essencekit.hookimpl
        def register_commands(self, app):
            @app.command("fail")
            def fail():
                raise essencekit.EssencekitError("weights [stylegan2-ffhq] not found: run `essencekit pull-weights`")

            @app.command("interrupt")
            def interrupt():
                raise KeyboardInterrupt

            @app.command("crash")
            def crash():
                raise ZeroDivisionError("division by zero")

            @app.command("disk-full")
            def disk_full():
                raise OSError(28, "No space left on device", "/tmp/out.png")

    register_plugin(Failing(), "failing")


def test_no_arguments_shows_help_and_exits_2(capsys, cli):
    code, out, err = cli([])
    assert code == 2
    assert "Usage: essencekit" in out + err and "plugins" in out + err


def test_version(capsys, cli):
    code, out, _ = cli(["--version"])
    assert code == 0 and out.strip() == f"essencekit {essencekit.__version__}"


def test_usage_errors_exit_2(capsys, cli):
    code, _, err = cli(["no-such-command"])
    assert code == 2 and "No such command" in err
    code, _, err = cli(["plugins", "--no-such-option"])
    assert code == 2 and "No such option" in err


def test_user_errors_are_one_line_on_stderr_with_exit_1(failing_commands, capsys, cli):
    code, out, err = cli(["fail"])
    assert code == 1 and out == ""
    # the message is printed verbatim (brackets are not eaten as markup), on one line
    assert err == "Error: weights [stylegan2-ffhq] not found: run `essencekit pull-weights`\n"


def test_ctrl_c_exits_130(failing_commands, capsys, cli):
    code, _, err = cli(["interrupt"])
    assert code == 130 and "Interrupted" in err and "Traceback" not in err


def test_unexpected_errors_never_show_a_traceback(failing_commands, capsys, cli):
    code, _, err = cli(["crash"])
    assert code == 1 and "Traceback" not in err
    assert "Internal error: ZeroDivisionError: division by zero" in err and "ESSENCEKIT_DEBUG=1" in err


def test_a_full_disk_is_one_clear_line(failing_commands, capsys, cli):
    code, _, err = cli(["disk-full"])
    assert code == 1 and err.strip() == "Error: No space left on device (/tmp/out.png)"


@pytest.fixture
def refusing_command(register_plugin):
    """A plugin's command whose library refuses the value of its parameter ``--refuse NAME``."""
    import typer

    from essencekit.errors import OptionError

    class Refusing:
        @essencekit.hookimpl
        def register_commands(self, app):
            @app.command("refuse")
            def refuse(
                refuse: str = typer.Option(...),
                steps: int = typer.Option(1, "--steps", "-n"),
                format_: str = typer.Option("png", "--format"),
                no_cache: bool = typer.Option(False, "--no-cache"),
            ):
                raise OptionError(f"{refuse} cannot be that", parameter=refuse)

    register_plugin(Refusing(), "refusing")


@pytest.mark.parametrize(("parameter", "flag"), [
    ("steps", "'--steps' / '-n'"),  # named as it is
    ("format", "'--format'"),  # the command's Python name keeps a keyword free: format_
    ("cache", "'--no-cache'"),  # a flag that turns the parameter off
])
def test_a_refused_value_is_a_usage_error_naming_the_flag(refusing_command, capsys, parameter, flag, cli):
    code, out, err = cli(["refuse", "--refuse", parameter])
    assert code == 2 and out == ""
    assert f"Error: Invalid value for {flag}: {parameter} cannot be that" in err
    assert "Usage: essencekit refuse" in err and "Traceback" not in err


def test_a_refused_value_without_a_flag_is_still_a_usage_error(refusing_command, capsys, cli):
    code, _, err = cli(["refuse", "--refuse", "workers"])
    assert code == 2 and "Error: Invalid value: workers cannot be that" in err


@pytest.mark.parametrize("command", [[], ["plugins"], ["transfer"], ["extract"], ["evaluate"], ["bench"]])
def test_help_shows_flags_without_a_type(capsys, command, cli):
    # Typer 0.29 prints "<bool>" beside every flag, which reads as if the flag took a value.
    code, out, _ = cli([*command, "--help"])
    assert code == 0 and "--help" in out
    assert "<bool>" not in out
    if command not in ([], ["plugins"]):  # options that take values keep their types
        assert "<str>" in out or "<int" in out


# --------------------------------------------------------------------------- shell completion


def test_help_offers_shell_completion(capsys, cli):
    code, out, _ = cli(["--help"])
    assert code == 0 and "--install-completion" in out and "--show-completion" in out


def test_show_completion_prints_a_script_for_the_shell_in_SHELL(capsys, monkeypatch, cli):
    # where no parent process is a shell (an IDE, docker exec), $SHELL says which one
    import shellingham

    def no_shell_among_the_parents(*args, **kwargs):
        raise shellingham.ShellDetectionFailure()

    monkeypatch.setattr(shellingham, "detect_shell", no_shell_among_the_parents)
    monkeypatch.setenv("SHELL", "/bin/bash")
    code, out, err = cli(["--show-completion"])
    assert code == 0, err
    assert "_essencekit_completion()" in out and "_ESSENCEKIT_COMPLETE=complete_bash" in out


# --------------------------------------------------------------------------- 80 columns


def _help_commands():
    import typer

    from essencekit.cli import build_app

    command = typer.main.get_command(build_app())
    return [[]] + [[name] for name in command.commands] + [
        [name, sub] for name, group in command.commands.items() for sub in getattr(group, "commands", {})
    ]


@pytest.mark.parametrize("command", _help_commands(), ids=lambda c: " ".join(c) or "essencekit")
def test_help_reads_plainly_at_80_columns(capsys, monkeypatch, command, cli):
    # no Typer internals (<list[str]>, [[NAME]...]..., {SRC}...), no text cut to "…"
    monkeypatch.setenv("COLUMNS", "80")
    code, out, _ = cli([*command, "--help"])
    assert code == 0
    assert max(len(line) for line in out.splitlines()) <= 80
    for internal in ("<list[", "[[", "]...]", "…"):
        assert internal not in out, f"{internal!r} in essencekit {' '.join(command)} --help"
    usage = next(line for line in out.splitlines() if "Usage:" in line)
    assert "{" not in usage


@pytest.mark.parametrize("command", _help_commands(), ids=lambda c: " ".join(c) or "essencekit")
def test_help_lists_the_exit_statuses(capsys, command, cli):
    code, out, _ = cli([*command, "--help"])
    text = " ".join(out.replace("│", " ").split())  # the words, whatever the width wrapped
    assert code == 0 and "Exit status: 0 " in text
    for status in ("; 1 ", "; 2 on a usage error", "130 when interrupted", "143 when terminated"):
        assert status in text, f"{status!r} not in essencekit {' '.join(command)} --help"


# flags that mean a different thing in each command that has them: what -o writes, which
# essences, strengths and sources, which CLIP model, which seed
_OWN_MEANING = {"--output", "--essence", "--strength", "--sources", "--clip", "--clip-weights", "--seed", "--json"}
# a flag that means something else in one command: train-encoder's steps, learning rate and
# batch (targets per process) are the training's; extract's --encoder is also the essence
# encoder of --method encoder; evaluate's --no-cache also skips the FID feature cache
_OWN_MEANING_IN = {("train-encoder", flag) for flag in ("--steps", "--lr", "--lambda-consistency", "--batch-size")}
_OWN_MEANING_IN.add(("evaluate", "--no-cache"))
_OWN_MEANING_IN |= {("extract", "--encoder"), ("extract", "--steps"), ("extract", "--lr"),
                    ("extract", "--lambda-consistency")}


def test_an_option_several_commands_share_reads_the_same_in_each():
    import typer

    from essencekit.cli import build_app

    seen: dict[str, tuple[str, str]] = {}
    root = typer.main.get_command(build_app())
    commands = [(name, c) for name, c in root.commands.items() if not hasattr(c, "commands")]
    commands += [(f"{name} {sub}", c) for name, group in root.commands.items()
                 for sub, c in getattr(group, "commands", {}).items()]
    for name, command in commands:
        for param in command.params:
            flag = max(getattr(param, "opts", []), key=len, default=None)
            if flag is None or not flag.startswith("-") or flag in _OWN_MEANING or flag.endswith("-completion"):
                continue
            if (name, flag) in _OWN_MEANING_IN:
                continue
            declared = (param.help, param.metavar)
            first = seen.setdefault(flag, (name, declared))
            assert first[1] == declared, f"{flag} of {name} differs from {first[0]}'s: {declared} != {first[1]}"
    assert {"--backend", "--encoder", "--batch-size", "--max-pixels", "--cache-dir", "--overwrite"} <= set(seen)


def test_json_means_the_same_in_every_command():
    # transfer and invert print a line a result as they go; every other --json the one result
    import typer

    from essencekit.cli import build_app

    root = typer.main.get_command(build_app())
    commands = [*root.commands.values(), *root.commands["cache"].commands.values()]
    helps = {p.help for c in commands for p in getattr(c, "params", []) if "--json" in getattr(p, "opts", [])}
    assert len(helps) == 2


def test_sizes_are_si_in_every_table(capsys, cli):
    code, out, _ = cli(["plugins"])
    assert code == 0 and " kB" in out and " KB" not in out  # as pull-weights --list and cache list


def test_argument_help_names_the_values(capsys, monkeypatch, cli):
    monkeypatch.setenv("COLUMNS", "80")
    _, out, _ = cli(["pull-weights", "--help"])
    assert "Usage: essencekit pull-weights [OPTIONS] [NAME]..." in out
    _, out, _ = cli(["transfer", "--help"])
    assert "Usage: essencekit transfer [OPTIONS] SRC..." in out and "<str>..." in out


@pytest.mark.parametrize("args", [["plugins"], ["pull-weights", "--list"]])
def test_tables_cut_no_cell_at_80_columns(args):
    # a separate process, so that its consoles take their width from COLUMNS as a terminal's
    # would; at 80 columns `plugins` shows both layouts: tables, and the weights stacked
    from essencekit.plugins import registered

    result = subprocess.run([sys.executable, "-m", "essencekit", *args], capture_output=True, text=True,
                            env={**os.environ, "COLUMNS": "80"}, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 80
    words = [word.rstrip(";") for word in out.split()]  # the stacked layout separates cells by "; "
    for name in registered("weights"):
        assert name in words  # whole, on one line
    # the licences are whole words too ("non-commer…" before)
    assert words.count("non-commercial") >= 2 and "License-NC," in words


# --------------------------------------------------------------------------- SIGTERM

_SLOW_WRITER = """
import sys, time
import essencekit
from essencekit import plugins
from essencekit.atomic import atomic_path
from essencekit.cli import main


class Slow:
    @essencekit.hookimpl
    def register_commands(self, app):
        @app.command("slow-write")
        def slow_write(path: str):
            with atomic_path(path) as tmp:
                tmp.write_bytes(b"half of it")
                print("writing", flush=True)
                time.sleep(60)


plugins.register_plugin(Slow(), "slow")
main(["slow-write", sys.argv[1]])
"""


def test_sigterm_cleans_up_like_ctrl_c_and_exits_143(tmp_path):
    target = tmp_path / "out" / "result.bin"
    process = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(target)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline() == "writing\n"
        assert [p.suffix for p in target.parent.iterdir()] == [".tmp"]  # the write is under way
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 143
    assert err.strip() == "Terminated."
    assert list(target.parent.iterdir()) == []  # no .tmp left, and no half-written result
