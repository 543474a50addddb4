"""The FID feature cache (essencekit/feature_cache.py): real images' Inception features kept by
content, read back exactly, damaged or hostile entries read as absent, an unwritable cache never
failing a run; and ``real_features`` through it."""

from __future__ import annotations

import datetime
import os

import numpy as np
import pytest
import torch
from PIL import Image

from essencekit import cache_admin
from essencekit.cache import sha256_file
from essencekit.evaluation import fid
from essencekit.feature_cache import FeatureCache, features_root

INCEPTION = "9f" * 32
DIM = 8


class CountingModel(torch.nn.Module):
    """Stands in for the Inception: 8 features from the mean colour, and a count of the images
    it was run on (the cost a cache hit saves)."""

    def __init__(self):
        super().__init__()
        self.images = 0

    def forward(self, batch):
        self.images += batch.shape[0]
        means = batch.double().mean(dim=(2, 3))
        return (torch.cat([means, means ** 2, means[:, :2] * 0.5], dim=1).float(),)


@pytest.fixture
def photos(tmp_path):
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(3):
        pixels = np.random.default_rng(i).integers(0, 256, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
    return sorted(folder.iterdir())


@pytest.fixture
def small(monkeypatch):
    monkeypatch.setattr(fid, "FEATURE_DIM", DIM)
    return FeatureCache(INCEPTION, DIM)


def test_features_round_trip_exactly_and_are_keyed_by_inception_and_content(small):
    values = np.random.default_rng(0).normal(size=DIM).astype(np.float32)
    assert small.load("aa" * 32) is None
    assert small.store("aa" * 32, values)
    assert np.array_equal(small.load("aa" * 32), values) and small.load("aa" * 32).dtype == np.float32
    assert small.path("aa" * 32) == features_root() / "v1" / INCEPTION[:16] / "aa" / f"{'aa' * 32}.npy"
    assert FeatureCache("00" * 32, DIM).load("aa" * 32) is None  # another Inception's features are not these
    assert FeatureCache(INCEPTION, DIM + 1).load("aa" * 32) is None


def test_damaged_or_hostile_entries_read_as_absent(small):
    whole = small.path("aa" * 32)
    small.store("aa" * 32, np.ones(DIM))
    good = whole.read_bytes()
    for name, write in (
        ("truncated", lambda handle: handle.write(good[:60])),
        ("a zip, not an .npy", lambda handle: handle.write(b"PK\x03\x04 not a numpy file")),
        ("pickled objects", lambda handle: np.save(handle, np.array([object()] * DIM), allow_pickle=True)),
        ("float64", lambda handle: np.save(handle, np.zeros(DIM))),
        ("another shape", lambda handle: np.save(handle, np.zeros((2, DIM), dtype=np.float32))),
        ("not finite", lambda handle: np.save(handle, np.full(DIM, np.nan, dtype=np.float32))),
    ):
        with open(whole, "wb") as handle:
            write(handle)
        assert small.load("aa" * 32) is None, name
    small.store("aa" * 32, np.ones(DIM))  # a damaged entry is simply replaced
    assert np.array_equal(small.load("aa" * 32), np.ones(DIM, dtype=np.float32))


def test_an_unwritable_cache_says_so_and_keeps_nothing(small, tmp_path):
    features_root().parent.mkdir(parents=True, exist_ok=True)
    features_root().write_text("a file where the cache's folder would be")
    assert small.store("aa" * 32, np.ones(DIM)) is False
    assert small.load("aa" * 32) is None


def test_real_features_read_cached_images_without_decoding_or_inception(small, photos, monkeypatch):
    model = CountingModel()
    first = fid.real_features(photos, model, cache=small)
    assert model.images == 3 and first.cached == 0 and not first.unwritable
    assert first.features.shape == (3, DIM) and first.features.dtype == np.float64

    monkeypatch.setattr("essencekit.images.read_image", lambda *a, **k: pytest.fail("a cached image was decoded"))
    again = fid.real_features(photos, model, cache=small)
    assert model.images == 3 and again.cached == 3
    assert np.array_equal(again.features, first.features)  # exactly: float32 kept, float32 computed
    monkeypatch.undo()

    # keyed by content: a copy under another name hits, an edited image misses
    copy = photos[0].with_name("copy-of-0.png")
    copy.write_bytes(photos[0].read_bytes())
    edited = np.array(Image.open(photos[1]))
    edited[0, 0] ^= 255
    Image.fromarray(edited).save(photos[1])
    third = fid.real_features([copy, photos[1], photos[2]], model, cache=small)
    assert third.cached == 2 and model.images == 4
    assert np.array_equal(third.features[0], first.features[0]) and not np.array_equal(third.features[1], first.features[1])

    # without a cache: computed again, the same numbers
    plain = fid.real_features(photos[2:], model)
    assert plain.cached == 0 and model.images == 5 and np.allclose(plain.features[0], first.features[2])


def test_an_interrupted_run_keeps_the_batches_it_finished(small, photos, monkeypatch):
    monkeypatch.setattr(fid, "BATCH", 1)  # each image its own batch
    model = CountingModel()
    seen = []

    def progress(n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fid.real_features(photos, model, cache=small, progress=progress)
    kept = [small.load(sha256_file(p)) is not None for p in photos]
    assert kept == [True, True, False]
    assert fid.real_features(photos, model, cache=small).cached == 2


def test_real_features_go_on_when_the_cache_cannot_be_written(small, photos):
    features_root().parent.mkdir(parents=True, exist_ok=True)
    features_root().write_text("not a folder")
    result = fid.real_features(photos, CountingModel(), cache=small)
    assert result.unwritable and result.cached == 0 and result.features.shape == (3, DIM)


def test_cache_list_and_prune_know_the_features(small, cli):
    import json

    small.store("aa" * 32, np.ones(DIM))
    small.store("bb" * 32, np.ones(DIM))
    old = datetime.datetime(2020, 1, 1, 12).timestamp()
    yesterday = (datetime.datetime.now() - datetime.timedelta(days=1)).timestamp()
    os.utime(small.path("aa" * 32), (old, old))
    os.utime(small.path("bb" * 32), (yesterday, yesterday))
    [group] = cache_admin.usage().features
    assert (group.recipe, group.inception, group.entries, group.oldest) == ("v1", INCEPTION[:16], 2, "2020-01-01")
    code, out, _ = cli(["cache", "list"])
    assert code == 0 and "FID features" in out and INCEPTION[:16] in out
    code, out, _ = cli(["cache", "prune", "--older-than", "2021-01-01", "--json"])
    assert code == 0 and json.loads(out)["features"]["entries"] == 1
    code, out, _ = cli(["cache", "prune", "--older-than", datetime.date.today().isoformat(), "--dry-run"])
    assert code == 0 and "the FID features of 1 image(s)" in out  # the one used yesterday, kept
    assert small.load("aa" * 32) is None and small.load("bb" * 32) is not None


def test_an_image_gone_before_it_is_read_is_named(small, photos):
    from essencekit.images import ImageReadError

    photos[1].unlink()  # listed, then removed by someone else
    with pytest.raises(ImageReadError, match="1.png"):
        fid.real_features(photos, CountingModel(), cache=small)
