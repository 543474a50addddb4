"""What is in the cache, and removing parts of it (``essencekit cache``).

The cache root holds four things that grow: the weight artifacts ``pull-weights`` placed
(``weights/<name>/``, laid out and recorded as :mod:`essencekit.cache` describes), the W+
cache of ``transfer``/``invert`` (``latents/``, see :mod:`essencekit.latent_cache`), one small
file per photo ever inverted, the aligned crops of ``train-encoder``'s photos (``aligned/``,
see :mod:`essencekit.aligned_cache`) and the FID features of ``evaluate --fid``'s real images
(``features/``, see :mod:`essencekit.feature_cache`). Listing reads only file sizes and the
records: a checkpoint is not re-hashed (``pull-weights --verify`` does that).
"""

from __future__ import annotations

import contextlib
import datetime
import difflib
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from . import aligned_cache, cache, feature_cache, latent_cache
from .errors import EssencekitError


@dataclass
class ArtifactUsage:
    """One folder under ``weights/``. ``status``: ``ready`` (recorded by pull-weights; not
    re-verified here), ``partial`` (an unfinished download, kept for resuming) or
    ``unrecorded`` (files pull-weights has not verified)."""

    name: str
    path: Path
    size: int
    files: int
    status: str
    registered: bool
    fetched_at: str = ""


@dataclass
class PerImageUsage:
    """One group of a per-image cache (the files of one recipe version and model): where it is,
    its size and number of files; ``last_used`` is the newest entry's last use and ``oldest``
    the least recently used one's, as ISO dates."""

    path: Path
    size: int
    entries: int
    oldest: str
    last_used: str


@dataclass
class LatentUsage(PerImageUsage):
    """The W+ records of one (recipe version, encoder, aligner)."""

    recipe: str = ""
    encoder: str = ""  # the first 16 hex digits of the encoder's sha256
    aligner: str = ""


@dataclass
class AlignedUsage(PerImageUsage):
    """The aligned crops (and no-face markers) of one (recipe version, aligner)."""

    recipe: str = ""
    aligner: str = ""


@dataclass
class FeatureUsage(PerImageUsage):
    """The FID features of real images computed by one Inception (by its weights' sha256)."""

    recipe: str = ""
    inception: str = ""  # the first 16 hex digits of the Inception weights' sha256


@dataclass
class CacheUsage:
    root: Path
    artifacts: list[ArtifactUsage] = field(default_factory=list)
    latents: list[LatentUsage] = field(default_factory=list)
    aligned: list[AlignedUsage] = field(default_factory=list)
    features: list[FeatureUsage] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(part.size for part in (*self.artifacts, *self.latents, *self.aligned, *self.features))

    def to_dict(self) -> dict:
        return {
            "root": str(self.root),
            "size": self.size,
            "artifacts": [_jsonable(asdict(a)) for a in self.artifacts],
            "latents": [_jsonable(asdict(group)) for group in self.latents],
            "aligned": [_jsonable(asdict(group)) for group in self.aligned],
            "features": [_jsonable(asdict(group)) for group in self.features],
        }


def _jsonable(data: dict) -> dict:
    return {k: str(v) if isinstance(v, Path) else v for k, v in data.items()}


def _day(timestamp: float) -> str:
    return datetime.datetime.fromtimestamp(timestamp).date().isoformat()


def _registered() -> dict:
    from .plugins import registered

    return registered("weights")


def _files(folder: Path) -> list[Path]:
    return [Path(root) / name for root, _, names in os.walk(folder) for name in names]


def _total_size(paths) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(OSError):  # removed meanwhile
            total += path.stat().st_size
    return total


def _artifact_usage(folder: Path, registered) -> Optional[ArtifactUsage]:
    """None for a folder holding nothing but the lock file: a pull that failed before writing
    anything leaves one, and it is not an artifact (nor worth a 0 B row)."""
    files = [p for p in _files(folder) if p.name != cache.LOCK_FILE]
    if not files:
        return None
    record = cache.read_record(folder.name)
    if record is not None and record.path.is_file():
        status = "ready"
    elif any(p.name.endswith(cache.PART_SUFFIX) for p in files):
        status = "partial"
    else:
        status = "unrecorded"
    return ArtifactUsage(
        folder.name, folder, _total_size(files), len(files), status, folder.name in registered,
        record.fetched_at if record is not None else "",
    )


