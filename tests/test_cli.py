"""The command line's contract: exit codes, one-line errors, stdout vs stderr."""

from __future__ import annotations

import pytest

import essencekit
from essencekit.cli import main


def _run(args, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    captured = capsys.readouterr()
    return exit_.value.code, captured.out, captured.err


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


def test_no_arguments_shows_help_and_exits_2(capsys):
    code, out, err = _run([], capsys)
    assert code == 2
    assert "Usage: essencekit" in out + err and "plugins" in out + err


def test_version(capsys):
    code, out, _ = _run(["--version"], capsys)
    assert code == 0 and out.strip() == f"essencekit {essencekit.__version__}"


def test_usage_errors_exit_2(capsys):
    code, _, err = _run(["no-such-command"], capsys)
    assert code == 2 and "No such command" in err
    code, _, err = _run(["plugins", "--no-such-option"], capsys)
    assert code == 2 and "No such option" in err


def test_user_errors_are_one_line_on_stderr_with_exit_1(failing_commands, capsys):
    code, out, err = _run(["fail"], capsys)
    assert code == 1 and out == ""
    # the message is printed verbatim (brackets are not eaten as markup), on one line
    assert err == "Error: weights [stylegan2-ffhq] not found: run `essencekit pull-weights`\n"


def test_ctrl_c_exits_130(failing_commands, capsys):
    code, _, err = _run(["interrupt"], capsys)
    assert code == 130 and "Interrupted" in err and "Traceback" not in err


def test_unexpected_errors_never_show_a_traceback(failing_commands, capsys):
    code, _, err = _run(["crash"], capsys)
    assert code == 1 and "Traceback" not in err
    assert "Internal error: ZeroDivisionError: division by zero" in err and "ESSENCEKIT_DEBUG=1" in err


def test_a_full_disk_is_one_clear_line(failing_commands, capsys):
    code, _, err = _run(["disk-full"], capsys)
    assert code == 1 and err.strip() == "Error: No space left on device (/tmp/out.png)"


@pytest.mark.parametrize("command", [[], ["plugins"], ["transfer"], ["extract"], ["evaluate"], ["bench"]])
def test_help_shows_flags_without_a_type(capsys, command):
    # Typer 0.29 prints "<bool>" beside every flag, which reads as if the flag took a value.
    code, out, _ = _run([*command, "--help"], capsys)
    assert code == 0 and "--help" in out
    assert "<bool>" not in out
    if command not in ([], ["plugins"]):  # options that take values keep their types
        assert "<str>" in out or "<int" in out
