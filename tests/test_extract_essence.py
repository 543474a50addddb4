"""Essence files: round trips in every format, hostile files, ``essencekit info`` and ``export``."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch

import essencekit
from essencekit.errors import EssencekitError
from essencekit.essence import Essence, load_essence


@pytest.fixture
def essence() -> Essence:
    generator = torch.Generator().manual_seed(0)
    return Essence(
        torch.randn(18, 512, generator=generator) * 0.3,
        torch.tensor([0.8, 1.2, 1.0, 0.6]),
        {
            "name": "obama",
            "kind": "essence",
            "shape": json.dumps([18, 512]),
            "restarts": json.dumps([{"restart": 0, "init": "random", "loss": 0.5, "chosen": True}]),
            "recommended_strength": "0.9",
            "torch_version": torch.__version__,  # a str subclass: must still save as a plain string
        },
    )


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_round_trip_keeps_everything(essence, tmp_path, suffix):
    path = essence.save(tmp_path / f"e{suffix}")
    loaded = load_essence(path)
    assert torch.equal(loaded.direction, essence.direction)
    assert torch.equal(loaded.coefficients, essence.coefficients)
    assert loaded.metadata == {"format_version": "1", **essence.metadata}
    assert all(type(k) is str and type(v) is str for k, v in loaded.metadata.items())
    assert loaded.recommended_strength == pytest.approx(0.9)
    assert loaded.info()["restarts"][0]["chosen"] is True
    assert loaded.info()["shape"] == [18, 512] and loaded.info()["name"] == "obama"


def test_pt_is_plain_data(essence, tmp_path):
    path = essence.save(tmp_path / "e.pt")
    data = torch.load(path, weights_only=True)
    assert set(data) == {"direction", "coefficients", "metadata"}
    assert data["direction"].dtype == torch.float32 and data["direction"].shape == (18, 512)
    assert data["coefficients"].dtype == torch.float32


def test_safetensors_metadata_is_str_to_str(essence, tmp_path):
    from safetensors import safe_open

    path = essence.save(tmp_path / "e.safetensors")
    with safe_open(str(path), framework="pt") as handle:
        assert set(handle.keys()) == {"direction", "coefficients"}
        assert handle.metadata()["name"] == "obama"


def test_npy_round_trip_is_the_published_format(essence, tmp_path):
    path = essence.save(tmp_path / "e.npy")
    array = np.load(path, allow_pickle=False)
    assert array.shape == (1, 18, 512) and array.dtype == np.float32
    loaded = load_essence(path)
    assert torch.equal(loaded.direction, essence.direction)
    assert loaded.recommended_strength == 1.0 and loaded.metadata["source"] == "TargetCLIP published .npy"
    # and a .npy in the published format, written by numpy itself
    np.save(tmp_path / "published.npy", np.ones((1, 18, 512), dtype=np.float32))
    assert load_essence(tmp_path / "published.npy").direction.shape == (18, 512)


class _Boom:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_hostile_pickle_is_refused_and_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    hostile = tmp_path / "hostile.pt"
    torch.save({"direction": torch.zeros(18, 512), "metadata": {}, "payload": _Boom()}, hostile)
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps({"direction": _Boom()}))
    for path in (hostile, raw):
        with pytest.raises(EssencekitError, match="will not unpickle"):
            load_essence(path)
    assert not (tmp_path / "PWNED").exists()
    # an object array in a .npy is refused too
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(EssencekitError, match="not a plain NumPy array"):
        load_essence(tmp_path / "objects.npy")


@pytest.mark.parametrize(
    "content, match",
    [
        (b"", "empty"),
        (b"not an essence at all", "broken.pt"),
    ],
)
def test_broken_files_give_one_line_errors(tmp_path, content, match):
    path = tmp_path / "broken.pt"
    path.write_bytes(content)
    with pytest.raises(EssencekitError, match=match):
        load_essence(path)
    with pytest.raises(EssencekitError, match="not found"):
        load_essence(tmp_path / "missing.pt")
    torch.save({"coefficients": torch.ones(2)}, tmp_path / "nodirection.pt")
    with pytest.raises(EssencekitError, match="no 'direction'"):
        load_essence(tmp_path / "nodirection.pt")


def test_top_level_api_exports():
    import importlib
    import inspect

    assert essencekit.load_essence is load_essence
    # importing the packages binds only their own names: no package shares a function's name
    for package in ("essencekit.clip_losses", "essencekit.transfers.api", "essencekit.evaluation.api"):
        importlib.import_module(package)
    for name in ("extract", "transfer", "invert", "evaluate"):
        assert inspect.isfunction(getattr(essencekit, name)), name
    assert "extract" in essencekit.__all__ and "load_essence" in essencekit.__all__


# --------------------------------------------------------------------------- the commands


def test_info_shows_metadata(essence, tmp_path, capsys, cli):
    path = essence.save(tmp_path / "e.safetensors")
    code, out, err = cli(["info", path])
    assert code == 0 and err == ""
    assert "obama" in out and "recommended_strength" in out and "Restarts" in out
    code, out, _ = cli(["info", path, "--json"])
    data = json.loads(out)
    assert code == 0 and data["name"] == "obama" and data["direction_shape"] == [18, 512]
    assert data["restarts"][0]["init"] == "random" and data["coefficients"] == pytest.approx([0.8, 1.2, 1.0, 0.6])


def test_info_errors_are_one_line(tmp_path, capsys, cli):
    code, out, err = cli(["info", tmp_path / "missing.pt"])
    assert code == 1 and out == "" and err.startswith("Error: essence file not found") and err.count("\n") == 1


def test_export_writes_the_published_npy(essence, tmp_path, capsys, cli):
    source = essence.save(tmp_path / "e.pt")
    target = tmp_path / "out.npy"
    code, out, err = cli(["export", source, target])
    assert code == 0 and "wrote" in out and "no metadata" in err
    array = np.load(target, allow_pickle=False)
    assert array.shape == (1, 18, 512) and array.dtype == np.float32
    assert np.array_equal(array[0], essence.direction.numpy())
    # refuses to overwrite, converts between formats
    code, _, err = cli(["export", source, target])
    assert code == 1 and "already exists" in err
    code, _, _ = cli(["export", target, tmp_path / "back.safetensors"])
    assert code == 0 and torch.equal(load_essence(tmp_path / "back.safetensors").direction, essence.direction)
    code, _, err = cli(["export", source, tmp_path / "out.txt"])
    assert code == 2 and "Invalid value for 'OUT': unknown essence format" in err and not (tmp_path / "out.txt").exists()


def test_export_refuses_an_output_under_a_file_before_reading(essence, tmp_path, capsys, cli, monkeypatch):
    import essencekit.essence

    source = essence.save(tmp_path / "e.pt")
    monkeypatch.setattr(essencekit.essence, "load_essence", lambda *a, **k: pytest.fail("read before the check"))
    code, out, err = cli(["export", source, source / "x.npy"])
    assert code == 2 and out == "" and "Invalid value for 'OUT'" in err and f"{source} is a file, not a folder" in err
