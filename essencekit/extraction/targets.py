"""What an extraction aims at: one photo, several photos of one target, a text, or photos and a
text together, and the one CLIP embedding the transfer loss pulls towards.

The combination (docs/extract.md, "Targets"):

* one photo: CLIP's embedding of it, as it always was (not normalised; the loss is a cosine);
* several photos: ``p = normalize(mean_i normalize(e_i))``, each ``e_i`` the photo's CLIP
  embedding through the usual target preprocessing (the ``raw``/``standard`` input mode);
* a text: ``t = normalize(text_tower(tokenize(text)))``;
* photos and a text, ``w`` the text weight (default 0.5):
  ``normalize((1 - w) * normalize(p) + w * t)``.
"""

from __future__ import annotations

import glob
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import EssencekitError, OptionError
from ..images import Target, photo_suffixes, read_target

#: The text weight when photos and a text are given and no weight is.
DEFAULT_TEXT_WEIGHT = 0.5
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass
class TargetSpec:
    """The photos (read, fingerprinted) and the text of one target, and the text's weight."""

    photos: list[Target] = field(default_factory=list)
    text: str | None = None
    text_weight: float = 0.0  # 0 without a text, 1 with a text alone
    name: str = "target"

    @property
    def first_photo(self) -> Target | None:
        return self.photos[0] if self.photos else None

    def combination(self) -> str:
        """How the target embedding is made, in words (recorded in the metadata)."""
        if self.text is None:
            return "the photo's CLIP embedding" if len(self.photos) == 1 else \
                "normalised mean of the photos' normalised CLIP embeddings"
        if not self.photos:
            return "the text's normalised CLIP text embedding"
        photos = "the photo's" if len(self.photos) == 1 else "the normalised mean of the photos'"
        return (f"normalised weighted mean: (1 - text_weight) x {photos} normalised CLIP embedding "
                "+ text_weight x the text's normalised CLIP text embedding")

    def metadata(self) -> dict[str, str]:
        """``target_file``, ``target_sha256`` (one photo: its name and digest, as always; several:
        JSON lists; none: empty), ``target`` (JSON: photos, text, text weight, combination) and
        ``target_text`` when there is a text."""
        photos = [{"file": p.file or p.name, "sha256": p.sha256} for p in self.photos]
        if len(self.photos) == 1:
            file, sha = self.photos[0].file, self.photos[0].sha256
        elif self.photos:
            file, sha = json.dumps([p["file"] for p in photos]), json.dumps([p["sha256"] for p in photos])
        else:
            file = sha = ""
        meta = {
            "target_file": file,
            "target_sha256": sha,
            "target": json.dumps({"photos": photos, "text": self.text, "text_weight": self.text_weight,
                                  "combination": self.combination()}),
        }
        if self.text is not None:
            meta["target_text"] = self.text
        return meta


def is_pattern(path: Path) -> bool:
    """Whether ``path`` is a glob pattern to expand (``"obama/*.jpg"``, quoted so that the shell
    left it) rather than a file: it names nothing and holds a wildcard."""
    return not path.exists() and bool(_GLOB_CHARACTERS & set(str(path)))


def _is_pil(value) -> bool:
    from PIL import Image

    return isinstance(value, Image.Image)


def photos_of(target) -> tuple[list, str]:
    """The photos ``target`` names, in order, and a name for them: a path or PIL image (one),
    a folder (its photos sorted by name, not recursive), a glob pattern that names no file
    (``"obama/*.jpg"``, sorted matches), or a list/tuple of any of these."""
    if target is None:
        return [], ""
    if isinstance(target, Target) or _is_pil(target):
        return [target], target.name if isinstance(target, Target) else "target"
    if isinstance(target, (str, os.PathLike)):
        path = Path(os.fspath(target))
        if path.is_dir():
            suffixes = photo_suffixes()
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in suffixes)
            if not found:
                raise EssencekitError(f"the target folder {path} holds no photos")
            return found, path.resolve().name or "target"
        if is_pattern(path):
            found = sorted(Path(p) for p in glob.glob(str(path)) if Path(p).is_file())
            if not found:
                raise EssencekitError(f"no target photos match {path}")
            return found, found[0].stem
        return [path], path.stem
    if isinstance(target, (list, tuple)):
        photos, names = [], []
        for item in target:
            found, name = photos_of(item)
            photos.extend(found)
            names.append(name)
        return photos, (names[0] if names else "")
    raise OptionError(f"target must be a path, a folder, a PIL image or a list of them, got {type(target).__name__}",
                      parameter="target")


