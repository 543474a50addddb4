"""The batched run behind ``essencekit transfer`` and ``essencekit invert``.

Three stages, streaming, so memory stays flat over any number of photos:

1. *prepare* (one source at a time, optionally on background threads): hash the file, look
   up the W+ cache, read the photo when it is needed, find and align the faces (or take the
   cached ones), make e4e's 256 px inputs. Bad inputs become failed results here.
2. *compute* (the calling thread, on the backend, under its autocast): as soon as
   ``batch_size`` faces are waiting, invert those not cached in batches, store them in the
   cache, and synthesise every image the outputs need (the reconstruction at strength 0 when
   it is pasted as a difference or shown in a grid, and one edit per strength) in batches of
   ``batch_size``; images come back to the host as 8-bit.
3. *finalize* (optionally on background threads): paste back, or take the crops, draw the
   contact sheet, and write each file under a temporary name, then rename it.

Only the faces of the current batch and the writes in flight are held; results come out in
input order.
"""

from __future__ import annotations

import bisect
import contextlib
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import EssencekitError, Message, braced
from ..inputs import InputFiles, Source, path_key
from ..latent_cache import NO_ALIGN, CachedFace, CacheRecord, LatentCache
from .concurrency import OrderedPool, ordered_map
from .naming import NameRegistry, output_name, plan_bases
from .timing import OFF, TimedAligner
from .writing import extension, save_image

FEATHER = 0.1


@dataclass
class Result:
    """One output file (or in-memory image), one skipped output, or one failed input.

    ``status``: ``"written"``, ``"skipped"`` (``--skip-existing`` found it), ``"done"`` (no
    output folder: see ``image`` / ``w_plus``) or ``"failed"`` (``reason`` says why). ``kind``:
    ``"photo"`` (the whole photo, faces pasted back), ``"crop"``, ``"grid"``, ``"latent"``
    (``invert``), ``"input"`` (a failure). ``face``: the face index for a crop or latent;
    ``strength``: the strength asked for (``None``: the essences' recommended ones).
    ``faces``: faces processed in this source; ``last``: the last result of its source;
    ``notes``: detections that were skipped (a face too small, ...); ``position``: the
    source's place in the run's input list.
    """

    source: str
    status: str
    kind: str = "photo"
    output: Path | None = None
    face: int | None = None
    strength: float | None = None
    essence: str = ""
    reason: str = ""
    faces: int = 0
    notes: list[str] = field(default_factory=list)
    last: bool = False
    image: object = None
    w_plus: Tensor | None = None
    transform: dict | None = None
    position: int = 0

    def to_json(self) -> dict:
        data = {
            "source": self.source, "status": self.status, "kind": self.kind,
            "output": str(self.output) if self.output is not None else None, "face": self.face,
            "strength": self.strength, "essence": self.essence or None, "faces": self.faces,
        }
        if self.reason:
            data["reason"] = self.reason
        if self.notes:
            data["notes"] = self.notes
        return data


@dataclass
class Settings:
    """What a run does; see :meth:`essencekit.transfers.api.Transferrer.transfer`."""

    mode: str = "transfer"  # or "invert"
    output: Path | None = None
    strengths: list[float] | None = None
    rows: tuple[int, ...] | None = None
    faces: str = "largest"
    align: bool = True
    crops: bool = False
    paste: str = "difference"
    fmt: str = "png"
    quality: int | None = None
    overwrite: bool = False
    skip_existing: bool = False
    grid: bool = False
    batch_size: int | None = None
    max_pixels: int | None = None
    cache: bool = True
    workers: int | None = None  # background threads for reading and for writing; None: automatic


@dataclass
class Planned:
    path: Path | None
    kind: str
    face: int | None = None
    sweep: int | None = None  # position in the strength list
    exists: bool = False


@dataclass
class FaceWork:
    index: int
    face: object = None  # AlignedFace (geometry for paste-back); None for latent sources
    crop: Tensor | None = None  # e4e input while the face waits for its inversion
    w: Tensor | None = None
    images: dict = field(default_factory=dict)  # "recon" or sweep position -> uint8 [H, W, 3]


