"""Reading photos: every format and mode Pillow reads comes out as upright 8-bit RGB, and every
bad file is one clear error naming it."""

from __future__ import annotations

import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from essencekit import EssencekitError
from essencekit.images import DEFAULT_MAX_PIXELS, ImageReadError, read_image, to_rgb

FIXTURES = Path(__file__).parent / "fixtures"

RNG = np.random.default_rng(0)
PHOTO = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)
_yy, _xx = np.mgrid[:24, :32]
SMOOTH = np.stack([_xx * 8, _yy * 10, 255 - _xx * 4], axis=-1).astype(np.uint8)  # lossy codecs keep it


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png(width: int, height: int, bit_depth: int, color_type: int, rows: bytes) -> bytes:
    # Pillow cannot write 16-bit RGB, and a bomb must claim a size it does not have
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(rows)) + _png_chunk(b"IEND", b"")


def _save(tmp_path, name: str, image: Image.Image, **kwargs):
    path = tmp_path / name
    image.save(path, **kwargs)
    return path


FORMATS = [("png", {}), ("jpg", {"quality": 100}), ("bmp", {}), ("tiff", {}), ("webp", {"lossless": True}), ("ppm", {})]
if features.check("avif"):
    FORMATS.append(("avif", {"quality": 100}))


@pytest.mark.parametrize("ext, options", FORMATS)
def test_every_common_format_reads_as_rgb(tmp_path, ext, options):
    path = _save(tmp_path, f"photo.{ext}", Image.fromarray(SMOOTH), **options)
    image = read_image(path)
    assert image.mode == "RGB" and image.size == (32, 24)
    error = np.abs(np.asarray(image, dtype=int) - SMOOTH)
    assert error.max() <= (0 if ext in ("png", "bmp", "tiff", "webp", "ppm") else 12)


def test_modes_are_converted_to_rgb(tmp_path):
    gray = Image.fromarray(PHOTO[..., 0])
    cases = {
        "L.png": (gray, PHOTO[..., 0]),
        "1.png": (gray.convert("1", dither=Image.Dither.NONE), np.where(PHOTO[..., 0] >= 128, 255, 0)),
        "P.png": (Image.fromarray(PHOTO).quantize(16), None),
        "cmyk.tiff": (Image.fromarray(PHOTO).convert("CMYK"), PHOTO),
        "cmyk.jpg": (Image.fromarray(PHOTO).convert("CMYK"), None),
    }
    for name, (image, expected) in cases.items():
        out = read_image(_save(tmp_path, name, image))
        assert out.mode == "RGB" and out.size == (32, 24), name
        if expected is not None:
            exp = expected if expected.ndim == 3 else np.repeat(expected[..., None], 3, axis=-1)
            assert np.abs(np.asarray(out, dtype=int) - exp).max() <= 1, name
    palette = Image.fromarray(PHOTO).quantize(16)
    assert np.array_equal(np.asarray(read_image(tmp_path / "P.png")), np.asarray(palette.convert("RGB")))


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200  # red everywhere
    rgba[0, 0, 3] = 0  # transparent -> white
    rgba[0, 1, 3] = 255  # opaque -> red
    rgba[0, 2, 3] = 128  # half -> pink
    out = np.asarray(read_image(_save(tmp_path, "a.png", Image.fromarray(rgba, "RGBA"))))
    assert out[0, 0].tolist() == [255, 255, 255]
    assert out[0, 1].tolist() == [200, 0, 0]
    assert np.abs(out[0, 2].astype(int) - [227, 127, 127]).max() <= 1

    la = Image.fromarray(np.dstack([np.full((4, 4), 10, np.uint8), np.zeros((4, 4), np.uint8)]), "LA")
    assert np.asarray(read_image(_save(tmp_path, "la.png", la)))[0, 0].tolist() == [255, 255, 255]

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    palette.info["transparency"] = 1
    assert np.asarray(read_image(_save(tmp_path, "pt.png", palette, transparency=1)))[0, 0].tolist() == [255, 255, 255]


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257, 32896, 65535]], dtype=np.uint16)
    out = np.asarray(read_image(_save(tmp_path, "g16.png", Image.fromarray(values))))
    assert out[0, :, 0].tolist() == [0, 1, 128, 255]
    assert np.asarray(read_image(_save(tmp_path, "g16.tiff", Image.fromarray(values))))[0, :, 0].tolist() == [0, 1, 128, 255]

    rgb16 = np.array([[[65535, 0, 32896]]], dtype=">u2")
    path = tmp_path / "rgb16.png"
    path.write_bytes(_png(1, 1, 16, 2, b"\x00" + rgb16.tobytes()))
    assert np.asarray(read_image(path))[0, 0].tolist() == [255, 0, 128]

    floats = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    out = np.asarray(read_image(_save(tmp_path, "f.tiff", Image.fromarray(floats, "F"))))
    assert out[0, :, 0].tolist() == [0, 128, 255]


