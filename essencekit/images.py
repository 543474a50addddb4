"""Reading user photos robustly: one RGB ``PIL.Image`` from any file Pillow reads, or one
clear error that names the file.

Shared by ``extract`` and ``transfer``, which report a bad input per file and go on, so every
failure is an :class:`ImageReadError` whose ``kind`` says which of the documented cases it is.
The file is opened read-only and never written.
"""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from .errors import EssencekitError

#: Pillow's own "decompression bomb" error threshold (twice ``Image.MAX_IMAGE_PIXELS``, about
#: 179 megapixels): above it Pillow refuses to open a file, and so does :func:`read_image`.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

# Pillow's bomb check reads a process-wide setting; it is switched off only while a header is
# parsed under this lock, and our own limit applies instead.
_bomb_check_lock = threading.Lock()


class ImageReadError(EssencekitError):
    """A file that cannot be used as a photo.

    ``kind`` is one of ``"missing"``, ``"unreadable"``, ``"empty"``, ``"not-an-image"``,
    ``"truncated"``, ``"too-large"``; ``path`` is the file.
    """

    def __init__(self, path, kind: str, message: str):
        super().__init__(message)
        self.path = path
        self.kind = kind


def _display(path) -> str:
    return str(path) if isinstance(path, (str, os.PathLike)) else "<image data>"


def read_image(path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read an image file as an 8-bit RGB ``PIL.Image`` the way it is meant to be seen.

    EXIF orientation is applied; grayscale, palette, CMYK, 16-bit and float images are converted
    to RGB; transparency is composited on white; of an animation, the first frame is used.
    ``path`` is a path or a binary file object. ``max_pixels`` (default: Pillow's error threshold,
    about 179 megapixels; ``None`` for no limit) refuses larger images before decoding them.
    Raises :class:`ImageReadError` with a one-line message naming the file.
    """
    name = _display(path)
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
    else:
        handle = path
    try:
        return _decode(handle, name, path, max_pixels)
    finally:
        if handle is not path:
            handle.close()


def _decode(handle, name: str, path, max_pixels: int | None) -> Image.Image:
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
            f"{name}: {width}x{height} is {width * height / 1e6:.0f} megapixels, over the limit of "
            f"{max_pixels / 1e6:.0f} (a possible decompression bomb); raise it with --max-pixels if you trust the file",
        )
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # a process-wide switch some libraries turn on; it would hand us grey half-images
        raise ImageReadError(path, "unreadable", f"{name}: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process; turn it off to read photos safely")
    try:
        image.load()
    except Exception as error:  # Pillow reports damaged data as OSError, SyntaxError, zlib.error, ...
        raise ImageReadError(path, "truncated", f"{name}: truncated or damaged image data ({_short(error)}); re-copy or re-export it") from error

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns about corrupt EXIF blocks
            image = ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block must not cost the photo; it is then shown as stored
        pass
    return to_rgb(image)


def _short(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


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
