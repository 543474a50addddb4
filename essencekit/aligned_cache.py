"""The aligned-crop cache: the FFHQ crops of training photos (``train-encoder``), kept so that a
second run over the same folder neither detects nor aligns a face again.

One PNG per (image, aligner, crop size), and one small JSON marker per (image, aligner) in
which no usable face was found (detection does not depend on the crop size, so neither does
the marker)::

    <cache root>/aligned/v1/<aligner>/<image sha256[:2]>/<image sha256>-<size>.png
    <cache root>/aligned/v1/<aligner>/<image sha256[:2]>/<image sha256>.json

``v1`` changes whenever the crop recipe changes what the encoder sees. Files are written
atomically; a damaged entry reads as absent (it only costs one new alignment), and deleting
the folder is always safe. As in the W+ cache (:mod:`essencekit.latent_cache`), a hit marks its
file as used (its modification time) and :func:`prune` removes what has not been used since a
date. Torch-free: ``essencekit cache`` lists it without starting torch.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_path
from .latent_cache import Entry, folder_entries, prune_folder

if TYPE_CHECKING:  # numpy and Pillow are imported where pixels are: `essencekit cache` needs neither
    import numpy as np

ALIGNED_DIR = "aligned"
RECIPE_VERSION = "v1"


def aligned_root(root: Path | None = None) -> Path:
    """``<cache root>/aligned``: every recipe version and aligner."""
    from .cache import cache_root

    return (Path(root) if root is not None else cache_root()) / ALIGNED_DIR


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):  # a read-only cache still answers; it just cannot say so
        os.utime(path)


class AlignedCache:
    """The crops one aligner made, under ``root`` (``None``: the cache root)."""

    def __init__(self, aligner: str, root: Path | None = None):
        self.folder = aligned_root(root) / RECIPE_VERSION / aligner

    def crop_path(self, image_sha256: str, size: int) -> Path:
        return self.folder / image_sha256[:2] / f"{image_sha256}-{int(size)}.png"

    def marker_path(self, image_sha256: str) -> Path:
        return self.folder / image_sha256[:2] / f"{image_sha256}.json"

    def load_crop(self, image_sha256: str, size: int) -> np.ndarray | None:
        """The crop as uint8 ``[size, size, 3]``, or ``None`` (never stored, or damaged)."""
        path = self.crop_path(image_sha256, size)
        if not path.is_file():
            return None
        try:
            import numpy as np
            from PIL import Image

            with Image.open(path) as image:
                image.load()  # a truncated or corrupt file fails here, not later
                if image.mode != "RGB" or image.size != (size, size):
                    return None
                pixels = np.asarray(image, dtype=np.uint8).copy()
        except Exception:  # noqa: BLE001 - any damage means "not cached"
            return None
        _touch(path)
        return pixels

    def store_crop(self, image_sha256: str, size: int, pixels: np.ndarray) -> None:
        """Store uint8 ``[size, size, 3]`` pixels (PNG: lossless, so a hit is bit-exact)."""
        import numpy as np
        from PIL import Image

        image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8), "RGB")
        with atomic_path(self.crop_path(image_sha256, size)) as tmp:
            image.save(tmp, format="PNG")

    def load_marker(self, image_sha256: str) -> str | None:
        """Why no usable face was found in this image, if a run found none; else ``None``."""
        path = self.marker_path(image_sha256)
        if not path.is_file():
            return None
        try:
            reason = json.loads(path.read_text(encoding="utf-8")).get("reason")
        except (OSError, ValueError, AttributeError):
            return None
        if not isinstance(reason, str) or not reason:
            return None
        _touch(path)
        return reason

    def store_marker(self, image_sha256: str, reason: str) -> None:
        with atomic_path(self.marker_path(image_sha256)) as tmp:
            tmp.write_text(json.dumps({"reason": reason}) + "\n", encoding="utf-8")


def entries(root: Path | None = None) -> list[Entry]:
    """Every file under :func:`aligned_root`, in path order."""
    return folder_entries(aligned_root(root))


def prune(before: float, *, dry_run: bool = False, root: Path | None = None) -> list[Entry]:
    """Remove the crops and markers last used before ``before`` (a POSIX timestamp), as
    :func:`essencekit.latent_cache.prune` does for W+ records."""
    return prune_folder(aligned_root(root), before, dry_run=dry_run)
