"""pull-weights: the registry, the Python API, the cache, the conversions and the command,
against a real HTTP server on 127.0.0.1 (tests/http_server.py) and test-plugin artifacts."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
import typer
from http_server import closed_port_url, serve, serve_bytes, status
from typer.testing import CliRunner

import essencekit
from essencekit import WeightArtifact, cache, plugins, pull
from essencekit.cli.pull_weights import register
from essencekit.download import RetryPolicy
from essencekit.errors import EssencekitError

FIXTURES = Path(__file__).parent / "fixtures"
FAST = RetryPolicy(attempts=3, backoff=0, connect_timeout=2, read_timeout=2, chunk_size=16 * 1024, sleep=lambda s: None)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _WeightsPlugin:
    def __init__(self, artifacts):
        self.artifacts = artifacts

    @essencekit.hookimpl
    def register_weights(self, register):
        for artifact in self.artifacts:
            register(artifact)


@pytest.fixture
def server():
    with serve() as running:
        yield running


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch):
    from essencekit import download

    monkeypatch.setattr(download, "DEFAULT_POLICY", FAST)
    import essencekit.pull as pull_module

    monkeypatch.setattr(pull_module, "DEFAULT_POLICY", FAST)


@pytest.fixture
def add_artifacts():
    def add(*artifacts):
        plugins.register_plugin(_WeightsPlugin(list(artifacts)), f"test-weights-{id(artifacts)}")
        return artifacts

    yield add
    plugins.reset()


def make(name, urls, data=None, *, sha=True, size=True, group="test", kind="generator", **kw):
    return WeightArtifact(
        name=name, kind=kind, group=group, filename=kw.pop("filename", f"{name}.bin"),
        urls=tuple(urls), sha256=_sha(data) if sha and data is not None else None,
        size=len(data) if size and data is not None else None,
        license=kw.pop("license", "MIT: test data"), description=f"test artifact {name}", **kw,
    )


def cli(*args, env=None):
    app = typer.Typer()
    register(app)

    @app.callback()
    def _root():  # keep pull-weights a subcommand
        pass

    return CliRunner().invoke(app, ["pull-weights", *args], env=env)


DATA = os.urandom(100_000)


# --------------------------------------------------------------------------- the built-in registry


def _published_sums() -> dict[str, str]:
    sums = {}
    for line in (FIXTURES / "targetclip-SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        sums[name] = digest
    return sums


def test_builtin_registry_is_well_formed():
    registry = plugins.registered("weights")
    for name, artifact in registry.items():
        assert artifact.urls, name
        for url in artifact.urls:
            parts = urlsplit(url)
            assert parts.scheme == "https" and parts.netloc and parts.path.strip("/"), url
            assert not re.search(r"\s", url), url
        assert artifact.size is None or (isinstance(artifact.size, int) and artifact.size > 0), name
        assert artifact.sha256 is None or re.fullmatch(r"[0-9a-f]{64}", artifact.sha256), name
        assert artifact.license and artifact.description and artifact.source, name
    builtins = [a for a in registry.values() if plugins.owner_of("weights", a.name) == "essencekit_builtins.weights"]
    # every built-in is pinned: all published checksums were found
    assert all(a.sha256 for a in builtins)
    filenames = [a.filename for a in builtins]
    assert len(filenames) == len(set(filenames))


def test_builtin_artifacts_facts():
    registry = plugins.registered("weights")
    for name in ("stylegan2-ffhq", "e4e-ffhq", "clip-vit-b-32", "clip-rn50", "arcface-ir-se50", "celebs"):
        assert name in registry
    assert registry["stylegan2-ffhq"].size == 381_462_551
    assert registry["stylegan2-ffhq"].license_must_accept
    assert "non-commercial" in registry["stylegan2-ffhq"].license
    assert registry["e4e-ffhq"].license_must_accept
    assert registry["celebs"].sha256 == "394f0f166305654f49cd1b0cd3d4f2b7a51e740a449a1ebfa1c69f79d01399fa"
    for name in ("clip-vit-b-32", "clip-rn50"):
        artifact = registry[name]
        assert artifact.convert == "clip-torchscript"
        # OpenAI's URLs carry the file's sha256 as a path segment
        for url in artifact.urls:
            assert urlsplit(url).path.split("/")[-2] == artifact.sha256
    # stable mirrors before Google Drive
    for artifact in registry.values():
        drive = [i for i, u in enumerate(artifact.urls) if "google.com" in u]
        assert not drive or drive[0] == len(artifact.urls) - len(drive)


def test_every_published_essence_is_registered_with_its_published_checksum():
    sums = _published_sums()
    assert len(sums) == 19
    registry = plugins.registered("weights")
    essences = {n: a for n, a in registry.items() if a.group == "essences"}
    assert set(essences) == {name.removesuffix(".npy") for name in sums}
    for name, artifact in essences.items():
        assert artifact.sha256 == sums[f"{name}.npy"]
        assert artifact.filename == f"{name}.npy" and artifact.kind == "essence"
        assert artifact.convert == "essence-npy" and artifact.size == 36_992
        assert artifact.license.startswith("none published")
        assert any("hila-chefer/TargetCLIP" in u and u.endswith(f"/dirs/{name}.npy") for u in artifact.urls)


def test_groups_and_the_default_selection():
    groups = pull.groups()
    assert set(groups["faces"]) == {"stylegan2-ffhq", "e4e-ffhq", "clip-vit-b-32"}
    assert set(groups["metrics"]) == {"arcface-ir-se50", "clip-rn50", "celebs"}
    assert len(groups["essences"]) == 19
    assert [a.name for a in pull.select()] == groups["faces"]
    assert [a.name for a in pull.select(["joker", "metrics", "joker"])] == ["joker", *groups["metrics"]]
    assert len(pull.select(all=True)) == len(plugins.registered("weights"))
    with pytest.raises(EssencekitError, match=r"'jokr' \(did you mean joker\?\)"):
        pull.select(["jokr"])


# --------------------------------------------------------------------------- pull, cache, resolve


def test_pull_then_resolve_with_remembered_verification(server, add_artifacts, monkeypatch):
    url = server.route("/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("tiny", [url], DATA))

    with pytest.raises(EssencekitError) as missing:
        cache.resolve_artifact("tiny")
    assert "`essencekit pull-weights tiny`" in str(missing.value) and "--from FOLDER" in str(missing.value)

    (result,) = pull.pull(["tiny"])
    assert result.action == "downloaded" and result.size == len(DATA)
    path = cache.resolve_artifact("tiny")
    assert path == cache.artifact_dir("tiny") / "tiny.bin" and path.read_bytes() == DATA

    # verified once, then remembered by size and mtime: no re-hash
    hashed = []
    real = cache.sha256_file
    monkeypatch.setattr(cache, "sha256_file", lambda p, **k: hashed.append(p) or real(p, **k))
    assert cache.resolve_artifact("tiny") == path and hashed == []
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))  # touched, same bytes: re-hashed once
    assert cache.resolve_artifact("tiny") == path and len(hashed) == 1
    assert cache.resolve_artifact("tiny") == path and len(hashed) == 1

    # a second pull needs no network
    (again,) = pull.pull(["tiny"])
    assert again.action == "present" and len(server.requests_for("/tiny.bin")) == 1

    # corrupted in place (same size): refused with the exact fix
    path.write_bytes(bytes(reversed(DATA)))
    with pytest.raises(EssencekitError, match=r"corrupt.*`essencekit pull-weights tiny --repair`"):
        cache.resolve_artifact("tiny")


def test_a_corrupt_cached_file_is_fetched_again_by_a_plain_pull(server, add_artifacts):
    url = server.route("/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("tiny", [url], DATA))
    pull.pull(["tiny"])
    path = cache.resolve_artifact("tiny")
    path.write_bytes(b"junk")
    notes = []
    (result,) = pull.pull(["tiny"], notify=notes.append)
    assert result.action == "downloaded" and path.read_bytes() == DATA
    assert "corrupt" in notes[0]


def test_two_concurrent_pulls_of_the_same_artifact(server, add_artifacts):
    big = os.urandom(400_000)
    url = server.route("/big.bin", serve_bytes(big, chunk=16_384, chunk_delay=0.01))
    add_artifacts(make("big", [url], big))
    artifact = plugins.registered("weights")["big"]
    results, errors, notes = [], [], []

    def worker():
        try:
            results.append(pull.pull_artifact(artifact, policy=FAST, notify=notes.append))
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert sorted(r.action for r in results) == ["downloaded", "present"]
    assert len(server.requests_for("/big.bin")) == 1  # the second waited, then found it verified
    assert any("waiting for pid" in n for n in notes)
    assert cache.resolve_artifact("big").read_bytes() == big
    assert sorted(p.name for p in cache.artifact_dir("big").iterdir()) == [".lock", "big.bin", "record.json"]


def test_user_mirror_comes_first(server, add_artifacts, monkeypatch):
    origin = server.route("/origin/tiny.bin", serve_bytes(DATA))
    server.route("/mirror/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("tiny", [origin], DATA))
    (result,) = pull.pull(["tiny"], mirrors=[server.url("/mirror/")])
    assert result.source == server.url("/mirror/tiny.bin")
    assert server.requests_for("/origin/tiny.bin") == []

    # ESSENCEKIT_MIRROR, and a broken mirror falls through to the artifact's own URLs
    pull_again = server.route("/dead/tiny.bin", status(404))
    monkeypatch.setenv("ESSENCEKIT_MIRROR", pull_again.removesuffix("/tiny.bin"))
    (result,) = pull.pull(["tiny"], force=True)
    assert result.source == origin and len(server.requests_for("/dead/tiny.bin")) == 1


def test_trust_on_first_use_pins_and_then_checks(server, add_artifacts):
    url = server.route("/free.bin", serve_bytes(DATA))
    add_artifacts(make("free", [url], DATA, sha=False, size=False))
    notes = []
    (result,) = pull.pull(["free"], notify=notes.append)
    assert result.pinned_now
    assert any("trust on first use" in n and _sha(DATA) in n for n in notes)
    pin = json.loads((cache.artifact_dir("free") / cache.PIN_FILE).read_text())
    assert pin["sha256"] == _sha(DATA) and pin["source"] == url
    (row,) = pull.list_artifacts(["free"])
    assert row["pinned"] == "first-use" and row["status"] == "verified"

    # the file changes upstream: a refetch must match the pin, and nothing is replaced
    server.route("/free.bin", serve_bytes(bytes(reversed(DATA))))
    with pytest.raises(EssencekitError, match="sha256 mismatch"):
        pull.pull(["free"], force=True)
    assert not (cache.artifact_dir("free") / "free.bin").exists()
    assert json.loads((cache.artifact_dir("free") / cache.PIN_FILE).read_text())["sha256"] == _sha(DATA)


def test_licenses_must_be_accepted_once(server, add_artifacts):
    url = server.route("/nc.bin", serve_bytes(DATA))
    add_artifacts(make("nc", [url], DATA, license="CC BY-NC 4.0: non-commercial", license_must_accept=True))

    with pytest.raises(pull.LicenseNotAccepted, match="--accept-licenses"):
        pull.pull(["nc"])
    assert server.requests == []  # asked before downloading anything
    asked = []
    with pytest.raises(pull.LicenseNotAccepted):
        pull.pull(["nc"], confirm=lambda pending: asked.append(pending) or False)
    assert [a.name for a in asked[0]] == ["nc"]

    pull.pull(["nc"], accept_licenses=True)
    assert cache.license_accepted(plugins.registered("weights")["nc"])
    pull.pull(["nc"], force=True)  # remembered in the cache


# --------------------------------------------------------------------------- conversions


def _tiny_open_clip():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    return CLIP(
        16,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, patch_size=16, image_size=32, head_width=16),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1),
        quick_gelu=True,
    )


def _openai_style_torchscript(path: Path) -> dict:
    """A tiny TorchScript archive shaped like OpenAI's: open_clip keys plus the three extras."""
    import warnings

    model = _tiny_open_clip().eval()
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    model._buffers.pop("attn_mask", None)  # OpenAI's archive has no attention-mask buffer
    for key, value in (("input_resolution", 32), ("context_length", 8), ("vocab_size", 64)):
        if hasattr(model, key):
            delattr(model, key)
        model.register_buffer(key, torch.tensor(value))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace_module(model, {"encode_image": (torch.ones(1, 3, 32, 32),)}, check_trace=False)
        torch.jit.save(traced, str(path))
    return reference