@dataclass
class Item:
    source: Source
    base: str
    photo: object = None
    sha256: str = ""
    faces: list[FaceWork] = field(default_factory=list)
    record: CacheRecord | None = None  # to store once the faces are inverted
    notes: list[str] = field(default_factory=list)
    outputs: list[Planned] | None = None
    failure: str = ""
    position: int = 0

    @property
    def done(self) -> bool:
        return bool(self.failure) or (self.outputs is not None and all(o.exists for o in self.outputs))


def auto_batch_size(generator, backend) -> int:
    """Faces per pass: what fits the backend's memory budget, at most its ``max_batch``."""
    from ..memory import bytes_per_image

    per_image = bytes_per_image(generator, generator.size, backward=False)
    if backend.autocast_dtype in (torch.float16, torch.bfloat16):
        per_image /= 2
    return int(max(1, min(backend.max_batch, backend.memory_budget() // max(1.0, per_image))))


def to_uint8(images: Tensor) -> np.ndarray:
    """[B, 3, H, W] in [-1, 1] -> [B, H, W, 3] uint8 on the host (converted on the device, so
    a quarter of the bytes cross over)."""
    pixels = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).contiguous().cpu().numpy()


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Pipeline:
    """One run: ``models`` (an :class:`essencekit.transfers.api.Transferrer`), ``settings``,
    the essence ``mix`` (transfer only), ``notify`` for one-line notices."""

    def __init__(self, models, settings: Settings, mix=None, notify: Callable[[str], None] | None = None):
        self.models = models
        self.settings = settings
        self.mix = mix
        self.notify = notify or (lambda message: None)
        self.registry = NameRegistry()
        self.inputs = InputFiles([])  # the files the run reads: see start()
        self._input_keys: list[str] = []
        self.cache: LatentCache | None = None
        self.deltas: list[Tensor] = []
        self.sweep = settings.strengths if settings.strengths is not None else [None]
        self.ext = extension(settings.fmt)
        self.timings = OFF  # a benchmark sets a timing.Timings to see where each photo's time goes

    # -- set-up ----------------------------------------------------------------------------

    def start(self, sources: list[Source]) -> list[Item]:
        """Name the outputs that can be named before reading anything, refuse any that would
        replace an input, apply the existing-file policy (raises when outputs exist and neither
        ``overwrite`` nor ``skip_existing`` is set), then load what the sources need."""
        s = self.settings
        models = self.models
        # names first: refusing a clash must not wait for the models (nor need them installed)
        bases = plan_bases([src.rel for src in sources])
        items = [Item(src, base, position=i) for i, (src, base) in enumerate(zip(sources, bases))]
        essence_files = [t.path for t in self.mix.terms if t.path is not None] if self.mix is not None else []
        self.inputs = InputFiles([src.path for src in sources if not src.error] + essence_files)
        self._input_keys = sorted(self.inputs.by_key)
        existing = []
        for item in items:
            if item.source.error:
                item.failure = item.source.error
            elif self._names_known(item):
                self._plan(item)
                existing += [o.path for o in item.outputs if o.exists]
            self._refuse_input_clash(item)
        if existing and not (s.overwrite or s.skip_existing):
            more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
            raise EssencekitError(
                braced(f"{existing[0]}{more} already exist{'s' if len(existing) == 1 else ''}")
                + "; use {overwrite} to replace them or {skip_existing} to keep them (and resume an interrupted run)",
                mentions=("overwrite", "skip_existing"),
            )
        images = any(src.kind == "image" and not src.error for src in sources)
        if images:
            models.encoder  # noqa: B018 - load e4e (and hash it) now, not in a reader thread
            if s.align:
                models.aligner  # noqa: B018 - an aligner missing fails the run, not every photo
            if s.cache and models.encoder_sha256:
                self.cache = LatentCache(models.encoder_sha256, models.aligner_name if s.align else NO_ALIGN)
        if s.mode == "transfer":
            generator = models.generator
            from .layers import row_mask

            mask = None if s.rows is None else row_mask(s.rows, generator.n_latent)
            self.deltas = [self.mix.delta(strength, mask) for strength in self.sweep]
        return items

    def _clash(self, item: Item) -> str:
        """Why an output of ``item`` (planned, else any it could get once its faces are known)
        would replace an input file (a :class:`Message`), or ``""``. Checked whatever --overwrite and
        --skip-existing say: a run must never destroy what it reads."""
        out = self.settings.output
        if out is None or item.source.error:
            return ""
        if item.outputs is not None:
            pairs = [(p.path, self.inputs.clash(p.path)) for p in item.outputs]
            pairs = [(path, source) for path, source in pairs if source is not None]
        else:
            # face numbers and repeat suffixes (-2) are not known yet: match any of them, among
            # the inputs whose path starts as this item's outputs do (found by bisection, so a
            # run of many photos into their own folder stays linear)
            start = out / item.base
            prefix = os.path.join(path_key(start.parent), os.path.normcase(start.name).casefold())
            keys = self._input_keys
            nearby = []
            for i in range(bisect.bisect_left(keys, prefix), len(keys)):
                if not keys[i].startswith(prefix):
                    break
                nearby.append(keys[i])
            pairs = []
            for planned in (self._names(item, [0]) + self._names(item, [-1, -1])) if nearby else []:
                key = path_key(out / planned.path)
                ext = os.path.splitext(key)[1]
                body = re.escape(key[: len(key) - len(ext)]).replace(re.escape("_face-1"), r"_face\d+")
                pattern = re.compile(body + r"(?:-\d+)?" + re.escape(ext))
                pairs += [(out / planned.path, self.inputs.by_key[k]) for k in nearby if pattern.fullmatch(k)]
        if not pairs:
            return ""
        path, source = pairs[0]
        return Message(
            braced(f"{path} would overwrite the input file {source}")
            + ": outputs never replace inputs, whatever {overwrite} says; choose another output folder (-o) or move the input",
            ("overwrite",),
        )

    def _refuse_input_clash(self, item: Item) -> None:
        reason = self._clash(item)
        if reason:
            raise EssencekitError(reason.template + " (nothing was written)", mentions=reason.mentions)

    def batch_size(self) -> int:
        if self.settings.batch_size:
            return self.settings.batch_size
        return auto_batch_size(self.models.generator, self.models.backend)

    # -- output names -----------------------------------------------------------------------

    def _names_known(self, item: Item) -> bool:
        """Names that depend only on the source: whole photos (one per strength) and grids."""
        return self.settings.mode == "transfer" and item.source.kind == "image" and not self.settings.crops

    def _names(self, item: Item, faces: list[int]) -> list[Planned]:
        """The outputs of ``item`` if it has the faces numbered ``faces``, named relative to
        the output folder."""
        s = self.settings
        label = self.mix.label if self.mix is not None else ""
        sweep = len(self.sweep) > 1
        several = len(faces) > 1
        planned: list[Planned] = []
        if s.mode == "invert":
            for index in faces:
                name = output_name(item.base, "", ".safetensors", face=index if several else None)
                planned.append(Planned(name, "latent", index))
        elif self._names_known(item):
            for k, strength in enumerate(self.sweep):
                planned.append(Planned(output_name(item.base, label, self.ext, strength=strength if sweep else None),
                                       "photo", None, k))
        else:
            for index in faces:
                for k, strength in enumerate(self.sweep):
                    name = output_name(item.base, label, self.ext, face=index if several else None,
                                       strength=strength if sweep else None)
                    planned.append(Planned(name, "crop", index, k))
        if s.grid and s.mode == "transfer":
            planned.append(Planned(output_name(item.base, label, ".png", tag="grid"), "grid"))
        return planned

    def _plan(self, item: Item) -> None:
        s = self.settings
        planned = self._names(item, [f.index for f in item.faces])
        for p in planned:
            if s.output is None:
                p.path = None
                continue
            p.path = self.registry.claim(s.output / p.path)
            p.exists = p.path.exists() and not s.overwrite
        item.outputs = planned

    # -- stage 1: prepare ---------------------------------------------------------------------

    def prepare(self, item: Item) -> Item:
        if item.done:
            return item
        try:
            if item.source.kind == "latents":
                self._prepare_latents(item)
            else:
                self._prepare_image(item)
        except EssencekitError as error:
            item.failure = str(error)
        except OSError as error:
            item.failure = f"{item.source.display}: cannot be read ({error.strerror or error})"
        return item

    def _prepare_latents(self, item: Item) -> None:
        if self.settings.mode == "invert":
            raise EssencekitError(f"{item.source.display}: already a W+ latents file (nothing to invert)")
        from ..latents import read_latents

        generator = self.models.generator
        latents, _ = read_latents(item.source.path, generator.n_latent, generator.style_dim)
        item.faces = [FaceWork(i, None, None, w) for i, w in enumerate(latents)]

    def _prepare_image(self, item: Item) -> None:
        from ..cache import sha256_file
        from ..images import check_image_size, read_image

        s = self.settings
        path = item.source.path
        # hashing decodes nothing, so the cache is asked first; the header is then opened once,
        # by read_image when the photo is needed, else by check_image_size: either way the pixel
        # limit holds, for a cached result too
        item.sha256 = sha256_file(path) if path.is_file() and path.stat().st_size else ""
        mode = s.faces if s.align else NO_ALIGN
        record = self.cache.load(item.sha256) if self.cache is not None and item.sha256 else None
        usable = record is not None and record.covers(mode)
        wanted = [f for f in record.faces if mode == "all" or f.index == 0] if usable else []
        needs_photo = (
            not usable or any(f.index not in record.latents for f in wanted) or s.grid
            or (s.mode == "transfer" and not s.crops)
        )
        with self.timings.section("decode"):
            photo = read_image(path, max_pixels=s.max_pixels) if needs_photo else None
        if photo is None and s.max_pixels is not None:
            check_image_size(path, max_pixels=s.max_pixels)
        if usable and not wanted:
            raise EssencekitError(self._no_face_message(item.source, record.rejected))
        if usable:
            faces = [self._cached_face(f, record, photo) for f in wanted]
            item.notes = [r["message"] for r in record.rejected if r.get("reason") == "too-small"]
        else:
            with self.timings.section("align"):
                faces, rejected = self._detect(photo)
            item.notes = [r.message for r in rejected if r.reason == "too-small"]
            record = CacheRecord(
                mode,
                [CachedFace(f.index, f.landmarks, f.transform.to_dict(), float(f.size)) for f in faces],
                [{"reason": r.reason, "message": r.message} for r in rejected],
                dict(record.latents) if record is not None else {},
            )
            if not faces:
                self._store(item.sha256, record)  # no face: the next run need not look again
                raise EssencekitError(self._no_face_message(item.source, record.rejected))
            item.record = record
            faces = [(face, record.latents.get(face.index)) for face in faces]
        item.photo = photo
        size = self.models.encoder.input_size
        for face, w in faces:
            work = FaceWork(face.index, face, None, w)
            if w is None:
                with self.timings.section("align"):
                    work.crop = face.crop_tensor(size=size)
            if not s.grid:
                face.crop = None  # the 1024 px crop is only shown in a grid
            item.faces.append(work)
        if item.record is None and any(f.w is None for f in item.faces):
            item.record = record

    def _detect(self, photo):
        from ..faces import align_faces, face_from_aligned_crop

        if not self.settings.align:
            return [face_from_aligned_crop(photo)], []
        aligner = self.models.aligner if self.timings is OFF else TimedAligner(self.models.aligner, self.timings)
        faces = align_faces(photo, aligner=aligner, which=self.settings.faces)
        return list(faces), list(faces.rejected)

    def _cached_face(self, cached: CachedFace, record: CacheRecord, photo):
        from ..faces import AlignedFace, CropTransform, align_face, face_from_aligned_crop

        w = record.latents.get(cached.index)
        if photo is not None and (w is None or self.settings.grid):
            # the crop is needed (to invert, or to show): render it again, no detection
            face = face_from_aligned_crop(photo) if record.mode == NO_ALIGN else align_face(photo, cached.landmarks)
            face.index = cached.index
            return face, w
        transform = CropTransform.from_dict(cached.transform)
        quad = np.asarray(transform.quad) - 0.5
        return AlignedFace(None, cached.landmarks, quad, transform, cached.index, cached.size), w

    @staticmethod
    def _no_face_message(source: Source, rejected: list) -> str:
        reasons = [r["message"] if isinstance(r, dict) else r.message for r in rejected
                   if (r["reason"] if isinstance(r, dict) else r.reason) == "too-small"]
        if reasons:
            return f"{source.display}: {reasons[0]}"
        return f"{source.display}: no face found"

    def _store(self, sha256: str, record: CacheRecord) -> None:
        if self.cache is None or not sha256:
            return
        try:
            self.cache.store(sha256, record)
        except OSError as error:  # the cache only saves time: a full or read-only disk must not stop the run
            self.notify(f"could not write the W+ cache ({error.strerror or error}); continuing without it")
            self.cache = None

    # -- stage 2: compute ---------------------------------------------------------------------

    def _needs_recon(self, item: Item) -> bool:
        s = self.settings
        if s.grid or any(not d.any() for d in self.deltas):
            return True
        return s.paste == "difference" and item.source.kind == "image" and not s.crops

    def compute(self, batch: list[Item], batch_size: int) -> None:
        models = self.models
        backend = models.backend
        waiting = [f for item in batch for f in item.faces if f.w is None]
        if waiting:
            e4e = models.encoder
            for chunk in _chunks(waiting, batch_size):
                x = torch.cat([f.crop for f in chunk]).to(backend.device)
                if backend.channels_last:  # as the encoder's weights are (Backend.prepare)
                    x = x.contiguous(memory_format=torch.channels_last)
                with torch.no_grad(), backend.autocast(), self.timings.section("encode"):
                    codes = e4e.invert(x)
                for f, w in zip(chunk, codes.float().cpu()):
                    f.w, f.crop = w, None
        for item in batch:
            if item.record is not None:
                item.record.latents.update({f.index: f.w for f in item.faces})
                self._store(item.sha256, item.record)
                item.record = None
        if self.settings.mode == "invert":
            return
        jobs = []
        for item in batch:
            recon = self._needs_recon(item)
            for f in item.faces:
                if recon:
                    jobs.append((f, "recon", f.w))
                jobs += [(f, k, f.w + d) for k, d in enumerate(self.deltas) if d.any()]
        generator = models.generator
        for chunk in _chunks(jobs, batch_size):
            w = torch.stack([latent for _, _, latent in chunk]).to(backend.device)
            with torch.no_grad(), backend.autocast(), self.timings.section("synthesise"):
                images = to_uint8(generator.synthesis(w, noise="const"))
            for (f, key, _), pixels in zip(chunk, images):
                f.images[key] = pixels
        for item in batch:
            for f in item.faces:
                for k, d in enumerate(self.deltas):
                    if not d.any():
                        # strength 0 is the reconstruction itself, bit for bit
                        f.images[k] = f.images["recon"]

    # -- stage 3: finalize ----------------------------------------------------------------------

    def _metadata(self, item: Item, planned: Planned) -> dict:
        from ..version import __version__

        models = self.models
        meta = {
            "essencekit_version": __version__,
            "source": item.source.path.name,
            "source_sha256": item.sha256 or None,
            "generator": models.generator_label,
            "encoder": models.encoder_label if item.source.kind == "image" else None,
        }
        if self.settings.mode == "transfer":
            strength = self.sweep[planned.sweep] if planned.sweep is not None else None
            meta.update(
                essence=self.mix.label, essences=self.mix.describe(), strength=strength,
                effective_strengths=self.mix.effective(strength) if planned.kind != "grid" else None,
                strengths=self.sweep if planned.kind == "grid" else None,
                layers=list(self.settings.rows) if self.settings.rows is not None else "all",
                paste=self.settings.paste if planned.kind == "photo" else None,
                face=planned.face, faces=[f.index for f in item.faces],
            )
        return {key: value for key, value in meta.items() if value is not None}

    def _render(self, item: Item, planned: Planned):
        from PIL import Image

        from ..faces import paste_back, paste_back_difference

        if planned.kind == "crop":
            face = next(f for f in item.faces if f.index == planned.face)
            return Image.fromarray(face.images[planned.sweep])
        if planned.kind == "photo":
            faces = [f.face for f in item.faces]
            edited = [Image.fromarray(f.images[planned.sweep]) for f in item.faces]
            if self.settings.paste == "difference":
                recon = [Image.fromarray(f.images["recon"]) for f in item.faces]
                return paste_back_difference(item.photo, faces, edited, recon, feather=FEATHER)
            return paste_back(item.photo, faces, edited, feather=FEATHER)
        from ..images import contact_sheet
        from .naming import format_strength

        labels = ["aligned crop", "inversion"] + [
            "recommended" if s is None else format_strength(s).replace("s", "strength ", 1) for s in self.sweep
        ]
        rows = []
        for f in item.faces:
            crop = getattr(f.face, "crop", None) if f.face is not None else None
            pictures = [Image.fromarray(f.images[key]) for key in ["recon", *range(len(self.sweep))]]
            rows.append([crop, *pictures])
        return contact_sheet(labels, rows)

    def finalize(self, item: Item) -> list[Result]:
        s = self.settings
        common = dict(source=item.source.display, essence=self.mix.label if self.mix is not None else "",
                      faces=len(item.faces), notes=item.notes, position=item.position)
        if item.failure:
            common["notes"] = []  # a face too small is the failure itself
            return [Result(status="failed", kind="input", reason=item.failure, **common)]
        results = []
        for planned in item.outputs:
            strength = self.sweep[planned.sweep] if planned.sweep is not None else None
            result = Result(status="written", kind=planned.kind, output=planned.path, face=planned.face,
                            strength=strength, **common)
            if planned.exists:
                result.status = "skipped"
            elif planned.kind == "latent":
                face = next(f for f in item.faces if f.index == planned.face)
                result.w_plus = face.w
                result.transform = face.face.transform.to_dict() if face.face is not None else None
                if planned.path is None:
                    result.status = "done"
                else:
                    self._write_latent(item, face, planned.path)
            else:
                with self.timings.section("paste"):
                    image = self._render(item, planned)
                if planned.path is None:
                    result.status, result.image = "done", image
                else:
                    with self.timings.section("write"):
                        save_image(image, planned.path, "png" if planned.kind == "grid" else s.fmt,
                                   quality=s.quality, metadata=self._metadata(item, planned))
            results.append(result)
        item.photo, item.faces = None, []
        return results

    def _write_latent(self, item: Item, face: FaceWork, path: Path) -> None:
        from ..latents import save_w_plus
        from ..version import __version__

        transform = face.face.transform.to_dict()
        save_w_plus(path, face.w, {
            "source_file": item.source.path.name, "source_sha256": item.sha256, "face_index": str(face.index),
            "quad": transform["quad"], "transform": transform,
            "aligner": self.models.aligner_name if self.settings.align else NO_ALIGN,
            "encoder": self.models.encoder_label, "encoder_sha256": self.models.encoder_sha256,
            "shape": list(face.w.shape), "essencekit_version": __version__,
        })

    # -- the run --------------------------------------------------------------------------------

    def run(self, items: list[Item], batch_size: int) -> Iterator[Result]:
        """``batch_size`` comes from the caller (:meth:`batch_size`, once per run): the automatic
        size depends on the device's free memory, so asking again could give another."""
        s = self.settings
        readers, writers = self.models.backend.io_workers() if s.workers is None else (s.workers, s.workers)
        # the backend's split of the cores between the models and these threads, and its
        # allocator settings, hold while the run computes (Backend.inference_session)
        session = contextlib.ExitStack()
        session.enter_context(self.models.backend.inference_session(readers + writers))
        prepared = ordered_map(self.prepare, items, readers, 2 * batch_size, "essencekit-read")
        # room for a whole batch behind the one being written, so the device never waits on the disk
        writer = OrderedPool(writers, 2 * batch_size + writers, "essencekit-write")
        batch: list[Item] = []
        waiting = 0

        def flush():
            nonlocal batch, waiting
            self.compute([it for it in batch if not it.done], batch_size)
            for ready in batch:
                if ready.done:
                    writer.submit_value(self.finalize(ready))
                else:
                    writer.submit(self.finalize, ready)
            batch, waiting = [], 0

        try:
            for item in prepared:
                if not item.failure and item.outputs is None:
                    self._plan(item)
                    # the faces found may give a name the check at the start could not foresee
                    item.failure = self._clash(item)
                    if not item.failure and self.settings.output is not None and not (s.overwrite or s.skip_existing):
                        clash = next((o.path for o in item.outputs if o.exists), None)
                        if clash is not None:
                            item.failure = Message(
                                braced(f"{clash} already exists") + "; use {overwrite} or {skip_existing}",
                                ("overwrite", "skip_existing"),
                            )
                # items that need no work wait behind the batch, so results keep the input order
                batch.append(item)
                if not item.done:
                    waiting += len(item.faces)
                if waiting >= batch_size or not waiting:
                    flush()
                yield from self._emit(writer.ready())
            if batch:
                flush()
            yield from self._emit(writer.drain())
        finally:
            with contextlib.suppress(Exception):
                prepared.close()
            writer.close()
            session.close()

    @staticmethod
    def _emit(groups) -> Iterator[Result]:
        for results in groups:
            if results:
                results[-1].last = True
            yield from results
