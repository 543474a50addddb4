"""pull-weights: the registry, the Python API, the cache, the conversions and the command,
against a real HTTP server on 127.0.0.1 (tests/http_server.py) and test-plugin artifacts."""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import re
import threading
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
import typer
from http_server import closed_port_url, serve, serve_bytes, silent, status
from typer.testing import CliRunner

import essencekit
from essencekit import WeightArtifact, cache, plugins, pull
from essencekit.cli.pull_weights_cmd import register
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
    # every built-in is pinned (all published checksums were found), except the Hugging Face
    # fallbacks of OpenAI's CLIP and the encoder variant's sources, whose checksums could not be
    # read: trusted on first use
    assert {a.name for a in builtins if not a.sha256} == {"clip-vit-b-32-hf", "clip-rn50-hf", "encoder-sources"}
    filenames = [a.filename for a in builtins]
    assert len(filenames) == len(set(filenames))
    for artifact in builtins:
        if artifact.fallback is not None:  # names a registered artifact of the same kind
            assert cache.fallback_artifact(artifact).kind == artifact.kind


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
    # OpenAI's URLs answer 404 since late 2025 (openai/CLIP#516): the same weights as open_clip
    # safetensors on Hugging Face are the fallbacks, unpinned, checked by keys and shapes
    from essencekit.clip import build_clip_model, get_variant

    for primary, variant, repo in (("clip-vit-b-32", "ViT-B/32", "timm/vit_base_patch32_clip_224.openai"),
                                   ("clip-rn50", "RN50", "timm/resnet50_clip.openai")):
        alt = registry[registry[primary].fallback]
        assert alt.name == f"{primary}-hf" and alt.group == "clip-mirrors" and alt.kind == "clip"
        assert alt.urls == (f"https://huggingface.co/{repo}/resolve/main/open_clip_model.safetensors",)
        assert alt.sha256 is None and alt.convert == "open-clip-safetensors" and alt.fallback is None
        assert "MIT" in alt.license and "apache-2.0" in alt.license and not alt.license_must_accept
        shapes = build_clip_model(get_variant(variant), device="meta").state_dict()
        for key, shape in alt.extra["expect_shapes"].items():
            assert list(shapes[key].shape) == shape, (primary, key)
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
    assert set(groups["clip-mirrors"]) == {"clip-vit-b-32-hf", "clip-rn50-hf"}  # never pulled by faces
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
    with pytest.raises(pickle.UnpicklingError):
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
    assert lines[1] == "Error: b: not attempted: no network (see above)"  # said in full once


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
    assert refused.stderr.count("CC BY-NC 4.0") == 1  # shown once, in the notice
    assert refused.stderr.strip().splitlines()[-1] == (
        "Error: nc needs its license accepted (shown above): rerun with --accept-licenses, or answer yes when asked"
    )
    assert server.requests == []
    with pytest.raises(pull.LicenseNotAccepted, match=r"^nc needs its license accepted before download \(nc: CC BY-NC"):
        pull.pull(["nc"])  # the Python API shows nothing else: the error names the terms
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


# --------------------------------------------------------------------------- fallbacks


def _open_clip_safetensors(path: Path) -> bytes:
    """A tiny open_clip CLIP as safetensors: what timm's Hugging Face repositories publish."""
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in _tiny_open_clip().state_dict().items()}
    save_file(state, str(path), metadata={"format": "pt"})
    return path.read_bytes()


_TINY_SHAPES = {"visual.conv1.weight": [32, 3, 16, 16], "token_embedding.weight": [64, 32]}


def _primary_and_fallback(urls, alt_urls, *, primary_data=DATA, **alt_kw):
    """A pinned primary CLIP artifact and its unpinned open_clip-safetensors fallback."""
    primary = make("prim", urls, primary_data, kind="clip", fallback="prim-hf")
    alt = WeightArtifact(
        name="prim-hf", kind="clip", group="test-mirrors", filename="prim.openai.safetensors",
        urls=tuple(alt_urls), sha256=None, size=None, license="MIT: test", description="test fallback",
        convert="open-clip-safetensors", extra={"expect_shapes": alt_kw.pop("expect_shapes", _TINY_SHAPES)},
        **alt_kw,
    )
    return primary, alt


