"""Images, the one home for every command: reading user photos robustly (one RGB ``PIL.Image``
from any file Pillow reads, or one clear error that names the file), RGB conversion, target
images (:func:`read_target`) and contact sheets (:func:`contact_sheet`).

Shared by ``extract``, ``transfer`` and ``evaluate``, which report a bad input per file and go on,
so every failure is an :class:`ImageReadError` whose ``kind`` says which of the documented cases
it is. The file is opened read-only and never written.
"""

from __future__ import annotations

import hashlib
import os
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageDraw, ImageFile, ImageOps, UnidentifiedImageError

from .errors import EssencekitError, braced

#: The largest photo :func:`read_image` decodes unless told otherwise: 50 megapixels. A face photo
#: needs far less, and this still covers 8K frames (7680x4320, 33 MP) and the full-resolution
#: output of 48/50 MP phone sensors (8160x6120 = 49.9 MP), while refusing a 12000x12000 PNG that
#: compresses to 420 kB but decodes to 432 MB of RGB (2.6 GB at peak) before anyone notices.
#: Pillow's own threshold (about 179 MP) lets such files through.
DEFAULT_MAX_PIXELS = 50_000_000

#: What HEIC/HEIF (iPhone photos) needs when it cannot be read.
HEIF_HINT = "pip install pillow-heif"
HEIF_SUFFIXES = frozenset({".heic", ".heif", ".hif"})

# Pillow's bomb check reads a process-wide setting; it is switched off only while a header is
# parsed under this lock, and our own limit applies instead.
_bomb_check_lock = threading.Lock()
_formats_lock = threading.Lock()
_formats_registered = False
_heif_readable = False


def register_formats() -> None:
    """Teach Pillow the formats it does not read by itself (HEIC/HEIF through pillow-heif, when
    installed). Done once, on first use, so importing essencekit stays cheap."""
    global _formats_registered, _heif_readable
    if _formats_registered:
        return
    with _formats_lock:
        if _formats_registered:
            return
        try:
            from pillow_heif import register_heif_opener
        except ImportError:  # optional in practice: without it .heic files are reported, not read
            pass
        else:
            register_heif_opener()
            _heif_readable = True
        _formats_registered = True


def photo_suffixes() -> frozenset[str]:
    """Extensions (lower case, with the dot) of every format this Pillow can open, HEIC/HEIF
    included when pillow-heif is installed."""
    register_formats()
    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def unsupported_reason(path) -> str:
    """Why a file of this extension is not read as a photo, in a few words for the user."""
    suffix = Path(path).suffix.lower()
    register_formats()
    if suffix in HEIF_SUFFIXES and not _heif_readable:
        return f"HEIC/HEIF needs pillow-heif: {HEIF_HINT}"
    return f"{suffix or 'no extension'} is not a format this Pillow reads"


def describe_unsupported(paths, *, shown: int = 5) -> str:
    """One line that says which files were passed over and why, grouped by reason: ``3 files
    skipped: a.heic, b.heic, c.heic (HEIC/HEIF needs pillow-heif: pip install pillow-heif)``."""
    groups: dict[str, list[str]] = {}
    for path in paths:
        groups.setdefault(unsupported_reason(path), []).append(Path(path).name)
    parts = []
    for reason, names in groups.items():
        listed = ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")
        parts.append(f"{listed} ({reason})")
    count = sum(len(names) for names in groups.values())
    return f"{count} file{'s' if count != 1 else ''} skipped: " + "; ".join(parts)


class ImageReadError(EssencekitError):
    """A file that cannot be used as a photo.

    ``kind`` is one of ``"missing"``, ``"unreadable"``, ``"empty"``, ``"not-an-image"``,
    ``"truncated"``, ``"too-large"``; ``path`` is the file.
    """

    def __init__(self, path, kind: str, message: str, *, mentions: tuple[str, ...] = ()):
        super().__init__(message, mentions=mentions)
        self.path = path
        self.kind = kind


def _display(path) -> str:
    return str(path) if isinstance(path, (str, os.PathLike)) else "<image data>"