def check_text(text, text_weight) -> tuple[str | None, float | None]:
    """``text`` (None or a non-empty string) and ``text_weight`` (None, or in [0, 1] with a
    text), checked; OptionError naming the parameter otherwise."""
    if text is not None:
        if not isinstance(text, str):
            raise OptionError(f"text must be a string, got {type(text).__name__}", parameter="text")
        if not text.strip():
            raise OptionError("text is empty: describe the target in words, e.g. 'a portrait of the Joker'",
                              parameter="text")
        text = text.strip()
    if text_weight is not None:
        if isinstance(text_weight, bool) or not isinstance(text_weight, (int, float)):
            raise OptionError(f"text_weight must be a number from 0 to 1, got {text_weight!r}",
                              parameter="text_weight")
        if not math.isfinite(text_weight) or not 0 <= text_weight <= 1:
            raise OptionError(f"text_weight must be a number from 0 to 1, got {text_weight}", parameter="text_weight")
        if text is None:
            raise OptionError("text_weight weighs a text target: give the text too", parameter="text_weight")
        text_weight = float(text_weight)
    return text, text_weight


def resolve_target(target, *, text: str | None = None, text_weight: float | None = None,
                   name: str | None = None) -> TargetSpec:
    """Read the photos of ``target`` (see :func:`photos_of`) and check the text: the
    :class:`TargetSpec` of one extraction. At least one photo or a text is needed."""
    text, text_weight = check_text(text, text_weight)
    paths, default_name = photos_of(target)
    if not paths and text is None:
        raise OptionError("no target: give one or more photos, or a text", parameter="target")
    photos = [p if isinstance(p, Target) else read_target(p) for p in paths]
    if text is None:
        weight = 0.0
    elif not photos:
        weight = 1.0
    else:
        weight = DEFAULT_TEXT_WEIGHT if text_weight is None else text_weight
    if name is None:
        name = default_name if photos else "text"
    return TargetSpec(photos, text, weight, name or "target")


def combine(photo_embeddings: torch.Tensor | None, text_embedding: torch.Tensor | None,
            text_weight: float) -> torch.Tensor:
    """The ``[1, D]`` target embedding from ``[N, D]`` photo and ``[1, D]`` text embeddings
    (either may be None), by the rule of the module docstring."""
    if photo_embeddings is not None and photo_embeddings.shape[0] == 1 and text_embedding is None:
        return photo_embeddings  # one photo: exactly the embedding of today's recipe
    photo = None
    if photo_embeddings is not None:
        photo = F.normalize(F.normalize(photo_embeddings, dim=-1).mean(0, keepdim=True), dim=-1)
    if text_embedding is None:
        return photo
    text = F.normalize(text_embedding.reshape(1, -1), dim=-1)
    if photo is None:
        return text
    return F.normalize((1.0 - text_weight) * photo + text_weight * text, dim=-1)


def text_token_count(text: str) -> int:
    """How many tokens open_clip's tokenizer makes of ``text``, start and end tokens included."""
    from ..clip import _tokenizer

    return len(_tokenizer(77).encode(text)) + 2


def target_embedding(clip, spec: TargetSpec, notify=None) -> torch.Tensor:
    """The ``[1, D]`` float target embedding of ``spec`` from ``clip`` (a
    :class:`~essencekit.clip.ClipEncoder`; ``encode_text`` is needed for a text)."""
    photos = None
    if spec.photos:
        photos = torch.cat([clip.encode_target(p.image).detach().float() for p in spec.photos])
    text = None
    if spec.text is not None:
        if not callable(getattr(clip, "encode_text", None)) or not getattr(clip, "has_text", True):
            raise EssencekitError("a text target needs CLIP's text tower: load the CLIP model with text=True")
        variant = getattr(clip, "variant", None)
        if notify is not None and variant is not None:
            length = int(variant.open_clip_config.get("text_cfg", {}).get("context_length", 77))
            count = text_token_count(spec.text)
            if count > length:
                notify(f"the text is {count} tokens long and CLIP reads {length}: the end is cut off")
        text = clip.encode_text([spec.text]).detach().float()
    return combine(photos, text, spec.text_weight)