def _files(name: str) -> list[str]:
    folder = cache.artifact_dir(name)
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_primary_404_falls_back_and_resolves(server, add_artifacts, tmp_path):
    safetensors = _open_clip_safetensors(tmp_path / "open_clip_model.safetensors")
    gone = server.route("/clip/models/abc/prim.pt", status(404))
    page = server.route("/blob/prim.pt", status(200, b"<html>moved</html>", "text/html"))
    hf = server.route("/timm/resolve/main/open_clip_model.safetensors", serve_bytes(safetensors))
    add_artifacts(*_primary_and_fallback([gone, page], [hf]))

    notes = []
    (result,) = pull.pull(["prim"], notify=notes.append)

    assert result.name == "prim" and result.via == "prim-hf" and result.action == "downloaded"
    assert result.pinned_now
    falling = [n for n in notes if "falling back" in n]
    assert len(falling) == 1 and "\n" not in falling[0]
    assert "every mirror failed" in falling[0] and "HTTP 404" in falling[0] and "web page" in falling[0]
    assert "falling back to prim-hf" in falling[0] and "trust on first use" in falling[0]
    path = cache.resolve_artifact("prim")
    assert path == cache.resolve_artifact("prim-hf") == cache.artifact_dir("prim-hf") / "prim.openai.safetensors"
    assert path.read_bytes() == safetensors  # used as published: no conversion
    assert cache.read_pin("prim-hf")["sha256"] == _sha(safetensors)
    assert _files("prim") == [".lock"]  # nothing of the primary was kept

    # a second pull needs no network at all: the fallback stands in for the primary
    requests = len(server.requests)
    (again,) = pull.pull(["prim"])
    assert again.action == "present" and again.via == "prim-hf" and len(server.requests) == requests

    # and the CLIP loader gets the fallback's state dict through resolve_artifact
    from safetensors.torch import load_file

    from essencekit.clip import ClipVariant, build_clip_visual, read_clip_state_dict

    state = read_clip_state_dict(cache.resolve_artifact("prim"), artifact="prim")
    assert set(state) == set(load_file(str(tmp_path / "open_clip_model.safetensors")))
    variant = ClipVariant(
        name="tiny", weights="prim", mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), image_size=32,
        open_clip_config={"embed_dim": 16, "quick_gelu": True,
                          "vision_cfg": {"layers": 1, "width": 32, "patch_size": 16, "image_size": 32, "head_width": 16},
                          "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}},
    )
    build_clip_visual(variant, state)  # strict: exactly open_clip's layout


def test_cli_fallback_says_so_and_succeeds(server, add_artifacts, tmp_path):
    safetensors = _open_clip_safetensors(tmp_path / "open_clip_model.safetensors")
    gone = server.route("/prim.pt", status(404))
    hf = server.route("/hf/open_clip_model.safetensors", serve_bytes(safetensors))
    add_artifacts(*_primary_and_fallback([gone], [hf]))

    result = cli("prim")

    assert result.exit_code == 0, result.output
    assert "ok prim: downloaded as its fallback prim-hf, sha256 pinned on first use" in result.stdout
    assert "falling back to prim-hf" in result.stderr and "Error" not in result.stderr
    (row,) = [r for r in json.loads(cli("--list", "--json").stdout)["artifacts"] if r["name"] == "prim"]
    assert row["status"] == "missing" and row["fallback"] == "prim-hf" and row["provided_by"] == "prim-hf"
    table = cli("--list", "prim")
    assert table.exit_code == 0 and "via prim-hf" in table.stdout
    (verified,) = pull.verify(["prim"])
    assert verified.state == "missing" and verified.ok and "its fallback prim-hf provides it" in verified.message
    assert [r.state for r in pull.verify(["prim-hf"])] == ["verified"]


