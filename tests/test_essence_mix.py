"""essencekit.essence_mix: which essences a run applies (``NAME_OR_PATH[@WEIGHT]``), at which strengths, and their sum."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from essencekit import essence_mix
from essencekit.errors import EssencekitError, OptionError
from essencekit.essence import Essence
from essencekit.transfers import layers

# --------------------------------------------------------------------------- --strength, --essence


def test_strengths():
    assert essence_mix.parse_strengths(None) is None
    assert essence_mix.parse_strengths("0.5,1,1.5") == [0.5, 1.0, 1.5]
    assert essence_mix.parse_strengths(0) == [0.0]
    for bad in ("abc", "1,1", "nan", ","):
        with pytest.raises(OptionError) as error:  # a ValueError too, as Python callers expect
            essence_mix.parse_strengths(bad)
        assert error.value.parameter == "strength" and str(error.value).startswith(("strength ", "empty item in strength"))
    with pytest.raises(ValueError, match="^strengths lists a value twice") as error:
        essence_mix.parse_strengths("1,1", parameter="strengths")
    assert error.value.parameter == "strengths"


def test_spec_weights_only_follow_the_last_at():
    assert essence_mix.split_spec("joker") == ("joker", 1.0)
    assert essence_mix.split_spec("joker@0.5") == ("joker", 0.5)
    assert essence_mix.split_spec("me@home/obama.pt@-1") == ("me@home/obama.pt", -1.0)
    assert essence_mix.split_spec("me@home.pt") == ("me@home.pt", 1.0)


def _essence(path: Path, scale: float, strength: str | None = None) -> Path:
    meta = {"name": path.stem}
    if strength is not None:
        meta["recommended_strength"] = strength
    Essence(torch.full((10, 64), scale), metadata=meta).save(path)
    return path


def test_essences_add_up_at_their_recommended_strengths(tmp_path):
    a = _essence(tmp_path / "a.pt", 1.0, "0.8")
    b = _essence(tmp_path / "b.safetensors", 2.0)
    mix = essence_mix.EssenceMix([str(a), f"{b}@0.5"])
    assert mix.label == "a+b"
    # default: each at its own recommended strength; --strength s replaces them all
    assert torch.allclose(mix.delta(None), torch.full((10, 64), 0.8 * 1 + 0.5 * 1.0 * 2))
    assert torch.allclose(mix.delta(2.0), torch.full((10, 64), 2 * (1 + 0.5 * 2)))
    assert mix.effective(None) == [0.8, 0.5]
    masked = mix.delta(1.0, layers.row_mask((0,), 10))
    assert masked[0].abs().sum() > 0 and masked[1:].abs().sum() == 0
    mix.check(10, 64, "tiny")


def test_published_essence_names_resolve_through_the_weight_cache(tmp_path, monkeypatch):
    from essencekit import cache

    published = _essence(tmp_path / "joker.pt", 0.5)
    monkeypatch.setattr(cache, "resolve_artifact", lambda name: published if name == "joker" else None)
    term = essence_mix.load_term("joker@2")
    assert (term.label, term.weight, term.source) == ("joker", 2.0, "published essence joker")
    with pytest.raises(EssencekitError, match="no published essence of that name.*joker"):
        essence_mix.load_term("nobody")
    with pytest.raises(EssencekitError, match="essence file not found"):
        essence_mix.load_term("missing/obama.pt")


def test_an_essence_of_another_generator_is_refused(tmp_path):
    path = tmp_path / "big.pt"
    Essence(torch.zeros(18, 512), metadata={"generator": "stylegan2-ffhq"}).save(path)
    mix = essence_mix.EssenceMix(str(path))
    with pytest.raises(EssencekitError, match=r"shape \[18, 512\] \(made with stylegan2-ffhq\).*takes \[10, 64\]"):
        mix.check(10, 64, "tiny-e4e.pt (embedded decoder)")
