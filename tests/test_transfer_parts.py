"""The pieces of ``essencekit transfer`` that need no model: --layers,
output names, image metadata, the W+ cache file and ordered background work."""

from __future__ import annotations

import threading
import time
from pathlib import PurePosixPath

import numpy as np
import pytest
import torch
from PIL import Image

from essencekit import FaceLandmarks
from essencekit.errors import OptionError
from essencekit.latent_cache import CachedFace, CacheRecord, LatentCache
from essencekit.transfers import concurrency, layers, naming, writing

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
