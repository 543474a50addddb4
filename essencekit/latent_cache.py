"""The W+ cache: every face's inversion, kept so that a second run (another essence, another
strength) skips detection and inversion.

A face's latent is keyed by (image sha256, face index, aligner, encoder sha256). One
safetensors file per (image, aligner, encoder) holds the faces found (their landmarks and crop
transform, so detection is skipped too), the detections that were rejected (to report them
again), which faces mode found them (``largest`` finds only face 0; ``all`` every face) and
one tensor ``face_<i>`` per inverted face::

    <cache root>/latents/v1/<encoder sha256[:16]>/<aligner>/<image sha256[:2]>/<image sha256>.safetensors

The cache root is ``$ESSENCEKIT_HOME`` (else the user cache folder, see
:func:`essencekit.cache.cache_root`). Files are written atomically; deleting the folder is
always safe. ``v1`` changes whenever the crop recipe changes what e4e sees.

Several processes may share one cache, the ranks of a ``torchrun`` job on a shared filesystem
included: a file is written under a temporary name and renamed into place (a rename is atomic
on local disks and on NFS), so a reader sees a whole entry or the previous one, never a mix of
two writers'. A writer folds in what another wrote meanwhile (the faces it inverted), so two
runs of one photo do not undo each other's work; two writing at the very same moment can at
worst leave one's faces out, which costs one inversion later.

Nothing removes entries by itself: a hit marks its file as used (its modification time), and
:func:`prune` (``essencekit cache prune --older-than DATE``) removes those unused since a date.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .aligners import FaceLandmarks
from .atomic import atomic_path

if TYPE_CHECKING:  # torch is imported where tensors are made: `essencekit cache` needs none
    from torch import Tensor

LATENTS_DIR = "latents"
RECIPE_VERSION = "v1"
NO_ALIGN = "none"  # the aligner name of --no-align: the whole image is the crop


@dataclass
class CachedFace:
    index: int
    landmarks: FaceLandmarks
    transform: dict  # CropTransform.to_dict()
    size: float


@dataclass
class CacheRecord:
    """What the cache knows about one image. ``mode``: ``largest``, ``all`` or ``none``
    (``--no-align``); ``latents``: face index -> W+ [n_latent, style_dim]."""

    mode: str
    faces: list[CachedFace] = field(default_factory=list)
    rejected: list[dict] = field(default_factory=list)
    latents: dict[int, Tensor] = field(default_factory=dict)

    def covers(self, mode: str) -> bool:
        """Whether this record's detection answers a run in faces mode ``mode``."""
        return self.mode == mode or (self.mode == "all" and mode == "largest")


def _landmarks_dict(lm: FaceLandmarks) -> dict:
    return {"eye_left": lm.eye_left, "eye_right": lm.eye_right, "mouth_left": lm.mouth_left,
            "mouth_right": lm.mouth_right, "box": lm.box, "score": lm.score}


def _landmarks(data: dict) -> FaceLandmarks:
    return FaceLandmarks(
        eye_left=tuple(data["eye_left"]), eye_right=tuple(data["eye_right"]), mouth_left=tuple(data["mouth_left"]),
        mouth_right=tuple(data["mouth_right"]), box=tuple(data["box"]), score=float(data["score"]),
    )


