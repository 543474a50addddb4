"""The training photos of ``train-encoder``: a folder of photos made into the encoder's inputs.

Each photo becomes exactly what e4e sees at transfer time, so that the encoder is trained on
the inputs it will be given: with ``align=True`` the largest face, aligned as FFHQ by
:func:`essencekit.faces.align_faces` and reduced by :meth:`~essencekit.faces.AlignedFace.crop_tensor`
(transfer's inversion path); with ``align=False`` the picture's centre square, taken as an
aligned crop as transfer's ``align=False`` takes a picture. Alignment is slow (a detector per
photo), so its crops are kept in the aligned-crop cache (:mod:`essencekit.aligned_cache`)
and a second run reads them back; photos with no usable face are remembered there too.

Photos that cannot be used (unreadable, no face, a face too small) are skipped and listed,
never fatal; only a folder with nothing usable at all is an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import EssencekitError, OptionError, braced, first_line

#: The side of the FFHQ crop transfer renders before reducing it to the encoder's input
#: (``align_faces``' default); rendering at another size would change the pixels.
ALIGN_OUTPUT_SIZE = 1024
#: The reason of a photo in which the aligner found no face at all.
NO_FACE = "no face found"
_SHOWN_REASONS = 3


@dataclass
class TrainingImages:
    """The usable photos of a folder, in sorted order of their names.

    ``pixels``: uint8 ``[N, 3, size, size]``; ``files``: their names relative to the folder
    (POSIX); ``sha256``: each file's sha256; ``skipped``: ``(name, reason)`` of every file not
    used; ``recipe``: how the pixels were made (``aligned:<aligner>:<size>`` or
    ``crop:<size>``).
    """

    pixels: torch.Tensor
    files: list[str]
    sha256: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    recipe: str = ""

    def __len__(self) -> int:
        return len(self.files)

    @property
    def size(self) -> int:
        return int(self.pixels.shape[-1])

    @property
    def digest(self) -> str:
        """A sha256 of what is trained on: the recipe and the photos' contents, not their
        names (renaming keeps it; changing, adding or removing a photo changes it)."""
        digest = hashlib.sha256(f"essencekit training images\n{self.recipe}\n".encode())
        for sha in sorted(self.sha256):
            digest.update(f"{sha}\n".encode())
        return digest.hexdigest()

    def batch(self, indices, flips=None) -> torch.Tensor:
        """float32 ``[B, 3, size, size]`` in ``[-1, 1]`` (``x / 127.5 - 1``, the arithmetic of
        ``crop_tensor``, so bit for bit what transfer feeds e4e), mirrored left-right where
        ``flips[i]`` is true."""
        index = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        images = self.pixels.index_select(0, index).to(torch.float32) / 127.5 - 1.0
        if flips is not None:
            mirror = torch.as_tensor(flips, dtype=torch.bool).reshape(-1)
            if mirror.numel() != index.numel():
                raise ValueError(f"got {index.numel()} indices but {mirror.numel()} flips")
            if bool(mirror.any()):
                images[mirror] = images[mirror].flip(-1)
        return images


def load_training_images(
    folder,
    *,
    align: bool = True,
    aligner: str | None = None,
    size: int = 256,
    parameter: str = "train_dir",
    progress: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
    recursive: bool = False,
) -> TrainingImages:
    """The usable photos of ``folder`` as :class:`TrainingImages`.

    Photos are found as transfer finds them in a folder (every format Pillow reads, hidden
    files skipped, sub-folders only with ``recursive``) and read as it reads them (EXIF
    orientation, pixel limit, HEIC). ``align``: the largest face aligned as FFHQ by
    ``aligner`` (default: the default aligner), cached; else the centre square. ``size``: the
    crop side. ``parameter`` names the folder's parameter in errors (:class:`OptionError`).
    ``progress(done, total)`` is called after each photo; ``notify(message)`` for notes
    (which files were skipped).
    """
    from ..cache import sha256_file
    from ..images import describe_unsupported, unsupported_reason
    from ..inputs import discover

    notify = notify or (lambda message: None)
    root = Path(folder)
    if not isinstance(size, int) or size < 8:
        raise OptionError(f"size must be a whole number of pixels, at least 8, not {size!r}", parameter="size")
    if not root.exists():
        raise OptionError(f"{root}: no such folder; give the folder that holds the training photos", parameter=parameter)
    if not root.is_dir():
        raise OptionError(f"{root} is a file, not a folder; give the folder that holds the training photos",
                          parameter=parameter)

    sources = discover([root], recursive=recursive)
    skipped = [(_name(path, root), unsupported_reason(path)) for path in sources.skipped]
    photos = sorted((s for s in sources if s.kind == "image"), key=lambda s: s.rel.as_posix())
    skipped += [(s.rel.as_posix(), "a W+ latents file, not a photo") for s in sources if s.kind != "image"]
    if not photos:
        detail = f": {braced(describe_unsupported(sources.skipped))}" if sources.skipped else ""
        sub = (f" (it has {sources.subfolders} sub-folder(s): use {{recursive}} to look into them)"
               if sources.subfolders else "")
        raise OptionError(
            braced(f"no image files in {root}") + detail + sub + "; put the training photos (.jpg, .png, ...) there",
            parameter=parameter, mentions=("recursive",) if sources.subfolders else (),
        )

    maker = _Aligned(aligner, size, notify) if align else _Centre(size)
    pixels: list[np.ndarray] = []
    files: list[str] = []
    hashes: list[str] = []
    first_of: dict[str, str] = {}
    for done, source in enumerate(photos, 1):
        name = source.rel.as_posix()
        crop, reason, sha = None, "", ""
        try:
            sha = sha256_file(source.path)
            if sha in first_of:
                # the same file twice would only weigh one photo double
                reason = f"the same file as {first_of[sha]}"
            else:
                crop, reason = maker(source.path, sha)
        except EssencekitError as error:
            reason = f"cannot read: {_without_path(str(error), source.path)}"
        except OSError as error:
            reason = f"cannot read: {error.strerror or error}"
        if crop is None:
            skipped.append((name, reason))
        else:
            first_of[sha] = name
            pixels.append(crop)
            files.append(name)
            hashes.append(sha)
        if progress is not None:
            progress(done, len(photos))

    skipped.sort()
    total = len(sources) + len(sources.skipped)
    if not files:
        no_face = any(reason == NO_FACE for _, reason in skipped)
        hint = "; if the photos are already aligned face crops, use {no_align}" if no_face else ""
        raise OptionError(
            braced(f"no usable image in {root}: all {total} file(s) were skipped ({_listing(skipped)})") + hint,
            parameter=parameter, mentions=("no_align",) if no_face else (),
        )
    if skipped:
        notify(f"skipped {len(skipped)} of {total} files in {root}: {_listing(skipped)}")
    stacked = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).contiguous()
    return TrainingImages(stacked, files, hashes, skipped, maker.recipe)


def _name(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.name


def _without_path(message: str, path: Path) -> str:
    """An image error's message without the path it starts with: the name is listed beside it."""
    prefix = f"{path}: "
    return message[len(prefix):] if message.startswith(prefix) else message


