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
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from ..aligners import FaceLandmarks
from ..atomic import atomic_path

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
        from ..cache import cache_root

        base = Path(root) if root is not None else cache_root()
        self.folder = base / "latents" / RECIPE_VERSION / encoder_sha256[:16] / aligner

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
            return CacheRecord(meta["mode"], faces, json.loads(meta.get("rejected", "[]")), latents)
        except Exception:  # noqa: BLE001 - any damage means "not cached"
            return None

    def store(self, image_sha256: str, record: CacheRecord) -> None:
        from safetensors.torch import save_file

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
