"""Which files a run works on: the files, folders and glob patterns given as sources.

Explicit files are always used (a file that is not an image is then reported, not silently
dropped); inside folders only files whose extension Pillow can open, and W+ latent files,
are picked up, in sorted order, hidden files skipped. A pattern that matches nothing and a
missing path become a :class:`Source` with an ``error``, so they are reported with the rest.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import EssencekitError

LATENT_SUFFIXES = (".safetensors", ".npy", ".pt", ".pth")
_GLOB_CHARS = set("*?[")


def image_suffixes() -> frozenset[str]:
    """Extensions of every format this Pillow can open (``.jpg``, ``.png``, ``.webp``, ...)."""
    from PIL import Image

    Image.init()
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


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


def _walk(folder: Path, recursive: bool, exclude: Path | None, wanted: frozenset[str]):
    for root, dirs, files in os.walk(folder):
        root_path = Path(root)
        # our own output folder may sit inside an input folder: never read our outputs back
        dirs[:] = sorted(
            d for d in dirs
            if not d.startswith(".") and (exclude is None or (root_path / d).resolve() != exclude)
        ) if recursive else []
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = root_path / name
            if path.suffix.lower() in wanted:
                yield path


def discover(inputs, *, recursive: bool = False, exclude: str | os.PathLike | None = None) -> list[Source]:
    """The sources of ``inputs`` (paths, folders, glob patterns; strings or ``Path``), in the
    order given, each file once. ``exclude`` (the output folder) is never entered."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    wanted = image_suffixes() | frozenset(LATENT_SUFFIXES)
    excluded = Path(exclude).resolve() if exclude is not None else None
    seen: set[Path] = set()
    sources: list[Source] = []

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
            for found in _walk(path, recursive, excluded, wanted):
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