def test_primary_ok_leaves_the_fallback_untouched(server, add_artifacts):
    good = server.route("/prim.pt", serve_bytes(DATA))
    hf = server.route("/hf/open_clip_model.safetensors", status(500))
    add_artifacts(*_primary_and_fallback([good], [hf]))

    notes = []
    (result,) = pull.pull(["prim"], notify=notes.append)

    assert result.action == "downloaded" and result.via is None and notes == []
    assert cache.resolve_artifact("prim").read_bytes() == DATA
    assert server.requests_for("/hf/open_clip_model.safetensors") == []
    assert not cache.artifact_dir("prim-hf").exists()


@pytest.mark.parametrize("served", ["random bytes", "lfs pointer", "not clip", "other model"])
def test_a_fallback_that_is_not_an_open_clip_safetensors_is_refused(server, add_artifacts, tmp_path, served):
    from safetensors.torch import save_file

    if served == "random bytes":
        body = DATA
    elif served == "lfs pointer":
        body = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"0" * 64 + b"\nsize 605000000\n"
    elif served == "not clip":
        save_file({"encoder.weight": torch.ones(2, 2)}, str(tmp_path / "x.safetensors"))
        body = (tmp_path / "x.safetensors").read_bytes()
    else:  # a real open_clip CLIP, but not the model the artifact promises
        body = _open_clip_safetensors(tmp_path / "x.safetensors")
    gone = server.route("/prim.pt", status(404))
    hf = server.route("/hf/open_clip_model.safetensors", serve_bytes(body))
    expect = {"visual.conv1.weight": [768, 3, 32, 32]} if served == "other model" else _TINY_SHAPES
    add_artifacts(*_primary_and_fallback([gone], [hf], expect_shapes=expect))

    with pytest.raises(pull.PullFailed) as failed:
        pull.pull(["prim"])

    message = str(failed.value)
    assert "\n" not in message
    # the primary's 404s were told in the fallback notice: not repeated in the error
    assert message.startswith("could not get prim (its mirrors failed, as said above) nor its fallback prim-hf (")
    assert "HTTP 404" not in message
    reason = {"random bytes": "not a safetensors file", "lfs pointer": "not a safetensors file",
              "not clip": "not an open_clip CLIP state dict", "other model": "not the expected model"}[served]
    assert reason in message
    assert "copy prim.bin (or prim.openai.safetensors) into a folder" in message
    # nothing left in the cache: no file, no part, no pin, no record
    assert _files("prim-hf") == [".lock"] and _files("prim") == [".lock"]
    with pytest.raises(EssencekitError, match="nor is its fallback prim-hf"):
        cache.resolve_artifact("prim")


def test_a_wrong_fallback_mirror_is_skipped_for_the_next(server, add_artifacts, tmp_path):
    safetensors = _open_clip_safetensors(tmp_path / "open_clip_model.safetensors")
    gone = server.route("/prim.pt", status(404))
    wrong = server.route("/wrong/open_clip_model.safetensors", serve_bytes(DATA))
    right = server.route("/right/open_clip_model.safetensors", serve_bytes(safetensors))
    add_artifacts(*_primary_and_fallback([gone], [wrong, right]))
    (result,) = pull.pull(["prim"])
    assert result.via == "prim-hf" and result.source == right
    assert cache.read_pin("prim-hf")["sha256"] == _sha(safetensors)  # the wrong file was never pinned


def test_resolve_with_only_the_fallback_present(add_artifacts, tmp_path, monkeypatch):
    primary, alt = _primary_and_fallback(["https://example.invalid/prim.pt"], ["https://example.invalid/hf"])
    add_artifacts(primary, alt)
    with pytest.raises(EssencekitError) as missing:
        cache.resolve_artifact("prim")
    message = str(missing.value)
    assert "\n" not in message
    assert "`essencekit pull-weights prim`" in message and "`essencekit pull-weights prim-hf`" in message
    assert "prim.bin or prim.openai.safetensors" in message and "--from FOLDER" in message

    folder = tmp_path / "usb"
    folder.mkdir()
    _open_clip_safetensors(folder / "prim.openai.safetensors")
    monkeypatch.setenv("ESSENCEKIT_OFFLINE", "1")
    notes = []
    # --from without the primary's file: the fallback's file is imported in its place
    (result,) = pull.pull(["prim"], from_dir=folder, notify=notes.append)
    assert result.action == "imported" and result.via == "prim-hf"
    assert any("prim.bin is not in the folder; importing its fallback prim-hf" in n for n in notes)
    assert _files("prim") == [".lock"]
    assert cache.resolve_artifact("prim") == cache.artifact_dir("prim-hf") / "prim.openai.safetensors"

    # offline, a plain pull is satisfied by the fallback already in the cache
    (again,) = pull.pull(["prim"])
    assert again.action == "present" and again.via == "prim-hf"

    # a corrupt fallback is reported with its own fix
    path = cache.resolve_artifact("prim")
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    os.utime(path, ns=(1, 1))
    with pytest.raises(EssencekitError, match=r"prim is not in the weight cache, and prim-hf .* corrupt.*prim-hf --repair"):
        cache.resolve_artifact("prim")