def test_clip_torchscript_is_converted_once_to_safetensors(server, add_artifacts, tmp_path):
    archive = tmp_path / "tiny-clip.pt"
    reference = _openai_style_torchscript(archive)
    data = archive.read_bytes()
    url = server.route("/tiny-clip.pt", serve_bytes(data))
    add_artifacts(make("tiny-clip", [url], data, kind="clip", filename="tiny-clip.pt", convert="clip-torchscript"))

    pull.pull(["tiny-clip"])

    path = cache.resolve_artifact("tiny-clip")
    assert path.name == "tiny-clip.safetensors"
    assert not (cache.artifact_dir("tiny-clip") / "tiny-clip.pt").exists()  # no pickle kept
    from safetensors.torch import load_file

    state = load_file(str(path))
    assert not {"input_resolution", "context_length", "vocab_size"} & set(state)
    _tiny_open_clip().load_state_dict(state, strict=True)  # exactly open_clip's layout
    assert set(state) == set(reference)
    for key, value in reference.items():
        assert torch.equal(state[key], value), key
    # --verify re-hashes the converted file against its record
    assert [r.state for r in pull.verify(["tiny-clip"])] == ["verified"]


def test_failed_conversion_keeps_the_verified_download_and_retries_without_network(server, add_artifacts):
    url = server.route("/not-clip.pt", serve_bytes(DATA))
    add_artifacts(make("not-clip", [url], DATA, kind="clip", filename="not-clip.pt", convert="clip-torchscript"))
    with pytest.raises(EssencekitError, match="not a readable TorchScript archive"):
        pull.pull(["not-clip"])
    folder = cache.artifact_dir("not-clip")
    assert sorted(p.name for p in folder.iterdir()) == [".lock", "not-clip.pt"]  # verified, not converted
    with pytest.raises(EssencekitError, match="was not placed by pull-weights"):
        cache.resolve_artifact("not-clip")
    with pytest.raises(EssencekitError, match="TorchScript"):
        pull.pull(["not-clip"])
    assert len(server.requests_for("/not-clip.pt")) == 1  # the second try did not download


