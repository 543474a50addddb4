"""Which files a run works on: the files, folders and glob patterns given as sources.

Explicit files are always used (a file that is not an image is then reported, not silently
dropped); inside folders only files whose extension Pillow can open, and W+ latent files,
are picked up, in sorted order, hidden files skipped. A pattern that matches nothing and a
missing path become a :class:`Source` with an ``error``, so they are reported with the rest.
:class:`InputFiles` tells whether an output path would land on one of the inputs.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from .errors import EssencekitError

LATENT_SUFFIXES = (".safetensors", ".npy", ".pt", ".pth")
_GLOB_CHARS = set("*?[")


def image_suffixes() -> frozenset[str]:
    """Extensions of every format this Pillow can open (``.jpg``, ``.png``, ``.webp``, ``.heic``
    with pillow-heif, ...)."""
    from .images import photo_suffixes

    return photo_suffixes()


@dataclass(frozen=True)
class Source:
    """One input. ``kind``: ``"image"`` or ``"latents"``; ``rel``: its path relative to the
    folder it was found in (its own name for a file given directly), which output names
    mirror; ``error``: why it cannot be used (missing, no match), else empty."""

    path: Path
    kind: str
    rel: PurePosixPath
    error: str = ""

    @property
    def display(self) -> str:
        return str(self.path)


def kind_of(path: Path) -> str:
    return "latents" if path.suffix.lower() in LATENT_SUFFIXES else "image"


class Sources(list):
    """The list :func:`discover` returns, plus what it passed over in folders: ``skipped``
    (files of an extension no reader opens) and ``subfolders`` (folders not entered without
    ``recursive``), so that "nothing found" can say why."""

    def __init__(self, items=()):
        super().__init__(items)
        self.skipped: list[Path] = []
        self.subfolders = 0


def path_key(path: str | os.PathLike) -> str:
    """What two paths are compared by: symlinks resolved, case folded (on macOS and Windows
    ``A.png`` and ``a.png`` are one file, and a run must be as careful on Linux)."""
    return os.path.normcase(os.path.realpath(path)).casefold()


class InputFiles:
    """The files a run reads, by every way another path can reach them: the same path up to
    symlinks and case, or the same file on disk (a hard link, a case-insensitive volume)."""

    def __init__(self, paths):
        self.by_key: dict[str, Path] = {}
        self._by_id: dict[tuple[int, int], Path] = {}
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError:
                continue
            self.by_key[path_key(path)] = Path(path)
            self._by_id[(stat.st_dev, stat.st_ino)] = Path(path)

    def clash(self, path: str | os.PathLike) -> Path | None:
        """The input file that writing ``path`` would replace, or ``None``."""
        found = self.by_key.get(path_key(path))
        if found is None:
            try:
                stat = os.stat(path)
            except OSError:
                return None
            found = self._by_id.get((stat.st_dev, stat.st_ino))
        return found


def _walk(folder: Path, recursive: bool, exclude: Path | None, wanted: frozenset[str], found: Sources):
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        # our own output folder may sit inside an input folder: never read our outputs back
        visible = sorted(
            d for d in dirs
            if not d.startswith(".") and (exclude is None or (root_path / d).resolve() != exclude)
        )
        dirs[:] = visible if recursive else []
        found.subfolders += 0 if recursive else len(visible)
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = root_path / name
            if path.suffix.lower() in wanted:
                yield path
            else:
                found.skipped.append(path)


def discover(inputs, *, recursive: bool = False, exclude: str | os.PathLike | None = None) -> Sources:
    """The sources of ``inputs`` (paths, folders, glob patterns; strings or ``Path``), in the
    order given, each file once. ``exclude`` (the output folder) is never entered."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    wanted = image_suffixes() | frozenset(LATENT_SUFFIXES)
    excluded = Path(exclude).resolve() if exclude is not None else None
    seen: set[Path] = set()
    sources = Sources()

    def add(path: Path, rel: PurePosixPath) -> None:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            sources.append(Source(path, kind_of(path), rel))

    for item in inputs:
        text = os.fspath(item)
        path = Path(text)
        if path.is_dir():
            if excluded is not None and path.resolve() == excluded:
                raise EssencekitError(
                    f"{text} is both an input folder and the output folder: the outputs would be read back as inputs "
                    "on the next run; choose another -o"
                )
            for found in _walk(path, recursive, excluded, wanted, sources):
                add(found, PurePosixPath(found.relative_to(path).as_posix()))
        elif path.exists():
            add(path, PurePosixPath(path.name))
        elif _GLOB_CHARS & set(text):
            matches = sorted(glob.glob(text, recursive=True))
            files = [Path(m) for m in matches if Path(m).is_file()]
            if not files:
                sources.append(Source(path, "image", PurePosixPath(path.name), f"{text}: no file matches this pattern"))
            for match in files:
                add(match, PurePosixPath(match.name))
        else:
            sources.append(Source(path, kind_of(path), PurePosixPath(path.name), f"{text}: no such file or folder"))
    return sources