def test_from_dir_with_neither_file_is_one_line(add_artifacts, tmp_path):
    add_artifacts(*_primary_and_fallback(["https://example.invalid/prim.pt"], ["https://example.invalid/hf/x"]))
    with pytest.raises(pull.PullFailed) as failed:
        pull.pull(["prim"], from_dir=tmp_path)
    message = str(failed.value)
    assert "\n" not in message
    assert message.startswith(f"neither prim.bin (prim) nor prim.openai.safetensors (its fallback prim-hf) is in {tmp_path}")


def test_fallback_unreachable_too_is_no_network(add_artifacts):
    add_artifacts(*_primary_and_fallback([closed_port_url("/prim.pt")], [closed_port_url("/hf")]),
                  make("later", [closed_port_url("/later.bin")], DATA))
    results = []
    with pytest.raises(pull.PullFailed) as failed:
        pull.pull(["prim", "later"], on_result=results.append)
    message = str(failed.value)
    assert message.startswith("no network: could not get prim (its mirrors failed, as said above)")
    assert "nor its fallback prim-hf (cannot reach 127.0.0.1" in message
    assert results[1].message == "not attempted: no network (see above)"


def test_unreachable_primary_hosts_fall_back(server, add_artifacts, tmp_path):
    # e.g. a retired CDN host name that no longer resolves: the fallback on another host works
    safetensors = _open_clip_safetensors(tmp_path / "open_clip_model.safetensors")
    hf = server.route("/hf/open_clip_model.safetensors", serve_bytes(safetensors))
    add_artifacts(*_primary_and_fallback([closed_port_url("/a/prim.pt"), closed_port_url("/b/prim.pt")], [hf]))
    notes = []
    (result,) = pull.pull(["prim"], notify=notes.append)
    assert result.via == "prim-hf" and any("connection refused" in n and "falling back" in n for n in notes)


def test_unknown_or_mismatched_fallback_is_a_clear_error(server, add_artifacts):
    url = server.route("/odd.bin", serve_bytes(DATA))
    add_artifacts(make("odd", [url], DATA, fallback="nowhere"),
                  make("kinds", [url], DATA, kind="clip", fallback="odd"))
    with pytest.raises(EssencekitError, match=r"odd names 'nowhere' as its fallback, but no weight artifact"):
        pull.pull(["odd"])
    assert server.requests == []  # checked before any download
    with pytest.raises(EssencekitError, match=r"names 'nowhere' as its fallback"):
        cache.resolve_artifact("odd")
    with pytest.raises(EssencekitError, match=r"kinds names odd as its fallback, but odd is a generator, not a clip"):
        pull.pull(["kinds"])
    rows = {r["name"]: r for r in pull.list_artifacts()}  # --list still works
    assert rows["odd"]["fallback"] == "nowhere" and rows["odd"]["provided_by"] is None
    result = cli("odd")
    assert result.exit_code == 1 and len(result.stderr.strip().splitlines()) == 1
    with pytest.raises(EssencekitError, match="fallback must name another artifact"):
        make("self", [url], DATA, fallback="self")