def test_a_file_placed_by_hand_is_verified_offline(add_artifacts, monkeypatch):
    add_artifacts(make("tiny", ["https://example.invalid/tiny.bin"], DATA))
    folder = cache.artifact_dir("tiny")
    folder.mkdir(parents=True)
    (folder / "tiny.bin").write_bytes(DATA)
    monkeypatch.setenv("ESSENCEKIT_OFFLINE", "1")
    with pytest.raises(EssencekitError, match="unverified"):
        cache.resolve_artifact("tiny")
    (result,) = pull.pull(["tiny"])
    assert result.action == "verified" and cache.resolve_artifact("tiny").read_bytes() == DATA


def test_published_essence_becomes_an_essence_file(server, add_artifacts, tmp_path):
    direction = np.random.default_rng(0).normal(size=(1, 18, 512)).astype(np.float32)
    npy = tmp_path / "joke.npy"
    np.save(npy, direction)
    data = npy.read_bytes()
    url = server.route("/dirs/joke.npy", serve_bytes(data))
    add_artifacts(make("joke", [url], data, kind="essence", group="essences", filename="joke.npy",
                       convert="essence-npy", extra={"shape": (1, 18, 512)}))

    pull.pull(["joke"])

    path = cache.resolve_artifact("joke")
    assert path.name == "joke.pt"
    loaded = torch.load(path, weights_only=True)
    assert loaded["direction"].shape == (18, 512) and loaded["direction"].dtype == torch.float32
    assert torch.equal(loaded["direction"], torch.from_numpy(direction[0]))
    assert loaded["metadata"]["name"] == "joke"
    assert loaded["metadata"]["source_sha256"] == _sha(data)
    from essencekit.essence import load_essence

    assert load_essence(path).name == "joke"