def usage() -> CacheUsage:
    """What the cache at :func:`essencekit.cache.cache_root` holds."""
    result = CacheUsage(cache.cache_root())
    registered = _registered()
    weights = cache.weights_dir()
    if weights.is_dir():
        found = (_artifact_usage(d, registered) for d in sorted(weights.iterdir()) if d.is_dir())
        result.artifacts = [a for a in found if a is not None]
    result.latents = [LatentUsage(*figures, *names) for names, figures in
                      _grouped(latent_cache.latents_root(), latent_cache.entries(), depth=3)]
    result.aligned = [AlignedUsage(*figures, *names) for names, figures in
                      _grouped(aligned_cache.aligned_root(), aligned_cache.entries(), depth=2)]
    result.features = [FeatureUsage(*figures, *names) for names, figures in
                       _grouped(feature_cache.features_root(), feature_cache.entries(), depth=2)]
    return result


def _grouped(base: Path, found: list[latent_cache.Entry], depth: int) -> list[tuple[tuple, tuple]]:
    """The entries of one per-image cache grouped by the first ``depth`` folders under ``base``
    (recipe version, then the models' names), in order: for each group, those names and
    ``(path, size, entries, oldest, last_used)``. A file higher up than ``depth`` folders is
    grouped by the folders it has."""
    groups: dict[tuple[str, ...], list[latent_cache.Entry]] = {}
    for entry in found:
        parts = entry.path.relative_to(base).parts[:depth]
        groups.setdefault(parts + ("",) * (depth - len(parts)), []).append(entry)
    summary = []
    for names, group in sorted(groups.items()):
        times = [e.mtime for e in group]
        summary.append((names, (base.joinpath(*(p for p in names if p)), sum(e.size for e in group), len(group),
                                _day(min(times)), _day(max(times)))))
    return summary


def find_artifact(name: str) -> ArtifactUsage:
    """What the cache holds of artifact ``name`` (its folder only: the latents are not
    walked). Refuses, in one line, names that are not in the cache and folders a failed pull
    left with nothing but a lock file."""
    weights = cache.weights_dir()
    folder = weights / name
    if not name or name in (".", "..") or Path(name).name != name or not folder.is_dir():
        present = sorted(d.name for d in weights.iterdir() if d.is_dir()) if weights.is_dir() else []
        close = difflib.get_close_matches(name, present, n=3)
        if close:
            hint = f" (did you mean {', '.join(close)}?)"
        elif name in _registered():
            hint = " (it is registered but not downloaded: nothing to remove)"
        else:
            hint = ""
        raise EssencekitError(
            f"{name!r} is not in the weight cache {weights}{hint}; `essencekit cache list` shows what is"
        )
    found = _artifact_usage(folder, _registered())
    if found is None:
        raise EssencekitError(
            f"nothing to remove for {name}: {folder} holds only the lock file of an unfinished pull"
        )
    return found


def remove_artifact(name: str, found: Optional[ArtifactUsage] = None) -> ArtifactUsage:
    """Delete one artifact's folder (its file, conversion, record, pin and any partial
    download); returns what was removed. ``found`` is :func:`find_artifact`'s answer when the
    caller already has it (the folder is not measured twice). Refuses names that are not in
    the cache, and waits for no one: an artifact ``pull-weights`` is working on is refused too."""
    removed = found if found is not None and found.name == name else find_artifact(name)
    folder = removed.path

    def busy(holder: str) -> None:
        raise EssencekitError(
            f"cannot remove {name}: `essencekit pull-weights` ({holder}) is working on it; wait for it to finish"
        )

    try:
        with cache.artifact_lock(name, timeout=0, on_wait=busy):
            # the lock file stays open until the block ends (Windows cannot delete it before)
            for child in folder.iterdir():
                if child.name == cache.LOCK_FILE:
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        shutil.rmtree(folder, ignore_errors=True)
    except OSError as error:
        raise cache.write_error(error, folder) from None
    return removed


@dataclass
class PruneResult:
    before: str  # the date: entries last used before it were removed
    entries: int
    size: int
    dry_run: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _pruned(prune, before: datetime.date, dry_run: bool) -> PruneResult:
    cutoff = datetime.datetime.combine(before, datetime.time()).timestamp()  # local midnight starting that day
    gone = prune(cutoff, dry_run=dry_run)
    return PruneResult(before.isoformat(), len(gone), sum(e.size for e in gone), dry_run)


def prune_latents(before: datetime.date, *, dry_run: bool = False) -> PruneResult:
    """Remove the W+ records last used before ``before`` (local midnight starting that day)."""
    return _pruned(latent_cache.prune, before, dry_run)


def prune_aligned(before: datetime.date, *, dry_run: bool = False) -> PruneResult:
    """Remove the aligned crops and no-face markers last used before ``before`` (local midnight
    starting that day); each costs one new alignment if its photo is trained on again."""
    return _pruned(aligned_cache.prune, before, dry_run)


def prune_features(before: datetime.date, *, dry_run: bool = False) -> PruneResult:
    """Remove the FID features of real images last used before ``before`` (local midnight
    starting that day); each costs one Inception pass if its image is measured again."""
    return _pruned(feature_cache.prune, before, dry_run)
