"""``essencekit doctor``: a report people and scripts can act on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import essencekit
from essencekit.cli import main

JOB_FIX = "essencekit pull-weights e4e-ffhq joker"


def _doctor(capsys, *args):
    with pytest.raises(SystemExit) as exit_:
        main(["doctor", *args])
    return exit_.value.code, capsys.readouterr().out


def _checks(out):
    report = json.loads(out)
    return report, {(c["section"], c["name"]): c for c in report["checks"]}


def _place_verified(name: str) -> Path:
    """Leave artifact ``name`` in the cache as pull-weights does: a ready file and the record
    that vouches for it (a small stand-in: doctor reads the record, not the model)."""
    from essencekit import cache

    artifact = cache.get_artifact(name)
    folder = cache.artifact_dir(artifact)
    folder.mkdir(parents=True, exist_ok=True)
    ready = folder / f"{artifact.filename}.ready"
    ready.write_bytes(b"stand-in " * 100)
    stat = ready.stat()
    cache.write_record(cache.CacheRecord(
        name, ready.name, "0" * 64, stat.st_size, stat.st_mtime_ns, artifact.sha256, artifact.size or stat.st_size,
        "test", "registry", artifact.convert,
    ))
    return ready


class _AnyFace(essencekit.Aligner):
    """A face aligner that is always usable, so these tests do not depend on dlib."""

    name = "test-any-face"

    def detect(self, image):
        return []


@pytest.fixture
def job_ready(register_plugin):
    """What `essencekit transfer photos/ --essence joker` needs: e4e-ffhq, joker, an aligner."""

    class AnyFace:
        @essencekit.hookimpl
        def register_aligners(self, register):
            register(_AnyFace())

    register_plugin(AnyFace(), "test-any-face")
    for name in ("e4e-ffhq", "joker"):
        _place_verified(name)


def test_a_healthy_installation_exits_0_and_names_versions(capsys, job_ready):
    code, out = _doctor(capsys, "--json")
    report, checks = _checks(out)
    assert code == 0 and report["ok"] is True
    assert checks[("environment", "torch")]["status"] == "ok"
    assert checks[("backends", "cpu")]["status"] == "ok"
    assert checks[("backends", "selected")]["detail"].startswith(("cpu", "cuda", "mps"))
    assert checks[("backends", "cpu")]["detail"] == "cpu, autocast float32"  # probed here, not by `plugins`
    assert checks[("cache", "folder")]["detail"] == os.environ["ESSENCEKIT_HOME"]
    assert checks[("main job", "essencekit transfer photos/ --essence joker")]["status"] == "ok"


def test_an_empty_cache_is_not_ready_and_names_the_command_that_fixes_it(capsys):
    # the quick start's transfer cannot run without the e4e weights and the essence
    code, out = _doctor(capsys, "--json")
    report, checks = _checks(out)
    assert code == 1 and report["ok"] is False
    assert checks[("main job", "e4e-ffhq")]["status"] == "error"
    assert checks[("main job", "joker")]["detail"] == "not downloaded: run `essencekit pull-weights joker`"
    job = checks[("main job", "essencekit transfer photos/ --essence joker")]
    assert job["status"] == "error" and job["detail"].endswith(f"run `{JOB_FIX}`")

    code, out = _doctor(capsys)
    assert code == 1 and JOB_FIX in out and out.rstrip().endswith("not ready (each ERROR line says what to do)")


def test_the_weights_section_agrees_with_the_main_job(capsys):
    # an empty cache: joker is not "optional" nor e4e-ffhq a mere warning while the job fails
    code, out = _doctor(capsys, "--json")
    _, checks = _checks(out)
    for name in ("e4e-ffhq", "joker"):
        weights, job = checks[("weights", name)], checks[("main job", name)]
        assert weights["status"] == job["status"] == "error", name
        assert "optional" not in weights["detail"] and "needed by the main job" in weights["detail"], name


def test_one_missing_weight_is_named_alone(capsys, job_ready):
    from essencekit import cache

    cache.resolve_artifact("joker").unlink()
    code, out = _doctor(capsys, "--json")
    _, checks = _checks(out)
    assert code == 1 and checks[("main job", "e4e-ffhq")]["status"] == "ok"
    assert checks[("main job", "essencekit transfer photos/ --essence joker")]["detail"].endswith(
        "run `essencekit pull-weights joker`")


def test_no_usable_face_aligner_is_an_error_with_the_install_command(capsys, mocker, job_ready):
    mocker.patch.object(_AnyFace, "availability", return_value=(False, "no faces today"))
    mocker.patch("essencekit_builtins.aligners.DlibAligner.availability", return_value=(False, "dlib is not installed"))
    mocker.patch("essencekit_builtins.aligners.MediaPipeAligner.availability", return_value=(False, "not installed"))
    code, out = _doctor(capsys, "--json")
    _, checks = _checks(out)
    assert code == 1
    aligner = checks[("main job", "face aligner")]
    assert aligner["status"] == "error" and "pip install dlib-bin" in aligner["detail"]


def test_a_read_only_cache_holding_the_weights_is_ready(capsys, mocker, job_ready):
    # a shared cache that an administrator filled: using it needs no write access. As root
    # the mode bits stop no write, so the writability probe is told what the mode says.
    root = Path(os.environ["ESSENCEKIT_HOME"])
    real_access = os.access
    mocker.patch("os.access", side_effect=lambda path, mode, *args, **kwargs: (
        False if mode & os.W_OK and Path(path) == root else real_access(path, mode, *args, **kwargs)))
    root.chmod(0o555)
    try:
        code, out = _doctor(capsys, "--json")
    finally:
        root.chmod(0o755)
    report, checks = _checks(out)
    assert code == 0 and report["ok"] is True
    folder = checks[("cache", "folder")]
    assert folder["status"] == "warn" and "read-only: its weights can be used" in folder["detail"]
    assert checks[("main job", "joker")]["status"] == "ok"


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


def test_plugin_problems_are_reported_as_warnings(capsys, register_plugin, job_ready):
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


def test_the_human_report_ends_with_a_verdict(capsys, job_ready):
    code, out = _doctor(capsys)
    assert code == 0
    assert out.splitlines()[0] == "environment" and out.rstrip().endswith("ready")


def test_weights_verified_then_corrupted_turn_doctor_red(capsys, tmp_path, register_plugin, job_ready):
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