def test_wrong_shape_essence_is_refused(server, add_artifacts, tmp_path):
    npy = tmp_path / "odd.npy"
    np.save(npy, np.zeros((1, 14, 512), np.float32))
    data = npy.read_bytes()
    url = server.route("/odd.npy", serve_bytes(data))
    add_artifacts(make("odd", [url], data, kind="essence", filename="odd.npy", convert="essence-npy",
                       extra={"shape": (1, 18, 512)}))
    with pytest.raises(EssencekitError, match=r"expected float32 \(1, 18, 512\)"):
        pull.pull(["odd"])
    with pytest.raises(EssencekitError):
        cache.resolve_artifact("odd")


def _e4e_like_checkpoint(path: Path) -> None:
    opts = argparse.Namespace(encoder_type="Encoder4Editing", start_from_latent_avg=True, lr=np.float64(1e-4))
    torch.save({
        "state_dict": {"encoder.w": torch.ones(2, 3)},
        "opts": opts,
        "latent_avg": torch.zeros(18, 4),
        "best_val_loss": np.float64(0.25),
        "history": np.arange(3, dtype=np.float32),
    }, path)


def test_checkpoint_with_pickled_namespace_is_converted_with_an_allow_list(server, add_artifacts, tmp_path):
    source = tmp_path / "e4e.pt"
    _e4e_like_checkpoint(source)
    with pytest.raises(Exception):
        torch.load(source, weights_only=True)  # as published: refused
    data = source.read_bytes()
    url = server.route("/e4e.pt", serve_bytes(data))
    add_artifacts(make("tiny-e4e", [url], data, kind="encoder", filename="e4e_tiny.pt", convert="safe-checkpoint"))

    pull.pull(["tiny-e4e"])

    path = cache.resolve_artifact("tiny-e4e")
    assert path.name == "e4e_tiny.safe.pt"
    converted = torch.load(path, weights_only=True)
    assert converted["opts"] == {"encoder_type": "Encoder4Editing", "start_from_latent_avg": True, "lr": 1e-4}
    assert converted["best_val_loss"] == 0.25
    assert torch.equal(converted["history"], torch.arange(3, dtype=torch.float32))
    assert torch.equal(converted["state_dict"]["encoder.w"], torch.ones(2, 3))


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_checkpoint_with_other_objects_is_refused(server, add_artifacts, tmp_path):
    source = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "x": _Payload()}, source)
    data = source.read_bytes()
    url = server.route("/evil.pt", serve_bytes(data))
    add_artifacts(make("evil", [url], data, filename="evil.pt", convert="safe-checkpoint"))

    with pytest.raises(EssencekitError, match="will not unpickle"):
        pull.pull(["evil"])
    assert not (cache.artifact_dir("evil") / "evil.safe.pt").exists()
    with pytest.raises(EssencekitError):
        cache.resolve_artifact("evil")


