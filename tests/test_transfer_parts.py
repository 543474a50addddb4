"""The pieces of ``essencekit transfer`` that need no model: --layers, --strength, essence specs,
output names, input discovery, image metadata, the W+ cache file and ordered background work."""

from __future__ import annotations

import threading
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import torch
from PIL import Image

from essencekit import FaceLandmarks, essence_mix, inputs
from essencekit.errors import EssencekitError, OptionError
from essencekit.essence import Essence
from essencekit.transfers import concurrency, layers, naming, writing
from essencekit.transfers.latent_cache import CachedFace, CacheRecord, LatentCache

# --------------------------------------------------------------------------- --layers


@pytest.mark.parametrize(
    "size, n_latent, coarse, medium, fine",
    [
        (64, 10, [0, 1, 2, 3], [4, 5, 6, 7], [8, 9]),
        (256, 14, [0, 1, 2, 3], [4, 5, 6, 7], list(range(8, 14))),
        (1024, 18, [0, 1, 2, 3], [4, 5, 6, 7], list(range(8, 18))),
    ],
)
def test_layer_groups_follow_the_resolution_each_row_drives(size, n_latent, coarse, medium, fine):
    assert 2 * int(np.log2(size)) - 2 == n_latent
    assert list(layers.parse_layers("coarse", n_latent)) == coarse
    assert list(layers.parse_layers("medium", n_latent)) == medium
    assert list(layers.parse_layers("fine", n_latent)) == fine
    assert layers.row_resolution(n_latent - 1) == size  # the last row is the last toRGB
    assert layers.parse_layers(None, n_latent) == tuple(range(n_latent))
    assert layers.parse_layers("coarse, fine", n_latent) == tuple(coarse + fine)
    assert layers.parse_layers("0-7", n_latent) == tuple(range(8))
    assert layers.parse_layers("4,5,6", n_latent) == (4, 5, 6)
    assert layers.parse_layers("MEDIUM,0", n_latent) == (0, 4, 5, 6, 7)


@pytest.mark.parametrize("spec, message", [
    ("10", "rows are 0-9"), ("3-1", "backwards"), ("eyes", "takes coarse, medium, fine"), ("1,,2", "empty"),
    ("-1", "takes coarse"),
])
def test_bad_layers_say_what_is_allowed(spec, message):
    with pytest.raises(OptionError, match=message) as error:
        layers.parse_layers(spec, 10)
    assert error.value.parameter == "layers" and "--" not in str(error.value)


def test_row_mask():
    mask = layers.row_mask((1, 3), 5)
    assert mask.shape == (5, 1) and mask[:, 0].tolist() == [0, 1, 0, 1, 0]


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


# --------------------------------------------------------------------------- names


def test_output_names():
    assert naming.output_name("a", "joker", ".png") == "a_joker.png"
    assert naming.output_name("a", "joker+keanu", ".jpg", face=1, strength=1.2) == "a_face1_joker+keanu_s1.2.jpg"
    assert naming.output_name("sub/a", "joker", ".png", tag="grid") == "sub/a_joker_grid.png"
    assert [naming.format_strength(s) for s in (1.0, 0.5, -0.25, 1.25)] == ["s1", "s0.5", "s-0.25", "s1.25"]


def test_clashing_stems_get_their_extension_then_a_number():
    rels = [PurePosixPath(p) for p in ("a.png", "a.jpg", "b.png", "sub/a.png", "A.PNG", "a_png.gif")]
    bases = naming.plan_bases(rels)
    assert bases == ["a_png", "a_jpg", "b", "sub/a", "A_png-2", "a_png-3"]
    assert len({b.lower() for b in bases}) == len(bases)


def test_the_registry_never_hands_out_a_path_twice(tmp_path):
    registry = naming.NameRegistry()
    assert registry.claim(tmp_path / "a_face0_x.png") == tmp_path / "a_face0_x.png"
    assert registry.claim(tmp_path / "a_face0_x.png") == tmp_path / "a_face0_x-2.png"


# --------------------------------------------------------------------------- inputs