class LatentCache:
    """The cache of one (encoder, aligner) pair under ``root`` (``None``: the cache root)."""

    def __init__(self, encoder_sha256: str, aligner: str, root: Path | None = None):
        self.folder = latents_root(root) / RECIPE_VERSION / encoder_sha256[:16] / aligner

    def path(self, image_sha256: str) -> Path:
        return self.folder / image_sha256[:2] / f"{image_sha256}.safetensors"

    def load(self, image_sha256: str) -> CacheRecord | None:
        """The record of an image, or ``None`` (never cached, or unreadable: a damaged cache
        entry only costs a new inversion)."""
        path = self.path(image_sha256)
        if not path.is_file():
            return None
        try:
            from safetensors.torch import safe_open

            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                latents = {int(k.split("_", 1)[1]): handle.get_tensor(k).float() for k in handle.keys()}
            faces = [CachedFace(int(f["index"]), _landmarks(f["landmarks"]), f["transform"], float(f["size"]))
                     for f in json.loads(meta["faces"])]
            record = CacheRecord(meta["mode"], faces, json.loads(meta.get("rejected", "[]")), latents)
        except Exception:  # noqa: BLE001 - any damage means "not cached"
            return None
        with contextlib.suppress(OSError):  # a read-only cache still answers; it just cannot say so
            os.utime(path)  # the last use: `cache prune` keeps what is still used, however old
        return record

    def store(self, image_sha256: str, record: CacheRecord) -> None:
        import torch
        from safetensors.torch import save_file

        record = self._merged(image_sha256, record)
        tensors = {f"face_{i}": w.detach().to("cpu", torch.float32).contiguous() for i, w in record.latents.items()}
        meta = {
            "mode": record.mode,
            "faces": json.dumps([{"index": f.index, "landmarks": _landmarks_dict(f.landmarks),
                                  "transform": f.transform, "size": f.size} for f in record.faces]),
            "rejected": json.dumps(record.rejected),
        }
        path = self.path(image_sha256)
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata=meta)

    def _merged(self, image_sha256: str, record: CacheRecord) -> CacheRecord:
        """``record`` with the latents another writer stored for the same faces since it was
        read (another rank, another run); ``record`` itself when the entry is gone, damaged or
        describes another detection."""
        stored = self.load(image_sha256)
        if stored is None:
            return record
        if stored.covers(record.mode) and _same_faces(record.faces, stored.faces):
            return CacheRecord(stored.mode, stored.faces, stored.rejected, {**stored.latents, **record.latents})
        if record.covers(stored.mode) and _same_faces(stored.faces, record.faces):
            return CacheRecord(record.mode, record.faces, record.rejected, {**stored.latents, **record.latents})
        return record


def _same_faces(some: list[CachedFace], among: list[CachedFace]) -> bool:
    """Whether every face of ``some`` is in ``among``, found at the same place."""
    known = {face.index: face.transform for face in among}
    return all(known.get(face.index) == face.transform for face in some)


# --------------------------------------------------------------------------- housekeeping


def latents_root(root: Path | None = None) -> Path:
    """The folder of the W+ cache, every recipe version and encoder: ``<cache root>/latents``."""
    from .cache import cache_root

    return (Path(root) if root is not None else cache_root()) / LATENTS_DIR


@dataclass(frozen=True)
class Entry:
    """One file of the W+ cache: an image's record, or a temporary file an interrupted write left."""

    path: Path
    size: int
    mtime: float  # the last use of a record (see LatentCache.load); when it was written otherwise


def entries(root: Path | None = None) -> list[Entry]:
    """Every file under :func:`latents_root`, in path order."""
    return folder_entries(latents_root(root))


def folder_entries(base: Path) -> list[Entry]:
    """Every file under ``base`` (none when it does not exist), in path order; shared with the
    aligned-crop cache, which is kept and pruned the same way."""
    found = []
    for folder, _, files in os.walk(base):
        for name in files:
            path = Path(folder) / name
            with contextlib.suppress(OSError):  # removed meanwhile by another run's prune
                stat = path.stat()
                found.append(Entry(path, stat.st_size, stat.st_mtime))
    return sorted(found, key=lambda e: e.path)


def prune(before: float, *, dry_run: bool = False, root: Path | None = None) -> list[Entry]:
    """Remove the cache files last used before ``before`` (a POSIX timestamp) and the folders
    left empty; returns what was (with ``dry_run``: would be) removed. A removed record only
    costs one new inversion of that photo."""
    return prune_folder(latents_root(root), before, dry_run=dry_run)


def prune_folder(base: Path, before: float, *, dry_run: bool = False) -> list[Entry]:
    """:func:`prune` for the cache folder ``base``: its files last used before ``before`` and
    the sub-folders left empty (``base`` itself stays)."""
    old = [e for e in folder_entries(base) if e.mtime < before]
    if dry_run:
        return old
    removed = []
    for entry in old:
        try:
            entry.path.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:
            from .cache import write_error

            raise write_error(error, entry.path) from None
        removed.append(entry)
    for folder, _, _ in sorted(os.walk(base), key=lambda w: -len(w[0])):  # deepest first
        if Path(folder) != base:
            with contextlib.suppress(OSError):  # not empty (still used), or already gone
                Path(folder).rmdir()
    return removed