def test_plain_checkpoint_is_used_as_published(server, add_artifacts, tmp_path):
    source = tmp_path / "plain.pt"
    torch.save({"g_ema": {"w": torch.ones(3)}, "latent_avg": torch.zeros(4)}, source)
    data = source.read_bytes()
    url = server.route("/plain.pt", serve_bytes(data))
    add_artifacts(make("plain", [url], data, filename="plain.pt", convert="safe-checkpoint"))
    pull.pull(["plain"])
    path = cache.resolve_artifact("plain")
    assert path.name == "plain.pt" and path.read_bytes() == data
    assert sorted(p.name for p in cache.artifact_dir("plain").iterdir()) == [".lock", "plain.pt", "record.json"]


# --------------------------------------------------------------------------- the command


def test_cli_pull_list_and_json(server, add_artifacts):
    url = server.route("/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("tiny", [url], DATA))

    listed = cli("--list", "--json", "tiny")
    assert listed.exit_code == 0, listed.output
    report = json.loads(listed.stdout)
    assert report["cache_dir"] == os.environ["ESSENCEKIT_HOME"]
    (row,) = report["artifacts"]
    assert row["status"] == "missing" and row["size"] == len(DATA) and row["license"] == "MIT: test data"

    result = cli("tiny")
    assert result.exit_code == 0, result.output
    assert "tiny: downloaded, sha256 verified" in result.stdout
    assert result.stderr == ""  # not a terminal: no progress bar

    (row,) = json.loads(cli("--list", "--json", "tiny").stdout)["artifacts"]
    assert row["status"] == "verified" and row["verified"] and row["path"].endswith("tiny.bin")
    table = cli("--list")
    assert table.exit_code == 0 and "tiny" in table.stdout and "stylegan2-ffhq" in table.stdout
    quiet = cli("tiny", "--quiet")
    assert quiet.exit_code == 0 and quiet.stdout == "" and quiet.stderr == ""


def test_cli_from_dir_good_and_bad(add_artifacts, tmp_path, monkeypatch):
    good = DATA
    add_artifacts(
        make("one", ["https://example.invalid/one.bin"], good),
        make("two", ["https://example.invalid/two.bin"], good[::-1]),
    )
    folder = tmp_path / "usb"
    (folder / "sub").mkdir(parents=True)
    (folder / "one.bin").write_bytes(good)
    (folder / "sub" / "two.bin").write_bytes(good)  # the wrong bytes for "two"
    monkeypatch.setenv("ESSENCEKIT_OFFLINE", "1")  # --from needs no network

    result = cli("one", "two", "--from", str(folder))

    assert result.exit_code == 1
    assert "one: imported, sha256 verified" in result.stdout
    assert re.search(r"Error: two: .*two\.bin is not two: its sha256 is [0-9a-f]{16}\.\.\., expected", result.stderr)
    assert "nothing was placed in the cache" in result.stderr
    assert cache.resolve_artifact("one").read_bytes() == good
    leftovers = sorted(p.name for p in cache.artifact_dir("two").iterdir())
    assert leftovers == [".lock"]  # no file, no part, no record
    assert (folder / "sub" / "two.bin").exists()  # the user's file is untouched

    missing = cli("two", "--from", str(tmp_path))
    assert missing.exit_code == 1 and "two.bin (two) is not in" in missing.stderr


def test_cli_from_dir_with_link(add_artifacts, tmp_path):
    add_artifacts(make("one", ["https://example.invalid/one.bin"], DATA))
    folder = tmp_path / "usb"
    folder.mkdir()
    (folder / "one.bin").write_bytes(DATA)
    result = cli("one", "--from", str(folder), "--link")
    assert result.exit_code == 0, result.output
    assert os.path.samefile(cache.resolve_artifact("one"), folder / "one.bin")


def test_cli_offline(server, add_artifacts):
    url = server.route("/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("tiny", [url], DATA))
    result = cli("tiny", env={"ESSENCEKIT_OFFLINE": "1"})
    assert result.exit_code == 1
    assert "network access is disabled (ESSENCEKIT_OFFLINE=1)" in result.stderr
    assert "`essencekit pull-weights tiny --from FOLDER`" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert server.requests == []


def test_cli_no_network_stops_at_once(add_artifacts):
    add_artifacts(make("a", [closed_port_url("/a.bin")], DATA), make("b", [closed_port_url("/b.bin")], DATA))
    result = cli("a", "b")
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("Error: a: no network: cannot reach 127.0.0.1")
    assert lines[1].startswith("Error: b: not attempted: no network")


def test_cli_verify_and_repair(server, add_artifacts):
    url = server.route("/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("tiny", [url], DATA))
    assert cli("tiny").exit_code == 0
    ok = cli("--verify", "tiny")
    assert ok.exit_code == 0 and "verified tiny" in ok.stdout

    path = cache.resolve_artifact("tiny")
    stat = path.stat()
    path.write_bytes(bytes(reversed(DATA)))  # same size, and the mtime put back: only a re-hash sees it
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert cache.resolve_artifact("tiny") == path  # the cheap check trusts size+mtime

    bad = cli("--verify", "tiny")
    assert bad.exit_code == 1
    assert "corrupt tiny" in bad.stderr and "--verify --repair" in bad.stderr

    fixed = cli("--verify", "--repair", "tiny")
    assert fixed.exit_code == 0, fixed.output
    assert path.read_bytes() == DATA and len(server.requests_for("/tiny.bin")) == 2


def test_cli_licenses(server, add_artifacts):
    url = server.route("/nc.bin", serve_bytes(DATA))
    add_artifacts(make("nc", [url], DATA, license="CC BY-NC 4.0: non-commercial use only", license_must_accept=True))
    refused = cli("nc")
    assert refused.exit_code == 1
    assert "CC BY-NC 4.0" in refused.stderr and "--accept-licenses" in refused.stderr
    assert server.requests == []
    accepted = cli("nc", "--accept-licenses")
    assert accepted.exit_code == 0, accepted.output
    (row,) = json.loads(cli("--list", "--json", "nc").stdout)["artifacts"]
    assert row["license_accepted"] is True


def test_cli_cache_dir_for_one_run(server, add_artifacts, tmp_path):
    url = server.route("/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("tiny", [url], DATA))
    other = tmp_path / "elsewhere"
    result = cli("tiny", "--cache-dir", str(other))
    assert result.exit_code == 0, result.output
    assert (other / "weights" / "tiny" / "tiny.bin").read_bytes() == DATA
    assert not (Path(os.environ["ESSENCEKIT_HOME"]) / "weights" / "tiny").exists()
    with cache.using_cache_root(other):
        assert cache.resolve_artifact("tiny").read_bytes() == DATA


def test_cli_unwritable_cache_is_one_line(add_artifacts):
    add_artifacts(make("tiny", ["https://example.invalid/tiny.bin"], DATA))
    result = cli("tiny", "--cache-dir", "/sys/essencekit-cache")
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert "cannot write" in line and "--cache-dir" in line


def test_cli_usage_errors_exit_2():
    assert cli("--json").exit_code == 2
    assert cli("--all", "joker").exit_code == 2
    assert cli("--link").exit_code == 2
    assert cli("--list", "--verify").exit_code == 2
    unknown = cli("jokr")
    assert unknown.exit_code == 1 and "did you mean joker" in unknown.stderr


def test_cli_bad_mirror_is_refused(add_artifacts):
    add_artifacts(make("tiny", ["https://example.invalid/tiny.bin"], DATA))
    result = cli("tiny", "--mirror", "/some/folder")
    assert result.exit_code == 1 and "--from DIR" in result.stderr


def test_the_essencekit_command_has_pull_weights(capsys):
    from essencekit.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["pull-weights", "--list", "--json", "joker"])
    assert exit_.value.code == 0
    (row,) = json.loads(capsys.readouterr().out)["artifacts"]
    assert row["name"] == "joker" and row["status"] == "missing"