def test_discovery_of_files_folders_and_globs(tmp_path):
    for folder in ("in/sub/.hidden", "in/out"):
        (tmp_path / folder).mkdir(parents=True)
    for name in ("in/b.png", "in/a.JPG", "in/notes.txt", "in/.x.png", "in/sub/c.webp", "in/sub/.hidden/d.png",
                 "in/w.safetensors", "in/out/old.png", "other.bin"):
        (tmp_path / name).write_bytes(b"x")
    found = inputs.discover([tmp_path / "in"])
    assert [s.rel.as_posix() for s in found] == ["a.JPG", "b.png", "w.safetensors"]
    assert [s.kind for s in found] == ["image", "image", "latents"]
    deep = inputs.discover([tmp_path / "in"], recursive=True, exclude=tmp_path / "in" / "out")
    assert [s.rel.as_posix() for s in deep] == ["a.JPG", "b.png", "w.safetensors", "sub/c.webp"]
    # an explicit file is always taken (then reported if it is no image); each file once
    listed = inputs.discover([tmp_path / "other.bin", str(tmp_path / "in" / "*.png"), tmp_path / "in" / "b.png"])
    assert [s.path.name for s in listed] == ["other.bin", "b.png"]
    with pytest.raises(EssencekitError, match="both an input folder and the output folder"):
        inputs.discover([tmp_path / "in"], exclude=tmp_path / "in")
    missing = inputs.discover([tmp_path / "nope.png", str(tmp_path / "*.gif")])
    assert [s.error.split(": ", 1)[1] for s in missing] == ["no such file or folder", "no file matches this pattern"]


# --------------------------------------------------------------------------- metadata


@pytest.mark.parametrize("fmt", ["png", "jpg", "webp"])
def test_outputs_carry_the_essence_strength_and_version(tmp_path, fmt):
    import essencekit

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 48, 3), dtype=np.uint8))
    record = {"essence": "joker", "strength": 0.5, "essencekit_version": essencekit.__version__}
    path = writing.save_image(image, tmp_path / f"x{writing.extension(fmt)}", fmt, quality=80, metadata=record)
    assert writing.read_metadata(path) == record
    with Image.open(path) as reread:
        assert reread.size == (48, 32) and reread.format == writing.FORMATS[fmt][0]
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


# --------------------------------------------------------------------------- the W+ cache file


def test_cache_records_round_trip(tmp_path):
    cache = LatentCache("ab" * 32, "dlib", root=tmp_path)
    lm = FaceLandmarks((1.0, 2.0), (3.0, 2.0), (1.5, 4.0), (2.5, 4.0), (0.0, 0.0, 5.0, 5.0), 0.9)
    transform = {"quad": [[0, 0], [0, 4], [4, 4], [4, 0]], "size": 1024, "photo_size": [8, 8]}
    record = CacheRecord("largest", [CachedFace(0, lm, transform, 4.0)], [{"reason": "too-small", "message": "m"}],
                         {0: torch.arange(6.0).reshape(2, 3)})
    cache.store("cd" * 32, record)
    back = cache.load("cd" * 32)
    assert back.mode == "largest" and back.faces[0].landmarks == lm and back.faces[0].transform == transform
    assert torch.equal(back.latents[0], record.latents[0]) and back.rejected == record.rejected
    assert back.covers("largest") and not back.covers("all")
    assert CacheRecord("all").covers("largest")
    # nothing found is worth remembering too; a damaged entry is just a miss
    cache.store("ef" * 32, CacheRecord("all"))
    assert cache.load("ef" * 32).faces == []
    cache.path("cd" * 32).write_bytes(b"garbage")
    assert cache.load("cd" * 32) is None


# --------------------------------------------------------------------------- ordered background work


@pytest.mark.parametrize("workers", [0, 3])
def test_ordered_map_keeps_order_and_bounds_the_lookahead(workers):
    running = []
    lock = threading.Lock()
    peak = [0]

    def work(i):
        with lock:
            running.append(i)
            peak[0] = max(peak[0], len(running))
        time.sleep(0.01 * (5 - i % 5))
        with lock:
            running.remove(i)
        return i * i

    assert list(concurrency.ordered_map(work, range(12), workers, depth=4)) == [i * i for i in range(12)]
    assert peak[0] <= max(1, workers)