def test_offline_pull_reports_each_artifact_on_its_own(add_artifacts, monkeypatch):
    add_artifacts(make("a", ["https://example.invalid/a.bin"], DATA),
                  make("b", ["https://example.invalid/b.bin"], DATA[::-1]))
    folder = cache.artifact_dir("b")
    folder.mkdir(parents=True)
    (folder / "b.bin").write_bytes(DATA[::-1])  # placed by hand: verifiable without the network
    result = cli("a", "b", env={"ESSENCEKIT_OFFLINE": "1"})
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: a: cannot download a: network access is disabled") and "a.bin" in line
    assert "ok b: found in the cache, sha256 verified" in result.stdout


def test_verify_reports_hashing_progress(server, add_artifacts):
    url = server.route("/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("tiny", [url], DATA))
    pull.pull(["tiny"])
    events = []

    class Record(pull.Progress):
        def start(self, label, total, completed=0):
            events.append(("start", label, total))

        def update(self, completed):
            events.append(("update", completed))

        def finish(self):
            events.append(("finish",))

    (result,) = pull.verify(["tiny"], hash_progress=Record())
    assert result.state == "verified"
    assert events[0] == ("start", "tiny (sha256)", len(DATA)) and events[-2:] == [("update", len(DATA)), ("finish",)]


def test_cli_hash_bar_only_for_large_files():
    from essencekit.cli.pull_weights_cmd import _HashProgress

    class FakeRich:
        def __init__(self):
            self.tasks, self.removed = {}, []

        def add_task(self, label, total, completed):
            self.tasks[len(self.tasks)] = [label, total, completed]
            return len(self.tasks) - 1

        def update(self, task, completed):
            self.tasks[task][2] = completed

        def remove_task(self, task):
            self.removed.append(task)

    rich = FakeRich()
    bar = _HashProgress(rich)
    bar.start("small (sha256)", 36_992)
    bar.update(36_992)
    bar.finish()
    assert rich.tasks == {}
    bar.start("e4e-ffhq (sha256)", 1_201_649_680)
    bar.update(600_000_000)
    assert rich.tasks[0] == ["e4e-ffhq (sha256)", 1_201_649_680, 600_000_000]
    bar.finish()
    assert rich.removed == [0]  # no finished bars left on the screen


# --------------------------------------------------------------------------- hostile mirrors (issue 11)


def _npy_bytes(tmp_path: Path) -> bytes:
    npy = tmp_path / "joke.npy"
    np.save(npy, np.random.default_rng(1).normal(size=(1, 18, 512)).astype(np.float32))
    return npy.read_bytes()


def test_mirror_passwords_and_tokens_are_never_shown_or_stored(server, add_artifacts, tmp_path, monkeypatch):
    data = _npy_bytes(tmp_path)
    server.route("/private/joke.npy", status(401))
    server.route("/signed/joke.npy", status(503))
    signed = server.url("/signed/joke.npy").replace("http://", "http://bob:hunter2-pw@") + "?id=f-42&export=download&token=tok-123"
    add_artifacts(make("joke", [signed], data, sha=False, kind="essence", group="essences", filename="joke.npy",
                       convert="essence-npy"))
    monkeypatch.setenv("ESSENCEKIT_MIRROR", f"http://alice:s3cret-pw@127.0.0.1:{server.port}/private")
    secrets = ("s3cret-pw", "hunter2-pw", "tok-123", "alice", "bob")

    failed = cli("joke")
    assert failed.exit_code == 1
    assert f"127.0.0.1:{server.port}/private/joke.npy: HTTP 401" in failed.stderr
    assert f"127.0.0.1:{server.port}/signed/joke.npy HTTP 503 Service Unavailable; retrying" in failed.stderr
    assert "(attempt 2/3)" in failed.stderr and "(attempt 3/3)" in failed.stderr
    assert not any(secret in failed.output for secret in secrets), failed.output

    server.route("/private/joke.npy", serve_bytes(data))
    done = cli("joke")
    assert done.exit_code == 0, done.output
    assert server.requests_for("/private/joke.npy")[-1].headers["authorization"] == "Basic YWxpY2U6czNjcmV0LXB3"
    shown = f"http://***@127.0.0.1:{server.port}/private/joke.npy"
    assert f"(from {shown})" in done.stderr  # the trust-on-first-use notice
    stored = {name: (cache.artifact_dir("joke") / name).read_text() for name in (cache.RECORD_FILE, cache.PIN_FILE)}
    assert json.loads(stored[cache.RECORD_FILE])["source"] == shown
    assert json.loads(stored[cache.PIN_FILE])["source"] == shown
    essence = torch.load(cache.resolve_artifact("joke"), weights_only=True)
    assert essence["metadata"]["source_url"] == shown  # shared with the essence file
    listed = cli("--list", "--json", "joke")
    assert json.loads(listed.stdout)["artifacts"][0]["urls"] == [
        # public parameters stay visible (a user fetches such a link by hand); the token does not
        f"http://***@127.0.0.1:{server.port}/signed/joke.npy?id=f-42&export=download&token=***"]
    texts = [done.output, listed.output, *stored.values(), repr(essence["metadata"])]
    assert not any(secret in text for secret in secrets for text in texts)


def test_the_registry_url_in_an_essence_is_redacted_too(add_artifacts, tmp_path):
    data = _npy_bytes(tmp_path)
    (tmp_path / "usb").mkdir()
    (tmp_path / "usb" / "joke.npy").write_bytes(data)
    add_artifacts(make("joke", ["https://u:pw-9988@example.invalid/joke.npy?sig=tok-123"], data, kind="essence",
                       group="essences", filename="joke.npy", convert="essence-npy"))
    pull.pull(["joke"], from_dir=tmp_path / "usb")
    metadata = torch.load(cache.resolve_artifact("joke"), weights_only=True)["metadata"]
    assert metadata["source_url"] == "https://***@example.invalid/joke.npy?sig=***"


def test_a_hung_mirror_is_announced_and_left_for_the_next(server, add_artifacts, monkeypatch):
    hung = server.route("/hung/tiny.bin", silent())
    good = server.route("/good/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("tiny", [hung, good], DATA))
    monkeypatch.setenv("ESSENCEKIT_READ_TIMEOUT", "0.3")

    result = cli("tiny")

    assert result.exit_code == 0, result.output
    assert "tiny: downloaded" in result.stdout
    retry, moving_on = result.stderr.strip().splitlines()
    assert retry == (f"tiny: 127.0.0.1:{server.port}/hung/tiny.bin timed out: no answer within 0.3 s; "
                     "retrying in 0 s (attempt 2/2)")  # silent: one more try, not three
    assert "gave up after 2 silent tries" in moving_on and moving_on.endswith(f"127.0.0.1:{server.port}/good/tiny.bin")
    assert len(server.requests_for("/hung/tiny.bin")) == 2


def test_an_invalid_timeout_setting_is_said_once(server, add_artifacts, monkeypatch):
    url = server.route("/tiny.bin", serve_bytes(DATA))
    add_artifacts(make("a", [url], DATA), make("b", [url], DATA))
    monkeypatch.setenv("ESSENCEKIT_CONNECT_TIMEOUT", "15s")
    result = cli("a", "b")
    assert result.exit_code == 1
    assert result.stderr.strip() == ("Error: ESSENCEKIT_CONNECT_TIMEOUT='15s' is not a number of seconds: set it to a "
                                     "positive number such as 30, or unset it")
    assert server.requests == []


def test_timeout_settings_are_only_checked_when_something_is_downloaded(add_artifacts, tmp_path, monkeypatch):
    (tmp_path / "usb").mkdir()
    (tmp_path / "usb" / "tiny.bin").write_bytes(DATA)
    add_artifacts(make("tiny", ["https://example.invalid/tiny.bin"], DATA))
    monkeypatch.setenv("ESSENCEKIT_READ_TIMEOUT", "abc")
    imported = cli("tiny", "--from", str(tmp_path / "usb"))
    assert imported.exit_code == 0, imported.output
    present = cli("tiny")  # verified already: nothing to fetch, nothing to time out
    assert present.exit_code == 0, present.output
    with pytest.raises(essencekit.EssencekitError, match="ESSENCEKIT_READ_TIMEOUT=.abc."):
        pull.pull(["tiny"], force=True)  # a download would happen: said before it starts


def test_hf_hub_offline_makes_hugging_face_artifacts_cache_only(add_artifacts, tmp_path, monkeypatch):
    hub = "https://huggingface.co/org/repo/resolve/main/tiny.bin"
    add_artifacts(make("tiny", [hub], DATA))
    requested = []
    monkeypatch.setattr("requests.Session.get", lambda self, url, **kw: requested.append(url))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    missing = cli("tiny")
    assert missing.exit_code == 1
    (line,) = missing.stderr.strip().splitlines()
    assert line.startswith("Error: tiny: cannot download tiny: it is on the Hugging Face Hub (huggingface.co) and "
                           "HF_HUB_OFFLINE=1 forbids requests to the Hub")
    assert "`essencekit pull-weights tiny --from FOLDER`" in line
    assert requested == []

    (tmp_path / "usb").mkdir()
    (tmp_path / "usb" / "tiny.bin").write_bytes(DATA)
    assert cli("tiny", "--from", str(tmp_path / "usb")).exit_code == 0
    present = cli("tiny")  # in the cache: HF_HUB_OFFLINE does not get in the way
    assert present.exit_code == 0 and "tiny: already in the cache" in present.stdout
    assert requested == []


@pytest.fixture
def make_cache_read_only(monkeypatch):
    """``make_cache_read_only()``: from then on every write under the cache root fails as on a
    read-only file system (EROFS); returns the list of writes tried. As root, chmod does not
    stop writes, and a read-only mount cannot be made here."""
    import builtins
    import errno

    root = Path(os.environ["ESSENCEKIT_HOME"]).resolve()
    tried = []

    def under(path) -> bool:
        try:
            return Path(os.path.abspath(os.fspath(path))).is_relative_to(root)
        except TypeError:  # a file descriptor
            return False

    def guard(name, real, writes=lambda *a, **k: True):
        def wrapper(path, *args, **kwargs):
            if under(path) and writes(*args, **kwargs):
                tried.append((name, str(path)))
                raise OSError(errno.EROFS, "Read-only file system", str(path))
            return real(path, *args, **kwargs)
        return wrapper

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND

    def activate():
        monkeypatch.setattr(os, "open", guard("open", os.open, lambda flags, *a, **k: flags & write_flags))
        monkeypatch.setattr(builtins, "open", guard(
            "open", builtins.open, lambda mode="r", *a, **k: any(c in mode for c in "wax+")))
        for name in ("mkdir", "unlink", "remove", "replace", "rename", "utime"):
            monkeypatch.setattr(os, name, guard(name, getattr(os, name)))
        return tried

    return activate


def test_a_read_only_cache_with_everything_verified_needs_no_lock(server, add_artifacts, tmp_path,
                                                                   make_cache_read_only):
    url = server.route("/tiny.bin", serve_bytes(DATA))
    data = _npy_bytes(tmp_path)
    joke = server.route("/joke.npy", serve_bytes(data))
    add_artifacts(make("tiny", [url], DATA),
                  make("joke", [joke], data, kind="essence", group="essences", filename="joke.npy",
                       convert="essence-npy"))
    pull.pull(["tiny", "joke"])  # a shared cache, filled by someone who could write
    tried = make_cache_read_only()

    result = cli("tiny", "joke")

    assert result.exit_code == 0, result.output
    assert "ok tiny: already in the cache" in result.stdout and "ok joke: already in the cache" in result.stdout
    assert result.stderr == ""
    assert tried == []  # not even an attempt to write the lock
    assert [r.action for r in pull.pull(["tiny", "joke"])] == ["present", "present"]
    assert len(server.requests) == 2

    assert cli("--verify", "--repair", "tiny", "joke").exit_code == 0  # nothing to repair, nothing written
    assert tried == []

    # what does need writing still fails, in one line
    add_artifacts(make("more", [url], DATA))
    needed = cli("more")
    assert needed.exit_code == 1
    (line,) = needed.stderr.strip().splitlines()
    assert "read-only file system; choose a writable cache folder with ESSENCEKIT_HOME or --cache-dir" in line