def test_first_frame_of_an_animation(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    assert np.asarray(read_image(path))[0, 0].tolist() == [255, 0, 0]


# each EXIF orientation and the numpy operation that shows the stored pixels upright
ORIENTATIONS = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),  # transverse: about the anti-diagonal
    8: lambda a: np.rot90(a, 1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _save(tmp_path, "o.png", Image.fromarray(PHOTO), exif=exif)
    out = np.asarray(read_image(path))
    expected = ORIENTATIONS[orientation](PHOTO)
    assert out.shape == expected.shape
    assert np.array_equal(out, expected)


def test_jpeg_exif_orientation(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path, "o.jpg", Image.new("RGB", (60, 20), (200, 30, 30)), exif=exif, quality=95)
    assert read_image(path).size == (20, 60)


def test_broken_exif_does_not_cost_the_photo(tmp_path):
    path = _save(tmp_path, "e.jpg", Image.fromarray(PHOTO), exif=b"Exif\x00\x00II*\x00\xff\xff\xff\x7f")
    assert read_image(path).size == (32, 24)


def _bad_files(tmp_path) -> dict[str, tuple[os.PathLike, str]]:
    files = {}
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    files["empty"] = (empty, "empty")
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photo\n" * 20)
    files["text"] = (text, "not-an-image")
    big = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(big, "JPEG", quality=90)
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(big.getvalue()[: len(big.getvalue()) // 2])
    files["truncated jpeg"] = (cut, "truncated")
    big = io.BytesIO()
    Image.fromarray(RNG.integers(0, 256, (256, 256, 3), dtype=np.uint8)).save(big, "PNG")
    cut = tmp_path / "cut.png"
    cut.write_bytes(big.getvalue()[: len(big.getvalue()) // 2])
    files["truncated png"] = (cut, "truncated")
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(20000, 10000, 8, 2, b"\x00" * 16))  # claims 200 megapixels
    files["bomb"] = (bomb, "too-large")
    header = tmp_path / "header.png"
    header.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    files["damaged header"] = (header, "not-an-image")
    files["missing"] = (tmp_path / "nope.png", "missing")
    folder = tmp_path / "folder.png"
    folder.mkdir()
    files["folder"] = (folder, "unreadable")
    return files


def test_bad_files_raise_one_line_errors_naming_the_file(tmp_path):
    for label, (path, kind) in _bad_files(tmp_path).items():
        with pytest.raises(ImageReadError) as caught:
            read_image(path)
        error = caught.value
        assert isinstance(error, EssencekitError)
        assert error.kind == kind, label
        assert error.path == path
        message = str(error)
        assert "\n" not in message and str(path) in message, label


def test_bomb_message_and_limit(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png(20000, 10000, 8, 2, b"\x00" * 16))
    with pytest.raises(ImageReadError, match="200 megapixels.*raise max_pixels$"):
        read_image(bomb)
    assert DEFAULT_MAX_PIXELS == 50_000_000  # docs/guide.md gives the reasons
    small = _save(tmp_path, "s.png", Image.fromarray(PHOTO))
    with pytest.raises(ImageReadError) as caught:
        read_image(small, max_pixels=700)
    assert caught.value.kind == "too-large"
    assert read_image(small, max_pixels=768).size == (32, 24)
    # Pillow's own global threshold is left as it was
    assert Image.MAX_IMAGE_PIXELS == 89_478_485


def test_a_limit_above_pillows_own_is_honoured(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)  # Pillow would refuse past 200 pixels
    path = _save(tmp_path, "s.png", Image.fromarray(PHOTO))
    assert read_image(path, max_pixels=None).size == (32, 24)
    assert Image.MAX_IMAGE_PIXELS == 100


def test_unreadable_file(tmp_path, monkeypatch):
    import essencekit.images

    path = _save(tmp_path, "locked.png", Image.fromarray(PHOTO))

    def denied(*args, **kwargs):  # chmod 0 does not stop root, so the refusal is simulated
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(essencekit.images, "open", denied, raising=False)
    with pytest.raises(ImageReadError, match="locked.png: cannot be read \\(Permission denied\\)") as caught:
        read_image(path)
    assert caught.value.kind == "unreadable"


def test_inputs_are_never_modified(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    good = [
        _save(tmp_path, "rot.png", Image.fromarray(PHOTO), exif=exif),
        _save(tmp_path, "rgba.png", Image.fromarray(PHOTO).convert("RGBA")),
        _save(tmp_path, "cmyk.jpg", Image.fromarray(PHOTO).convert("CMYK")),
    ]
    bad = [path for path, kind in _bad_files(tmp_path).values() if path.is_file()]
    before = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in good + bad}
    for path in good + bad:
        try:
            read_image(path)
        except ImageReadError:
            pass
    after = {p: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in good + bad}
    assert before == after


def test_file_objects_and_to_rgb():
    buffer = io.BytesIO()
    Image.fromarray(PHOTO).save(buffer, "PNG")
    buffer.seek(0)
    assert np.array_equal(np.asarray(read_image(buffer)), PHOTO)
    with pytest.raises(ImageReadError, match="<image data>"):
        read_image(io.BytesIO(b"nothing"))
    assert to_rgb(Image.new("I", (2, 2), 200)).getpixel((0, 0)) == (200, 200, 200)
    assert to_rgb(Image.new("I", (2, 2), 65535)).getpixel((0, 0)) == (255, 255, 255)


# --------------------------------------------------------------------------- decompression bombs


@pytest.fixture(scope="module")
def bomb_12k(tmp_path_factory):
    """A real, valid 12000 x 12000 black PNG: about 420 kB on disk, 432 MB of RGB decoded."""
    squeeze = zlib.compressobj(9)
    row = bytes(1 + 3 * 12000)  # filter byte 0, then black pixels
    rows = b"".join(squeeze.compress(row) for _ in range(12000)) + squeeze.flush()
    ihdr = struct.pack(">IIBBBBB", 12000, 12000, 8, 2, 0, 0, 0)
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b""))
    assert path.stat().st_size < 500_000
    return path


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to decode pixels fails the test (Pillow decodes in ImageFile.load)."""
    from PIL import ImageFile

    def decode(self):
        raise AssertionError(f"{self.size} pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", decode)


def test_a_small_file_with_a_huge_image_is_refused_from_its_header(bomb_12k, no_decoding):
    from essencekit.images import check_image_size

    with pytest.raises(ImageReadError) as caught:
        read_image(bomb_12k)
    error = caught.value
    assert error.kind == "too-large"
    message = str(error)
    assert "\n" not in message and str(bomb_12k) in message
    assert "12000x12000 is 144 megapixels, over the limit of 50 megapixels" in message and "raise max_pixels" in message and "--" not in message
    with pytest.raises(ImageReadError, match="over the limit of 50 megapixels"):
        check_image_size(bomb_12k)
    # the header alone is read: size known, nothing decoded
    assert check_image_size(bomb_12k, max_pixels=None) == (12000, 12000)


@pytest.mark.parametrize("cached", [True, False], ids=["cache-hit", "no-cache"])
def test_the_pixel_limit_holds_for_a_cached_result_too(bomb_12k, cached, tmp_path, monkeypatch):
    import torch

    from essencekit.cache import sha256_file
    from essencekit.faces import face_from_aligned_crop
    from essencekit.latent_cache import NO_ALIGN, CachedFace, CacheRecord, LatentCache
    from essencekit.transfers import Transferrer

    models = Transferrer(encoder=FIXTURES / "tiny-e4e.pt", device="cpu")
    generator = models.generator
    if cached:
        # what an earlier run with --max-pixels 0 would have left: the photo's W+, so this run
        # need not decode the photo at all
        face = face_from_aligned_crop(Image.new("RGB", (8, 8)))
        record = CacheRecord(NO_ALIGN, [CachedFace(0, face.landmarks, face.transform.to_dict(), face.size)], [],
                             {0: torch.zeros(generator.n_latent, generator.style_dim)})
        LatentCache(models.encoder_sha256, NO_ALIGN).store(sha256_file(bomb_12k), record)
        [result] = models.invert(bomb_12k, align=False, max_pixels=None)
        assert result.status == "done"  # the cache answers when the limit is lifted
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the photo was decoded"))
    [result] = models.invert(bomb_12k, align=False, cache=cached)
    assert result.status == "failed"
    assert str(bomb_12k) in result.reason and "over the limit of 50 megapixels" in result.reason


# --------------------------------------------------------------------------- HEIC / HEIF


def _heic(path, pixels=SMOOTH):
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.from_pillow(Image.fromarray(pixels)).save(path, quality=-1)  # -1: lossless
    return path


def test_heic_photos_are_read_and_found_in_folders(tmp_path):
    from essencekit.inputs import discover

    path = _heic(tmp_path / "IMG_0001.HEIC")
    image = read_image(path)
    assert image.mode == "RGB" and image.size == (32, 24)
    assert np.abs(np.asarray(image, dtype=int) - SMOOTH).mean() < 4  # HEVC: close, not exact
    _heic(tmp_path / "IMG_0002.heif")
    assert [s.path.name for s in discover(tmp_path)] == ["IMG_0001.HEIC", "IMG_0002.heif"]


def test_skipped_files_are_named_with_the_reason(tmp_path, monkeypatch, capsys):
    """Without a HEIC reader, a folder of iPhone photos says so (not "set recursive")."""
    import torch

    import essencekit.images
    from essencekit.cli import main
    from essencekit.essence import Essence

    heif = essencekit.images.HEIF_SUFFIXES
    readable = essencekit.images.photo_suffixes() - heif
    monkeypatch.setattr(essencekit.images, "photo_suffixes", lambda: readable)
    monkeypatch.setattr(essencekit.images, "_heif_readable", False)
    photos = tmp_path / "iphone"
    photos.mkdir()
    for name in ("IMG_0001.HEIC", "IMG_0002.heic", "notes.txt"):
        (photos / name).write_bytes(b"x")
    essence = Essence(torch.zeros(10, 64)).save(tmp_path / "e.pt")

    def run(*args):
        with pytest.raises(SystemExit) as exit_:
            main(["transfer", *map(str, args), "-e", str(essence), "--encoder", str(FIXTURES / "tiny-e4e.pt"),
                  "--backend", "cpu", "--no-align"])
        return exit_.value.code, capsys.readouterr().err

    code, err = run(photos)
    assert code == 1
    message = " ".join(err.split())  # Rich wraps long lines
    assert "3 files skipped: IMG_0001.HEIC, IMG_0002.heic (HEIC/HEIF needs pillow-heif: pip install pillow-heif)" in message
    assert "notes.txt (.txt is not a format this Pillow reads)" in message
    assert "recursive" not in message  # there is no sub-folder to look into
    # beside photos it can read, the skipped ones are still named
    Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photos / "crop.png")
    (photos / "sub").mkdir()
    code, err = run(photos, "-o", tmp_path / "out")
    assert code == 0 and (tmp_path / "out" / "crop_e.png").is_file()
    assert "3 files skipped: IMG_0001.HEIC" in " ".join(err.split())


def test_clip_targets_are_read_like_photos(tmp_path, bomb_12k, monkeypatch):
    """A CLIP target path goes through read_image: upright, and the pixel limit holds."""
    import torch
    from PIL import ImageFile

    from essencekit.clip import OPENAI_MEAN, OPENAI_STD, ClipEncoder, ClipVariant

    variant = ClipVariant("t", {"embed_dim": 4, "vision_cfg": {}, "text_cfg": {}}, "w", OPENAI_MEAN, OPENAI_STD)
    encoder = ClipEncoder(torch.nn.Identity(), variant, input_mode="raw", generator_size=32)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = _save(tmp_path, "rotated.png", Image.fromarray(PHOTO), exif=exif)
    upright = Image.fromarray(ORIENTATIONS[6](PHOTO))
    assert torch.equal(encoder.preprocess_target(path), encoder.preprocess_target(upright))
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("the photo was decoded"))
    with pytest.raises(EssencekitError, match="bomb.png: 12000x12000 .* over the limit of 50 megapixels"):
        encoder.preprocess_target(bomb_12k)
