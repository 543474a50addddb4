"""Writing edited images: PNG, JPEG or WebP, atomically, with what made them in the metadata.

The record (essence, strength, layers, source, essencekit version, as JSON) goes where each
format's readers look: a PNG ``essencekit`` text chunk beside ``Software``; EXIF
``ImageDescription`` and ``Software`` in JPEG and WebP. :func:`read_metadata` reads it back.

PNG is written with zlib level 1: lossless like any level, 4 to 5 times faster to write than
Pillow's default level 6 (0.12 s against 0.56 s for a 1024 px face on a 2-core CPU) for files
about 13 % larger; in a bulk run the PNG encoder would otherwise cost as much as the models
on a GPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..atomic import atomic_path

FORMATS = {"png": ("PNG", ".png"), "jpg": ("JPEG", ".jpg"), "webp": ("WEBP", ".webp")}
DEFAULT_QUALITY = 95
PNG_COMPRESS_LEVEL = 1
_EXIF_DESCRIPTION = 0x010E
_EXIF_SOFTWARE = 0x0131
_KEY = "essencekit"


def extension(fmt: str) -> str:
    return FORMATS[fmt][1]


def save_image(image, path: str | os.PathLike, fmt: str = "png", *, quality: int | None = None,
               metadata: dict | None = None) -> Path:
    """Write ``image`` (PIL RGB) to ``path`` in ``fmt`` with ``metadata``; a temporary file is
    renamed into place, so the path holds a complete image or nothing new."""
    from PIL import Image, PngImagePlugin

    from ..version import __version__

    pil_format = FORMATS[fmt][0]
    record = json.dumps(metadata or {}, sort_keys=True, default=str)  # ASCII: EXIF descriptions are ASCII
    software = f"essencekit {__version__}"
    options: dict = {}
    if pil_format == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text(_KEY, record)
        info.add_text("Software", software)
        options.update(pnginfo=info, compress_level=PNG_COMPRESS_LEVEL)
    else:
        exif = Image.Exif()
        exif[_EXIF_DESCRIPTION] = record
        exif[_EXIF_SOFTWARE] = software
        options.update(exif=exif.tobytes(), quality=DEFAULT_QUALITY if quality is None else int(quality))
    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format=pil_format, **options)
    return path


def read_metadata(path: str | os.PathLike) -> dict:
    """The essencekit record of an image written by :func:`save_image` (``{}`` if none)."""
    from PIL import Image

    with Image.open(path) as image:
        text = getattr(image, "text", {}).get(_KEY) if image.format == "PNG" else image.getexif().get(_EXIF_DESCRIPTION)
    if not text:
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return {}