def read_image(path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file as an 8-bit RGB ``PIL.Image`` the way it is meant to be seen.

    EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and float images are converted
    to RGB; transparency is composited on white; of an animation, the first frame is used.
    ``path`` is a path or a binary file object. ``max_pixels`` (default
    :data:`DEFAULT_MAX_PIXELS`, 50 megapixels; ``None`` for no limit) refuses larger images from
    their header, before decoding them. Raises :class:`ImageReadError` with a one-line message
    naming the file.
    """
    name = _display(path)
    handle = _open_file(path, name)
    try:
        return _decode(handle, name, path, max_pixels)
    finally:
        if handle is not path:
            handle.close()


def check_image_size(path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """The ``(width, height)`` of an image file, read from its header only (nothing is decoded).

    Raises the :class:`ImageReadError` :func:`read_image` would for a missing, empty or
    unidentifiable file, or one over ``max_pixels``; for a cached result whose photo need not be
    decoded, so the limit holds either way.
    """
    name = _display(path)
    handle = _open_file(path, name)
    try:
        # the image is not closed: that would close a file object the caller passed in; a file
        # we opened is closed below
        return _open_header(handle, name, path, max_pixels).size
    finally:
        if handle is not path:
            handle.close()


def upright(image: Image.Image) -> Image.Image:
    """``image`` turned as its EXIF orientation tag says (the same image when it has none, or a
    broken EXIF block: the photo is then used as stored)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF blocks
            if image.getexif().get(ExifTags.Base.Orientation, 1) in (0, 1):
                return image  # exif_transpose would copy the whole image for nothing
            return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not cost the photo
        return image


def _open_file(path, name: str):
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not p.exists():
            raise ImageReadError(path, "missing", f"{name}: no such file")
        if not p.is_file():
            raise ImageReadError(path, "unreadable", f"{name}: not a file (a folder or a device?)")
        try:
            size = p.stat().st_size
            handle = open(p, "rb")
        except OSError as error:
            raise ImageReadError(path, "unreadable", f"{name}: cannot be read ({error.strerror or error}); check its permissions") from error
        if size == 0:
            handle.close()
            raise ImageReadError(path, "empty", f"{name}: the file is empty (0 bytes); re-copy or re-download it")
        return handle
    return path


def _open_header(handle, name: str, path, max_pixels: int | None) -> Image.Image:
    """Open ``handle`` lazily (Pillow reads only the header) and check its size against
    ``max_pixels``: a file claiming too many pixels is refused before any is decoded."""
    register_formats()
    try:
        with _bomb_check_lock:
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # corrupt-EXIF chatter: the pixels still count
                    image = Image.open(handle)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
    except UnidentifiedImageError as error:
        if Path(name).suffix.lower() in HEIF_SUFFIXES and not _heif_readable:
            raise ImageReadError(path, "not-an-image", f"{name}: {unsupported_reason(name)}") from error
        raise ImageReadError(path, "not-an-image", f"{name}: not an image Pillow can read (unknown or unsupported format)") from error
    except (OSError, SyntaxError, ValueError) as error:
        raise ImageReadError(path, "truncated", f"{name}: the image header is damaged ({_short(error)}); re-copy or re-export it") from error

    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageReadError(path, "truncated", f"{name}: the image has no pixels ({width}x{height})")
    if max_pixels is not None and width * height > max_pixels:
        raise ImageReadError(
            path,
            "too-large",
            braced(f"{name}: {width}x{height} is {_megapixels(width * height)}, over the limit of "
                   f"{_megapixels(max_pixels)} (a possible decompression bomb); if you trust the file, raise ")
            + "{max_pixels}",
            mentions=("max_pixels",),
        )
    return image


def _megapixels(pixels: int) -> str:
    # exact pixels under a megapixel: a tiny limit would read as "0 megapixels"
    return f"{pixels / 1e6:.0f} megapixels" if pixels >= 1e6 else f"{pixels} pixels"


def _decode(handle, name: str, path, max_pixels: int | None) -> Image.Image:
    image = _open_header(handle, name, path, max_pixels)
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # a process-wide switch some libraries turn on; it would hand us grey half-images
        raise ImageReadError(path, "unreadable", f"{name}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process; turn it off to read photos safely")
    try:
        image.load()
    except Exception as error:  # Pillow reports damaged data as OSError, SyntaxError, zlib.error, ...
        raise ImageReadError(path, "truncated", f"{name}: truncated or damaged image data ({_short(error)}); re-copy or re-export it") from error

    return upright_rgb(image)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def upright_rgb(image: Image.Image) -> Image.Image:
    """A PIL image as it is meant to be seen, in RGB: what :func:`read_image` makes of a file,
    for an image the caller opened (one still carrying its EXIF orientation tag)."""
    return to_rgb(upright(image))


def centre_square(image: Image.Image) -> Image.Image:
    """The largest centred square of ``image`` (``image`` itself when it is square already), for
    pictures used whole, without face alignment: a portrait frame is cropped, never squashed.
    The same square :func:`essencekit.clip.raw_target_pixels` takes."""
    width, height = image.size
    if width == height:
        return image
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB: alpha composited on white, high bit depths scaled
    (not clipped, as Pillow's own ``convert("L")`` does for 16-bit)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _scale_high_depth(image)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode in ("LA", "La", "RGBa"):
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    if image.mode == "RGBA":
        white = Image.new("RGBA", image.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, image).convert("RGB")
    # L, CMYK, YCbCr, LAB, HSV: Pillow's conversions are right for these
    return image.convert("RGB")


def _scale_high_depth(image: Image.Image) -> Image.Image:
    values = np.asarray(image).astype(np.float64)
    if image.mode == "F":
        # float images are conventionally [0, 1]; anything larger is taken as [0, 255]
        top = 1.0 if float(np.nanmax(values, initial=0.0)) <= 1.0 else 255.0
    elif image.mode.startswith("I;16"):
        top = 65535.0
    else:
        # 32-bit integer images are in practice 16-bit data that Pillow widened (PNG, TIFF)
        peak = float(values.max(initial=0.0))
        top = 255.0 if peak <= 255 else 65535.0 if peak <= 65535 else float(2**32 - 1)
    scaled = np.clip(np.nan_to_num(values) / top * 255.0, 0, 255)
    gray = Image.fromarray(np.rint(scaled).astype(np.uint8), "L")
    return gray.convert("RGB")


@dataclass
class Target:
    """A target image, read once: its pixels, and what the metadata says about it."""

    image: Image.Image  # RGB
    name: str
    file: str
    sha256: str


def read_target(target) -> Target:
    """Open a target image (a path or a PIL image) upright in RGB and fingerprint it; one-line errors."""
    if isinstance(target, Image.Image):
        image = upright_rgb(target)
        digest = hashlib.sha256(image.tobytes()).hexdigest()
        return Target(image, "target", "", f"pixels:{digest}")
    from .cache import sha256_file

    path = Path(os.fspath(target))
    try:
        image = read_image(path)
        digest = sha256_file(path)
    except EssencekitError as error:
        raise EssencekitError(f"cannot read the target image: {error}") from None
    except OSError as error:
        raise EssencekitError(f"cannot read the target image {path}: {error.strerror or error}") from None
    return Target(image, path.stem, path.name, digest)


#: The side of a contact sheet's tiles, and the height of its label row, in pixels.
SHEET_TILE = 256
SHEET_HEADER = 20


def to_pil(image) -> Image.Image:
    """A [3, H, W] tensor image in [-1, 1] as an 8-bit RGB PIL image."""
    import torch

    pixels = ((image.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return Image.fromarray(pixels.permute(1, 2, 0).numpy(), mode="RGB")


def contact_sheet(labels: list[str], rows: list[list], tile: int = SHEET_TILE) -> Image.Image:
    """A PIL image: ``labels`` across the top, then one row of tiles per entry of ``rows``
    (PIL images, resized to ``tile`` px squares; ``None`` leaves a tile blank)."""
    sheet = Image.new("RGB", (len(labels) * tile, SHEET_HEADER + len(rows) * tile), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for c, label in enumerate(labels):
        draw.text((c * tile + 4, 4), label, fill=(0, 0, 0))
    for r, row in enumerate(rows):
        for c, picture in enumerate(row):
            if picture is None:
                continue
            if picture.size != (tile, tile):
                picture = picture.resize((tile, tile), Image.Resampling.LANCZOS)
            sheet.paste(picture, (c * tile, SHEET_HEADER + r * tile))
    return sheet