def _listing(skipped: Sequence[tuple[str, str]]) -> str:
    shown = "; ".join(f"{name}: {reason}" for name, reason in skipped[:_SHOWN_REASONS])
    more = len(skipped) - _SHOWN_REASONS
    return shown + (f"; and {more} more" if more > 0 else "")


def _as_uint8(face_tensor: torch.Tensor) -> np.ndarray:
    """``crop_tensor``'s ``[1, 3, S, S]`` in [-1, 1] back to its uint8 ``[S, S, 3]`` pixels:
    exact, since it holds ``p / 127.5 - 1`` of integers ``p`` (float32 errors are far below
    half a level), so :meth:`TrainingImages.batch` gives back the same floats bit for bit."""
    values = ((face_tensor[0] + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)
    return values.permute(1, 2, 0).contiguous().numpy()


class _Centre:
    """``align=False``: the centre square, taken as transfer takes an already aligned crop."""

    def __init__(self, size: int):
        self.size = size
        self.recipe = f"crop:{size}"

    def __call__(self, path: Path, sha256: str) -> tuple[np.ndarray | None, str]:
        from ..faces import face_from_aligned_crop
        from ..images import centre_square, read_image

        face = face_from_aligned_crop(centre_square(read_image(path)), output_size=ALIGN_OUTPUT_SIZE)
        return _as_uint8(face.crop_tensor(self.size)), ""


class _Aligned:
    """``align=True``: the largest face, as transfer's inversion path aligns it, cached."""

    def __init__(self, aligner: str | None, size: int, notify: Callable[[str], None]):
        from ..aligned_cache import AlignedCache
        from ..faces import get_aligner

        # resolved once: a missing aligner fails the run, not every photo
        self.aligner = get_aligner(aligner)
        self.size = size
        self.notify = notify
        self.cache: AlignedCache | None = AlignedCache(self.aligner.name)
        self.recipe = f"aligned:{self.aligner.name}:{size}"

    def __call__(self, path: Path, sha256: str) -> tuple[np.ndarray | None, str]:
        from ..faces import align_faces
        from ..images import check_image_size, read_image

        cached = self.cache.load_crop(sha256, self.size) if self.cache is not None else None
        if cached is not None:
            check_image_size(path)  # the pixel limit holds for a cached photo too, as in transfer
            return cached, ""
        marker = self.cache.load_marker(sha256) if self.cache is not None else None
        if marker is not None:
            check_image_size(path)
            return None, marker

        photo = read_image(path)
        try:
            faces = align_faces(photo, aligner=self.aligner, which="largest", output_size=ALIGN_OUTPUT_SIZE)
        except MemoryError:
            raise
        except Exception as error:  # noqa: BLE001 - a plugin's detector failing on one photo must not stop the run
            return None, f"face detection failed: {first_line(error, typed=True)}"
        if not faces:
            reason = _no_face_reason(faces.rejected)
            self._write(lambda cache: cache.store_marker(sha256, reason))
            return None, reason
        pixels = _as_uint8(faces[0].crop_tensor(self.size))
        self._write(lambda cache: cache.store_crop(sha256, self.size, pixels))
        return pixels, ""

    def _write(self, store) -> None:
        if self.cache is None:
            return
        try:
            store(self.cache)
        except OSError as error:  # the cache only saves time: a full or read-only disk must not stop the run
            self.notify(f"could not write the aligned-crop cache ({error.strerror or error}); continuing without it")
            self.cache = None


def _no_face_reason(rejected) -> str:
    """Why a photo gave no face: a face too small says so (with its size), else no face at all."""
    small = [r.message for r in rejected if r.reason == "too-small"]
    return small[0] if small else NO_FACE
