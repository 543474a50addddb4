"""``essencekit doctor``: a report people and scripts can act on."""

from __future__ import annotations

import json

import pytest

from essencekit.cli import main


def _doctor(capsys, *args):
    with pytest.raises(SystemExit) as exit_:
        main(["doctor", *args])
    return exit_.value.code, capsys.readouterr().out


def _checks(out):
    report = json.loads(out)
    return report, {(c["section"], c["name"]): c for c in report["checks"]}


def test_a_healthy_installation_exits_0_and_names_versions(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("ESSENCEKIT_HOME", str(tmp_path / "home"))
    code, out = _doctor(capsys, "--json")
    report, checks = _checks(out)
    assert code == 0 and report["ok"] is True
    assert checks[("environment", "torch")]["status"] == "ok"
    assert checks[("backends", "cpu")]["status"] == "ok"
    assert checks[("backends", "selected")]["detail"].startswith(("cpu", "cuda", "mps"))
    assert checks[("cache", "folder")]["detail"] == str(tmp_path / "home")


def test_an_unwritable_cache_is_an_error(capsys, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ESSENCEKIT_HOME", str(blocker / "home"))
    code, out = _doctor(capsys, "--json")
    report, checks = _checks(out)
    assert code == 1 and report["ok"] is False
    assert checks[("cache", "folder")]["status"] == "error"
    assert "ESSENCEKIT_HOME" in checks[("cache", "folder")]["detail"]


def test_no_usable_backend_is_an_error(capsys, mocker):
    mocker.patch("essencekit_builtins.backends.CPUBackend.availability", return_value=(False, "broken"))
    mocker.patch("torch.cuda.is_available", return_value=False)
    mocker.patch("torch.backends.mps.is_available", return_value=False)
    code, out = _doctor(capsys, "--json")
    _, checks = _checks(out)
    assert code == 1 and checks[("backends", "selected")]["status"] == "error"


def test_plugin_problems_are_reported_as_warnings(capsys, register_plugin):
    import essencekit

    class Broken:
        @essencekit.hookimpl
        def register_weights(self, register):
            raise RuntimeError("registry offline")

    register_plugin(Broken(), "broken")
    code, out = _doctor(capsys, "--json")
    _, checks = _checks(out)
    assert code == 0
    assert checks[("plugins", "broken")] == {
        "section": "plugins", "name": "broken", "status": "warn",
        "detail": "register_weights failed: RuntimeError: registry offline",
    }


def test_the_human_report_ends_with_a_verdict(capsys):
    code, out = _doctor(capsys)
    assert code == 0
    assert out.splitlines()[0] == "environment" and out.rstrip().endswith("ready")
