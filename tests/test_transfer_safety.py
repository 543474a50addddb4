"""What ``essencekit transfer`` must refuse (issue 11): outputs that would replace an input,
local paths in the outputs, essences and strengths that can only give garbage, and unclear
option errors. Every refusal is one line that names the file or the option."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import essencekit
from essencekit.cache import sha256_file
from essencekit.essence import Essence
from essencekit.transfers.writing import read_metadata

FIXTURES = Path(__file__).parent / "fixtures"
E4E = FIXTURES / "tiny-e4e.pt"
TINY = ["--encoder", E4E, "--backend", "cpu"]


def _photo(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def joker(tmp_path) -> Path:
    """A tiny essence (10 x 64 W+, like the tiny e4e's generator) whose label is ``joker``."""
    folder = tmp_path / "essences"
    folder.mkdir()
    direction = torch.randn(10, 64, generator=torch.Generator().manual_seed(0)) * 0.5
    return Essence(direction, metadata={"name": "joker", "recommended_strength": "0.8"}).save(folder / "joker.pt")


@pytest.fixture
def coll(tmp_path) -> Path:
    """The tester's folder: Megan's photo and the user's own photo ``megan_joker.png``."""
    folder = tmp_path / "coll"
    folder.mkdir()
    _photo(folder / "megan.jpg", 1)
    _photo(folder / "megan_joker.png", 2)
    return folder


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


# --------------------------------------------------------------------------- outputs never replace inputs


def _dlib_usable() -> bool:
    from essencekit_builtins.aligners import DlibAligner

    return DlibAligner().availability()[0]


@pytest.mark.skipif(not _dlib_usable(), reason="dlib-bin and face-recognition-models are not installed")
def test_the_reported_command_with_a_real_face(coll, joker, capsys, cli):
    """As reported: Megan's photo has a face, so before the fix her edit replaced the user's photo."""
    data = pytest.importorskip("skimage.data")
    Image.fromarray(data.astronaut()).save(coll / "megan.jpg", quality=95)
    before = _snapshot(coll)
    code, _, stderr = cli(["transfer", coll / "megan.jpg", coll / "megan_joker.png", "-e", joker, "-o", coll,
                            "--overwrite", *TINY])
    assert code == 1 and f"would overwrite the input file {coll / 'megan_joker.png'}" in stderr
    assert _snapshot(coll) == before



@pytest.mark.parametrize("flag", ["--overwrite", "--skip-existing", None])
def test_the_reported_command_cannot_overwrite_an_input(coll, joker, capsys, flag, cli):
    before = _snapshot(coll)
    # on aligned crops (--no-align) the tiny models edit any picture, so nothing fails on its own
    args = ["transfer", coll / "megan.jpg", coll / "megan_joker.png", "-e", joker, "-o", coll, "--no-align", *TINY]
    code, _, stderr = cli(args + ([flag] if flag else []))
    assert code == 1
    assert f"would overwrite the input file {coll / 'megan_joker.png'}" in stderr
    assert _snapshot(coll) == before  # the user's photo is untouched and nothing was written


@pytest.mark.parametrize("how", ["output folder", "input file"])
def test_a_symlink_does_not_hide_the_clash(coll, joker, tmp_path, capsys, how, cli):
    before = _snapshot(coll)
    if how == "output folder":  # -o names the inputs' folder through a link
        link = tmp_path / "link"
        link.symlink_to(coll, target_is_directory=True)
        args = ["transfer", coll / "megan.jpg", coll / "megan_joker.png", "-o", link]
    else:  # the user's photo is given through a link kept elsewhere
        (tmp_path / "elsewhere").mkdir()
        alias = tmp_path / "elsewhere" / "favourite.png"
        alias.symlink_to(coll / "megan_joker.png")
        args = ["transfer", coll / "megan.jpg", alias, "-o", coll]
    code, _, stderr = cli([*args, "-e", joker, "--overwrite", "--no-align", *TINY])
    assert code == 1 and "megan_joker.png" in stderr and "would overwrite the input file" in stderr
    assert _snapshot(coll) == before


def test_names_that_differ_only_in_case_clash(coll, joker, capsys, cli):
    # on macOS and Windows megan_joker.png and MEGAN_JOKER.png are one file
    (coll / "megan_joker.png").rename(coll / "MEGAN_JOKER.png")
    before = _snapshot(coll)
    code, _, stderr = cli(["transfer", coll / "megan.jpg", coll / "MEGAN_JOKER.png", "-e", joker, "-o", coll,
                            "--overwrite", "--no-align", *TINY])
    assert code == 1 and "MEGAN_JOKER.png" in stderr and "would overwrite the input file" in stderr
    assert _snapshot(coll) == before


def test_crops_whose_names_come_later_are_refused_before_any_work(coll, joker, capsys, mocker, cli):
    from essencekit.models.e4e import E4E as E4EModel

    invert = mocker.spy(E4EModel, "invert")
    before = _snapshot(coll)
    code, _, stderr = cli(["transfer", coll / "megan.jpg", coll / "megan_joker.png", "-e", joker, "-o", coll,
                            "--crops", "--no-align", "--faces", "all", "--overwrite", *TINY])
    assert code == 1 and "megan_joker.png" in stderr and "would overwrite the input file" in stderr
    assert invert.call_count == 0 and _snapshot(coll) == before


# --------------------------------------------------------------------------- no local paths in outputs


def test_outputs_name_the_essence_by_file_name_and_sha256_only(coll, joker, tmp_path, capsys, cli):
    out = tmp_path / "out"
    code, _, stderr = cli(["transfer", coll / "megan.jpg", "-e", joker, "-o", out, "--no-align", *TINY])
    assert code == 0, stderr
    path = out / "megan_joker.png"
    with Image.open(path) as image:
        record = image.text["essencekit"]
    assert str(joker.parent) not in record and str(tmp_path) not in record
    [described] = read_metadata(path)["essences"]
    assert described["source"] == "joker.pt" and described["sha256"] == sha256_file(joker)


# --------------------------------------------------------------------------- strengths and essences that mean nothing


def test_absurd_strengths_and_weights_are_usage_errors(coll, joker, tmp_path, capsys, cli):
    out = tmp_path / "out"
    base = ["transfer", coll / "megan.jpg", "--no-align", "-o", out, *TINY]
    for extra in (["-e", joker, "--strength", "-1e9"], ["-e", f"{joker}@1e9"], ["-e", joker, "-s", "0.5,1e4"]):
        code, _, stderr = cli([*base, *extra])
        assert code == 2 and "would move W+ row" in stderr and "--strength" in stderr, stderr
    assert not out.exists()
    # the library says which parameter, in its own words, before loading a model
    with pytest.raises(ValueError, match="^strength -1e\\+09") as caught:
        essencekit.transfer(coll / "megan.jpg", joker, -1e9, encoder="no-such-encoder.pt")
    assert caught.value.parameter == "strength" and "--" not in str(caught.value)


def _raw_essence(path: Path, direction: torch.Tensor, metadata: dict[str, str] | None = None) -> Path:
    """Write an essence file as a stranger might, without :class:`Essence`'s checks."""
    metadata = {"name": path.stem, **(metadata or {})}
    if path.suffix == ".npy":
        np.save(path, direction.numpy()[None])  # (an integer .npy was refused already)
    elif path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file({"direction": direction, "coefficients": torch.zeros(0)}, str(path), metadata=metadata)
    else:
        torch.save({"direction": direction, "coefficients": torch.zeros(0), "metadata": metadata}, path)
    return path


_HOSTILE = [
    ("huge", torch.full((10, 64), 1e30), None, "far too large to be a W+ edit"),
    ("integers", torch.ones(10, 64, dtype=torch.int32), None, "'direction' tensor holds int32 values"),
    ("booleans", torch.ones(10, 64, dtype=torch.bool), None, "'direction' tensor holds bool values"),
    ("strength", torch.ones(10, 64) * 0.1, {"recommended_strength": "abc"},
     "field 'recommended_strength' must be a finite number, got 'abc'"),
]


@pytest.mark.parametrize("suffix, case, direction, metadata, message", [
    *[(suffix, *case) for suffix in (".pt", ".safetensors") for case in _HOSTILE], (".npy", *_HOSTILE[0]),
])
def test_essences_that_cannot_mean_an_edit_are_refused(coll, tmp_path, capsys, suffix, case, direction, metadata,
                                                       message, cli):
    path = _raw_essence(tmp_path / f"{case}{suffix}", direction, metadata)
    out = tmp_path / "out"
    for args in (["transfer", coll / "megan.jpg", "--no-align", "-e", path, "-o", out, *TINY], ["info", path]):
        code, stdout, stderr = cli(args)
        assert code == 1 and stderr.startswith(f"Error: {path}") and message in stderr, stderr
        assert stderr.count("\n") == 1 and "Internal error" not in stderr
    assert not out.exists()


def test_in_memory_essences_are_checked_when_applied(coll):
    from essencekit.errors import EssencekitError

    huge = Essence(torch.full((10, 64), 1e30), metadata={"name": "huge"})  # an extraction keeps what it found
    with pytest.raises(EssencekitError, match="essence huge: the essence direction is far too large"):
        essencekit.transfer(coll / "megan.jpg", huge, encoder="no-such-encoder.pt")
    odd = Essence(torch.ones(10, 64), metadata={"name": "odd", "recommended_strength": "abc"})
    with pytest.raises(EssencekitError, match="field 'recommended_strength' must be a finite number, got 'abc'"):
        essencekit.transfer(coll / "megan.jpg", odd, encoder="no-such-encoder.pt")


# --------------------------------------------------------------------------- clearer option errors


def test_an_output_that_is_a_file_is_named(coll, joker, capsys, cli):
    code, _, stderr = cli(["transfer", coll / "megan.jpg", "-e", joker, "-o", coll / "megan_joker.png",
                            "--no-align", *TINY])
    assert code == 2 and "megan_joker.png is a file, but the output must be a folder" in stderr
    assert "File exists" not in stderr


def test_empty_strength_items_are_refused_like_empty_layers(coll, joker, tmp_path, capsys, cli):
    for extra, message in ((["--strength", "1,,2"], "empty item in strength"),
                           (["--layers", "1,,2"], "empty item in layers")):
        code, _, stderr = cli(["transfer", coll / "megan.jpg", "-e", joker, "--no-align", "-o", tmp_path / "out",
                                *TINY, *extra])
        assert code == 2 and message in stderr, stderr


def test_a_weight_that_is_not_a_number_is_named(coll, joker, tmp_path, capsys, cli):
    code, _, stderr = cli(["transfer", coll / "megan.jpg", "-e", f"{joker}@abc", "--no-align", "-o",
                            tmp_path / "out", *TINY])
    assert code == 2 and "the weight after '@' must be a number, got 'abc'" in stderr  # a usage error
    assert "not found" not in stderr


def test_info_and_export_know_the_published_names_transfer_knows(coll, joker, tmp_path, capsys, monkeypatch, cli):
    from essencekit import cache

    # not downloaded: the same line transfer gives
    _, _, from_transfer = cli(["transfer", coll / "megan.jpg", "-e", "joker", "--no-align", *TINY])
    assert "pull-weights joker" in from_transfer
    for args in (["info", "joker"], ["export", "joker", tmp_path / "j.pt"]):
        code, _, stderr = cli(args)
        assert code == 1 and stderr == from_transfer
    # downloaded (a fake weight cache, as for --essence joker)
    monkeypatch.setattr(cache, "resolve_artifact", lambda name: joker if name == "joker" else None)
    code, stdout, _ = cli(["info", "joker", "--json"])
    assert code == 0 and json.loads(stdout)["name"] == "joker"
    code, _, _ = cli(["export", "joker", tmp_path / "j.safetensors"])
    assert code == 0 and essencekit.load_essence(tmp_path / "j.safetensors").recommended_strength == 0.8


def test_export_to_npy_says_the_recommended_strength_is_lost(joker, tmp_path, capsys, cli):
    code, _, stderr = cli(["export", joker, tmp_path / "joker.npy"])
    assert code == 0
    text = " ".join(stderr.split())
    assert "recommended strength (0.8) is lost" in text and "default to strength 1.0" in text
    assert "--strength 0.8" in text
