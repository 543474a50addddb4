"""The training photos of ``train-encoder`` (essencekit/training/data.py): which files are used,
their pixels (aligned through a scripted aligner, or the centre square), the aligned-crop cache,
and the errors for folders with nothing usable."""

from __future__ import annotations

import datetime
import json
import os
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import essencekit
from essencekit import aligned_cache, cache_admin
from essencekit.errors import OptionError
from essencekit.training.data import NO_FACE, TrainingImages, load_training_images

SIZE = 64


def _noise(path, width, height, seed, corner=None):
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    if corner is not None:
        pixels[0, 0] = corner  # tells the scripted aligner what to find
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def photos(tmp_path):
    """Two usable pictures (one not square), a corrupt PNG, a text file, a hidden file and a
    picture in a sub-folder."""
    folder = tmp_path / "train"
    _noise(folder / "b.png", 40, 30, 1)
    _noise(folder / "a.png", 32, 32, 2)
    (folder / "d.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (folder / "notes.txt").write_text("not a photo")
    _noise(folder / ".hidden.png", 16, 16, 3)
    _noise(folder / "sub" / "e.png", 20, 20, 4)
    return folder


def _expected_centre_crop(path, size):
    """Transfer's --no-align input, computed with Pillow alone: the centre square, resized to
    1024 (Lanczos) as an aligned crop, then to the encoder's size (bilinear)."""
    image = Image.open(path).convert("RGB")
    w, h = image.size
    side = min(w, h)
    square = image.crop(((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side))
    big = square.resize((1024, 1024), Image.LANCZOS)
    return torch.from_numpy(np.asarray(big.resize((size, size), Image.BILINEAR)).copy()).permute(2, 0, 1)


def test_centre_crops_in_sorted_order_with_bad_files_listed(photos):
    calls, notes = [], []
    found = load_training_images(photos, align=False, size=SIZE, progress=lambda d, t: calls.append((d, t)),
                                 notify=notes.append)
    assert found.files == ["a.png", "b.png"] and len(found) == 2 and found.size == SIZE
    assert found.pixels.dtype == torch.uint8 and found.pixels.shape == (2, 3, SIZE, SIZE)
    assert torch.equal(found.pixels[1], _expected_centre_crop(photos / "b.png", SIZE))
    assert torch.equal(found.pixels[0], _expected_centre_crop(photos / "a.png", SIZE))
    assert found.recipe == f"crop:{SIZE}"
    from essencekit.cache import sha256_file

    assert found.sha256 == [sha256_file(photos / "a.png"), sha256_file(photos / "b.png")]
    reasons = dict(found.skipped)
    assert [name for name, _ in found.skipped] == ["d.png", "notes.txt"]
    assert reasons["d.png"].startswith("cannot read: ") and str(photos) not in reasons["d.png"]
    assert "not a format" in reasons["notes.txt"]
    assert all("\n" not in reason for reason in reasons.values())
    assert calls == [(1, 3), (2, 3), (3, 3)]  # per photo, the corrupt one included
    assert len(notes) == 1 and "skipped 2 of 4 files" in notes[0] and "d.png" in notes[0]
    assert not aligned_cache.aligned_root().exists()  # nothing to cache without alignment

    deeper = load_training_images(photos, align=False, size=SIZE, recursive=True)
    assert deeper.files == ["a.png", "b.png", "sub/e.png"]


def test_the_digest_follows_contents_not_names(photos, tmp_path):
    digest = load_training_images(photos, align=False, size=SIZE).digest
    renamed = tmp_path / "renamed"
    shutil.copytree(photos, renamed)
    (renamed / "a.png").rename(renamed / "z.png")
    again = load_training_images(renamed, align=False, size=SIZE)
    assert again.files == ["b.png", "z.png"] and again.digest == digest

    _noise(renamed / "z.png", 32, 32, seed=99)
    assert load_training_images(renamed, align=False, size=SIZE).digest != digest
    (renamed / "z.png").unlink()
    assert load_training_images(renamed, align=False, size=SIZE).digest != digest
    assert load_training_images(photos, align=False, size=32).digest != digest  # the recipe counts


def test_an_identical_file_is_used_once(photos):
    shutil.copy(photos / "a.png", photos / "c.png")
    found = load_training_images(photos, align=False, size=SIZE)
    assert found.files == ["a.png", "b.png"] and dict(found.skipped)["c.png"] == "the same file as a.png"


def test_batch_scales_to_minus_one_one_and_flips(photos):
    found = load_training_images(photos, align=False, size=SIZE)
    x = found.batch([1, 0, 1], flips=[True, False, False])
    assert x.dtype == torch.float32 and x.shape == (3, 3, SIZE, SIZE)
    plain = found.pixels.float() / 127.5 - 1
    assert torch.equal(x[0], plain[1].flip(-1)) and torch.equal(x[1], plain[0]) and torch.equal(x[2], plain[1])
    assert x.min() >= -1 and x.max() <= 1
    assert torch.equal(found.batch(torch.tensor([0])), plain[:1])
    with pytest.raises(ValueError, match="flips"):
        found.batch([0, 1], flips=[True])


def test_folders_with_nothing_usable_are_one_line_errors(tmp_path, photos):
    missing = tmp_path / "nowhere"
    with pytest.raises(OptionError, match="no such folder") as error:
        load_training_images(missing, align=False)
    assert error.value.parameter == "train_dir" and str(missing) in str(error.value)

    with pytest.raises(OptionError, match="is a file, not a folder") as error:
        load_training_images(photos / "a.png", align=False, parameter="val_dir")
    assert error.value.parameter == "val_dir"

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(OptionError, match="no image files in") as error:
        load_training_images(empty, align=False)
    assert str(empty) in str(error.value)

    text_only = tmp_path / "text"
    text_only.mkdir()
    (text_only / "readme.txt").write_text("x")
    _noise(text_only / "inner" / "p.png", 8, 8, 5)
    with pytest.raises(OptionError) as error:
        load_training_images(text_only, align=False)
    message = str(error.value)
    assert "readme.txt" in message and "1 sub-folder" in message and "recursive" in message

    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("x.png", "y.jpg"):
        (bad / name).write_bytes(b"garbage")
    with pytest.raises(OptionError) as error:
        load_training_images(bad, align=False, parameter="val_dir")
    message = str(error.value)
    assert error.value.parameter == "val_dir" and str(bad) in message
    assert "all 2 file(s) were skipped" in message and "x.png" in message and "\n" not in message

    with pytest.raises(OptionError) as error:
        load_training_images(photos, align=False, size=4)
    assert error.value.parameter == "size"


# ---------------------------------------------------------------------------------------------
# alignment, through a scripted aligner registered as a plugin


FACELESS = (0, 0, 0)
TINY = (1, 1, 1)


class Fixed(essencekit.Aligner):
    """Finds one face at fixed landmarks (224 px FFHQ square), a tiny one in pictures whose
    top-left pixel is TINY, and none where it is FACELESS; counts its calls."""

    name = "fixed"
    calls = 0

    def detect(self, image):
        type(self).calls += 1
        corner = tuple(np.asarray(image)[0, 0])
        if corner == FACELESS:
            return []
        scale = 0.25 if corner == TINY else 1.0

        def at(x, y):
            return (128 + (x - 128) * scale, 128 + (y - 128) * scale)

        return [essencekit.FaceLandmarks(at(100, 110), at(156, 110), at(106, 170), at(150, 170), (80, 80, 176, 190))]


@pytest.fixture
def fixed(register_aligner, monkeypatch):
    monkeypatch.setattr(Fixed, "calls", 0)
    register_aligner(Fixed(), "fixed-aligner")
    return Fixed


@pytest.fixture
def faces(tmp_path):
    folder = tmp_path / "faces"
    _noise(folder / "one.png", 256, 256, 10, corner=(200, 10, 10))
    _noise(folder / "two.png", 256, 256, 11, corner=(10, 200, 10))
    _noise(folder / "wall.png", 256, 256, 12, corner=FACELESS)
    _noise(folder / "far.png", 256, 256, 13, corner=TINY)
    return folder


def test_faces_are_aligned_as_transfer_aligns_them_and_cached(fixed, faces):
    from essencekit.faces import align_faces
    from essencekit.images import read_image

    found = load_training_images(faces, aligner="fixed", size=SIZE)
    assert found.files == ["one.png", "two.png"] and found.recipe == f"aligned:fixed:{SIZE}"
    reasons = dict(found.skipped)
    assert reasons["wall.png"] == NO_FACE
    assert reasons["far.png"].startswith("face too small") and "px across" in reasons["far.png"]
    assert fixed.calls == 4
    # what e4e sees at transfer time, bit for bit
    transfer_input = align_faces(read_image(faces / "two.png"), aligner="fixed", which="largest")[0].crop_tensor(SIZE)
    assert torch.equal(found.batch([1]), transfer_input)
    fixed.calls = 0

    again = load_training_images(faces, aligner="fixed", size=SIZE)
    assert fixed.calls == 0  # crops and no-face markers come from the cache
    assert torch.equal(again.pixels, found.pixels) and again.skipped == found.skipped
    assert again.digest == found.digest

    store = aligned_cache.AlignedCache("fixed")
    crop = store.crop_path(found.sha256[0], SIZE)
    sha = found.sha256[0]
    assert crop.is_file() and crop == aligned_cache.aligned_root() / "v1" / "fixed" / sha[:2] / f"{sha}-{SIZE}.png"
    from essencekit.cache import sha256_file

    marker = store.marker_path(sha256_file(faces / "wall.png"))
    assert json.loads(marker.read_text()) == {"reason": NO_FACE}

    crop.write_bytes(crop.read_bytes()[:40])  # a damaged entry is recomputed, and rewritten
    third = load_training_images(faces, aligner="fixed", size=SIZE)
    assert fixed.calls == 1 and torch.equal(third.pixels, found.pixels)
    assert store.load_crop(found.sha256[0], SIZE) is not None

    load_training_images(faces, aligner="fixed", size=32)  # another size: new crops, no new markers
    assert fixed.calls == 3


def test_a_faceless_folder_suggests_no_align(fixed, tmp_path):
    folder = tmp_path / "walls"
    for seed in range(2):
        _noise(folder / f"w{seed}.png", 64, 64, seed, corner=FACELESS)
    with pytest.raises(OptionError) as error:
        load_training_images(folder, aligner="fixed", parameter="val_dir")
    message = str(error.value)
    assert error.value.parameter == "val_dir" and str(folder) in message and NO_FACE in message
    assert "no_align" in message and error.value.args[0].mentions == ("no_align",)


def test_cache_list_and_prune_know_the_aligned_crops(fixed, faces, cli):
    load_training_images(faces, aligner="fixed", size=SIZE)
    [group] = cache_admin.usage().aligned
    files = aligned_cache.entries()
    assert (group.recipe, group.aligner, group.entries) == ("v1", "fixed", 4)  # two crops, two markers
    assert group.size == sum(e.size for e in files) and group.last_used == datetime.date.today().isoformat()
    code, out, _ = cli(["cache", "list", "--json"])
    assert code == 0 and json.loads(out)["aligned"][0]["entries"] == 4

    old = datetime.datetime(2020, 1, 1, 12).timestamp()
    os.utime(files[0].path, (old, old))
    assert cache_admin.prune_aligned(datetime.date(2021, 1, 1), dry_run=True).entries == 1
    assert files[0].path.exists()
    result = cache_admin.prune_aligned(datetime.date(2021, 1, 1))
    assert result.entries == 1 and result.size == files[0].size and not files[0].path.exists()
    assert len(aligned_cache.entries()) == 3


def test_training_images_is_a_plain_record():
    images = TrainingImages(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), ["a.png"], ["0" * 64], [], "crop:8")
    assert images.digest == TrainingImages(images.pixels, ["b.png"], ["0" * 64], [], "crop:8").digest
    assert images.digest != TrainingImages(images.pixels, ["a.png"], ["0" * 64], [], "crop:16").digest
