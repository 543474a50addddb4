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


def test_weights_verified_then_corrupted_turn_doctor_red(capsys, tmp_path, register_plugin):
    import hashlib
    import os

    import essencekit
    from essencekit.cache import resolve_artifact
    from essencekit.pull import pull

    payload = b"weights " * 1000
    digest = hashlib.sha256(payload).hexdigest()

    class Toy:
        @essencekit.hookimpl
        def register_weights(self, register):
            register(essencekit.WeightArtifact(
                name="toy-gen", kind="generator", filename="toy.pt", urls=("http://127.0.0.1:9/toy.pt",),
                sha256=digest, size=len(payload), license="MIT", description="a toy", group="faces"))

    register_plugin(Toy(), "toy")
    code, out = _doctor(capsys, "--json")
    assert _checks(out)[1][("weights", "toy-gen")]["status"] == "warn"  # essential and missing

    source = tmp_path / "from"
    source.mkdir()
    (source / "toy.pt").write_bytes(payload)
    pull(["toy-gen"], from_dir=source)
    code, out = _doctor(capsys, "--json")
    check = _checks(out)[1][("weights", "toy-gen")]
    assert code == 0 and check["status"] == "ok" and check["detail"].startswith("verified")

    cached = resolve_artifact("toy-gen")
    cached.write_bytes(payload[:-1] + b"X")  # same size, one byte flipped
    os.utime(cached, ns=(0, 0))  # a changed mtime makes doctor re-hash
    code, out = _doctor(capsys, "--json")
    check = _checks(out)[1][("weights", "toy-gen")]
    assert code == 1 and check["status"] == "error" and "--repair" in check["detail"]
