"""The FID feature cache: the Inception features of real images (``evaluate --fid``), kept so
that a second evaluation against the same folder (another essence, another strength sweep)
reads 2,048 numbers per image instead of decoding it and running Inception on it.

One ``.npy`` file per (Inception weights, image content)::

    <cache root>/features/v1/<inception sha256[:16]>/<image sha256[:2]>/<image sha256>.npy

Images are keyed by their bytes, not their names: a renamed or copied folder hits, an edited
file misses. ``v1`` changes whenever the way real images are read (EXIF orientation, RGB
conversion) or handed to Inception changes what it sees. Files are written atomically and read
with ``allow_pickle=False``; a damaged entry reads as absent (it costs one Inception pass), and
deleting the folder is always safe. As in the W+ cache (:mod:`essencekit.latent_cache`), a hit
marks its file as used and :func:`prune` removes what has not been used since a date.
Torch-free: ``essencekit cache`` lists it without starting torch.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .atomic import atomic_path
from .latent_cache import Entry, folder_entries, prune_folder

if TYPE_CHECKING:  # numpy is imported where features are: `essencekit cache` needs none
    import numpy as np

FEATURES_DIR = "features"
RECIPE_VERSION = "v1"


def features_root(root: Path | None = None) -> Path:
    """``<cache root>/features``: every recipe version and Inception."""
    from .cache import cache_root

    return (Path(root) if root is not None else cache_root()) / FEATURES_DIR


class FeatureCache:
    """The features one Inception (by its weights' sha256) computed, under ``root`` (``None``:
    the cache root); ``dim`` is the feature size an entry must have to count."""

    def __init__(self, inception_sha256: str, dim: int, root: Path | None = None):
        self.folder = features_root(root) / RECIPE_VERSION / inception_sha256[:16]
        self.dim = dim

    def path(self, image_sha256: str) -> Path:
        return self.folder / image_sha256[:2] / f"{image_sha256}.npy"

    def load(self, image_sha256: str) -> np.ndarray | None:
        """The image's float32 ``[dim]`` features, or ``None`` (never stored, or damaged)."""
        import numpy as np

        path = self.path(image_sha256)
        try:
            features = np.load(path, allow_pickle=False)
        except Exception:  # noqa: BLE001 - absent, truncated, pickled, not an .npy: "not cached"
            return None
        if not isinstance(features, np.ndarray) or features.shape != (self.dim,) or features.dtype != np.float32 or not np.isfinite(features).all():
            return None
        with contextlib.suppress(OSError):  # a read-only cache still answers; it just cannot say so
            os.utime(path)  # the last use: `cache prune` keeps what is still used, however old
        return features

    def store(self, image_sha256: str, features) -> bool:
        """Keep ``features`` (stored as float32); ``False`` when the cache cannot be written (a
        full disk, a read-only folder): the evaluation goes on, only the next one pays again."""
        import numpy as np

        values = np.ascontiguousarray(features, dtype=np.float32).reshape(self.dim)
        try:
            with atomic_path(self.path(image_sha256)) as tmp:
                with open(tmp, "wb") as handle:
                    np.save(handle, values, allow_pickle=False)
        except OSError:
            return False
        return True


def entries(root: Path | None = None) -> list[Entry]:
    """Every file under :func:`features_root`, in path order."""
    return folder_entries(features_root(root))


def prune(before: float, *, dry_run: bool = False, root: Path | None = None) -> list[Entry]:
    """Remove the features last used before ``before`` (a POSIX timestamp), as
    :func:`essencekit.latent_cache.prune` does for W+ records."""
    return prune_folder(features_root(root), before, dry_run=dry_run)
