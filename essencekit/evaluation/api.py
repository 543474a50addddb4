"""``essencekit.evaluate``: how well essences transfer, measured as the TargetCLIP paper does.

For each essence (paired with its target image) and strength, over a set of sources:

* **identity**: ArcFace IR-SE50 cosine between the source and its edit (identity kept);
* **target similarity**: CLIP cosine between the edit and the target, for every judge CLIP
  (the variant the essence was extracted with, and an independent one);
* **consistency**: mean pairwise cosine of the CLIP-space changes across sources (the same
  edit for every source);
* **identity leak**: ArcFace cosine between the edit and the target's face (the target's
  identity copied instead of its essence).

The sources are the reconstructions ``G(w)`` (strength 0), so the encoder's inversion error
is not counted against the essence. Images are rendered by transfer's batched pipeline
(crops at the generator's size, 8-bit, exactly what ``essencekit transfer --crops`` writes)
and every measure sees them in the same [-1, 1] range.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import EssencekitError, OptionError
from .fid import Fid
from .metrics import Summary, clip_changes, mean_pairwise_cosine, paired_cosine, summarize
from .sources import limit_sources, resolve_sources

DEFAULT_JUDGES = ("ViT-B/32", "RN50")
DEFAULT_IDENTITY_MODEL = "arcface-ir-se50"
#: Without ``strengths``, each essence is measured at these multiples of its recommended strength.
DEFAULT_STRENGTH_MULTIPLES = (0.5, 1.0, 1.5)
# the published .npy essences carry no metadata; the paper made them with ViT-B/32
PUBLISHED_CLIP = "ViT-B/32"
THUMBNAIL = 160
EMBED_BATCH = 8


@dataclass
class Row:
    """The measures of one essence at one strength (strength 0: the unedited sources)."""

    essence: str
    strength: float
    identity: Summary
    identity_leak: Summary
    target_similarity: dict[str, Summary]
    consistency: dict[str, float | None]
    fid: Fid | None = None  # with ``fid=REAL_DIR`` only

    def to_json(self) -> dict:
        return {
            "essence": self.essence, "strength": self.strength, "identity": self.identity.to_json(),
            "identity_leak": self.identity_leak.to_json(),
            "target_similarity": {name: s.to_json() for name, s in self.target_similarity.items()},
            "consistency": self.consistency, "fid": None if self.fid is None else self.fid.to_json(),
        }


@dataclass
class EssenceInfo:
    label: str
    source: str
    target: str
    target_face: str  # "aligned" or "centre crop"
    extraction_clip: str
    strengths: list[float]

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Evaluation:
    """What :func:`evaluate` measured: ``rows`` (essence x strength), the ``essences``, the
    ``judges`` (CLIP variants), the sources measured and the ones that failed, and
    ``grid``: thumbnails of the first sources (``{"source": ..., "images": {(essence,
    strength): PIL image}}``, strength 0 = the source) for the report; ``fid``, with
    ``fid=REAL_DIR`` only: ``{"real": folder name, "real_images": N, "inception": label,
    "inception_sha256": ..., "warning": text or None}`` (each row then has its FID)."""

    rows: list[Row]
    essences: list[EssenceInfo]
    judges: list[str]
    sources: list[str]
    failures: list[dict]
    identity_model: str
    generator: str
    grid: list[dict] = field(default_factory=list)
    fid: dict | None = None

    def to_json(self) -> dict:
        from ..version import __version__

        return {
            "essencekit_version": __version__, "generator": self.generator, "identity_model": self.identity_model,
            "judges": self.judges, "essences": [e.to_json() for e in self.essences],
            "sources": {"count": len(self.sources), "measured": self.sources, "failed": self.failures},
            "fid": self.fid, "rows": [row.to_json() for row in self.rows],
        }


def default_strengths(recommended: float) -> list[float]:
    values = [round(m * recommended, 6) for m in DEFAULT_STRENGTH_MULTIPLES]
    return [v for i, v in enumerate(values) if v != 0 and v not in values[:i]] or [1.0]


def to_signed(image) -> Tensor:
    """A PIL RGB image -> ``[1, 3, H, W]`` float32 in [-1, 1] (the generator's range)."""
    array = torch.from_numpy(np.asarray(image, dtype=np.float32).copy())
    return array.permute(2, 0, 1).unsqueeze(0) / 127.5 - 1.0


def _thumbnail(image):
    from PIL import Image

    return image.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.LANCZOS)


class _Embedder:
    """Embeds rendered images with the identity model and every judge, a few at a time."""

    def __init__(self, identity, judges: dict[str, object], device: torch.device, inception=None):
        self.identity, self.judges, self.device = identity, judges, device
        self.pending: list[tuple[object, Tensor]] = []
        self.identity_out: dict = {}
        self.clip_out: dict = {}
        # FID's Inception features of the same images (``fid=REAL_DIR`` only), keyed alike
        self.inception = inception
        self.fid_out: dict = inception.out if inception is not None else {}

    def add(self, key, image) -> None:
        if self.inception is not None:
            self.inception.add(key, image)
        self.pending.append((key, to_signed(image)))
        if len(self.pending) >= EMBED_BATCH:
            self.flush()

    @torch.no_grad()
    def flush(self) -> None:
        if self.inception is not None:
            self.inception.flush()
        if not self.pending:
            return
        keys = [key for key, _ in self.pending]
        images = torch.cat([pixels for _, pixels in self.pending]).to(self.device)
        self.pending = []
        for key, row in zip(keys, self.identity.embed(images).float().cpu()):
            self.identity_out[key] = row
        for name, judge in self.judges.items():
            for key, row in zip(keys, judge.encode_generated(images).float().cpu()):
                self.clip_out[(name, *key)] = row


class Evaluator:
    """The models of an evaluation, loaded once: the transfer models (``encoder``,
    ``generator``, ``device``, ``aligner``: see :class:`essencekit.transfers.Transferrer`),
    the ``identity_model`` (path or artifact name, default ``arcface-ir-se50``, or a loaded
    model) and the CLIP ``judges`` (registered names; ``clip_weights`` maps a name to its
    weights file when it is not in the cache). Every essence is judged through the same
    ``clip_input`` mode (``raw``, the published essences' domain, or ``standard``), so their
    figures compare. ``group``: a ``torchrun`` job's
    :class:`~essencekit.distributed.ProcessGroup`: each process renders and embeds its share of
    the sources, and every process gets the job's evaluation. ``fid_weights``: the FID
    Inception's weights (path or artifact name, default ``inception-v3-fid``), loaded only when
    an evaluation asks for FID."""

    def __init__(self, *, encoder=None, generator=None, device=None, aligner=None, identity_model=None,
                 judges: Sequence[str] = DEFAULT_JUDGES, clip_weights: dict[str, str] | None = None,
                 clip_input: str = "raw", notify: Callable[[str], None] | None = None, group=None,
                 fid_weights=None):
        from ..transfers import Transferrer  # the public pipeline: see the package docstring

        self.group = group
        self.models = Transferrer(encoder=encoder, generator=generator, device=device, aligner=aligner,
                                  notify=notify, group=group)
        self.notify = notify or (lambda message: None)
        self.judge_names = list(dict.fromkeys(judges))
        if not self.judge_names:
            raise OptionError("give at least one CLIP judge (judges)", parameter="judges")
        self.clip_weights = dict(clip_weights or {})
        unknown = sorted(set(self.clip_weights) - set(self.judge_names))
        if unknown:
            raise OptionError(f"clip_weights names {', '.join(unknown)}, which is not among the judges",
                              parameter="clip_weights")
        self._identity_spec = identity_model
        self._identity = None
        self.identity_label = ""
        self.clip_input = clip_input
        self._judges: dict[str, object] = {}
        self._fid_weights = fid_weights
        self._inception = None  # (model, label, sha256)

    @property
    def backend(self):
        return self.models.backend

    @property
    def identity(self):
        if self._identity is None:
            spec = self._identity_spec
            if isinstance(spec, torch.nn.Module):
                self._identity, self.identity_label = self.backend.prepare(spec), "in-memory identity model"
            else:
                from ..api import load_identity_model

                self._identity = load_identity_model(spec, self.backend)
                self.identity_label = str(spec or DEFAULT_IDENTITY_MODEL)
        return self._identity

    @property
    def inception(self):
        """``(model, label, sha256)`` of the FID Inception, loaded on first use."""
        if self._inception is None:
            from .fid import load_inception

            self._inception = load_inception(self._fid_weights, self.backend.device)
        return self._inception

    def judge(self, name: str):
        if name not in self._judges:
            from ..clip import load_clip

            self._judges[name] = load_clip(name, self.backend, input_mode=self.clip_input,
                                          generator_size=self.models.generator.size,
                                          weights=self.clip_weights.get(name))
        return self._judges[name]

    # -- targets --------------------------------------------------------------------------------

    def target_face(self, image, align: bool) -> tuple[Tensor, str]:
        """The target's face as the identity model takes it: the FFHQ crop when a face is found,
        else the centre square (a cartoon, or ``align=False``)."""
        from ..clip import raw_target_pixels

        if align:
            from ..faces import align_faces

            faces = align_faces(image, aligner=self.models.aligner, output_size=256)
            if faces:
                return faces[0].crop_tensor(256), "aligned"
            self.notify("no face found in the target: its identity leak is measured on the centre square")
        return raw_target_pixels(image, 256), "centre crop"

    # -- the run --------------------------------------------------------------------------------

    def _agreed(self):
        """A step every rank of a torchrun job takes: a refusal stops them all and is reported
        once (:meth:`~essencekit.distributed.ProcessGroup.together`)."""
        return self.group.together() if self.group is not None else contextlib.nullcontext()

    def evaluate(self, essences, targets, sources, strengths=None, *, align: bool = True,
                 align_target: bool = True, batch_size: int | None = None, cache: bool = True,
                 grid_sources: int = 4, max_sources: int | None = None, fid=None,
                 progress: Callable[[int], None] | None = None,
                 real_progress: Callable[[int, int], None] | None = None) -> Evaluation:
        """See :func:`evaluate`."""
        with contextlib.ExitStack() as stack:
            return self._evaluate(stack, essences, targets, sources, strengths, align=align, align_target=align_target,
                                  batch_size=batch_size, cache=cache, grid_sources=grid_sources,
                                  max_sources=max_sources, fid=fid, progress=progress, real_progress=real_progress)

    def _real_features(self, files: list, model, inception_sha256: str, cache: bool,
                       progress: Callable[[int, int], None] | None):
        """The real images' FID features (see :func:`.fid.real_features`). Under ``torchrun``
        each process measures every ``world_size``-th image and every process gets them all, in
        the files' order; ``progress(n, total)`` is called (on rank 0 only) as ``n`` more of the
        job's ``total`` images are done."""
        from ..feature_cache import FeatureCache
        from .fid import FEATURE_DIM, RealFeatures, real_features

        launch = self.group.launch if self.group is not None else None
        counted = _JobCount(self.group, None if progress is None else lambda n: progress(n, len(files)),
                            "evaluate/real-images")
        share = launch.shard(files) if launch is not None else files
        with self._agreed():  # an unreadable real image on one rank stops every rank, reported once
            own = real_features(share, model, self.backend.device, progress=counted.add,
                                cache=FeatureCache(inception_sha256, FEATURE_DIM) if cache else None)
        if launch is None or not launch.distributed:
            return own
        shares = self.group.gather((own.features.astype(np.float32), own.cached, own.unwritable))
        features = np.empty((len(files), FEATURE_DIM))
        for rank, (part, _, _) in enumerate(shares):
            features[rank::launch.world_size] = part  # the inverse of Launch.shard
        return RealFeatures(features, sum(s[1] for s in shares), any(s[2] for s in shares))

    def _evaluate(self, stack, essences, targets, sources, strengths, *, align, align_target, batch_size, cache,
                  grid_sources, max_sources, fid, progress, real_progress) -> Evaluation:
        from ..essence_mix import EssenceMix, parse_strengths
        from ..images import read_target

        with self._agreed():
            essences = [essences] if isinstance(essences, (str, os.PathLike)) else list(essences)
            targets = [targets] if isinstance(targets, (str, os.PathLike)) else list(targets)
            if not essences:
                raise OptionError("give at least one essence (essences)", parameter="essences")
            if len(essences) != len(targets):
                raise OptionError(
                    f"each essence needs its target image: got {len(essences)} essence(s) and {len(targets)} target(s) "
                    "(give essences and targets in pairs)", parameter="targets",
                )
            sweep = parse_strengths(strengths, parameter="strengths")
            mix = EssenceMix(essences)  # loads and checks every essence before any work
            generator = self.models.generator
            mix.check(generator.n_latent, generator.style_dim, self.models.generator_label)
            terms = mix.terms
            labels = _unique_labels([t.label for t in terms])
            target_images = [read_target(t) for t in targets]
            source_items = resolve_sources(sources)
            if max_sources is not None:
                if max_sources < 1:
                    raise OptionError(f"max_sources must be at least 1, got {max_sources}", parameter="max_sources")
                scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="essencekit-eval-"))
                source_items = limit_sources(source_items, max_sources, generator, Path(scratch))
            real_files = None
            if fid is not None:
                from .fid import real_images

                real_files = real_images(fid)
                inception = self.inception  # missing weights: the pull-weights hint, before any work

        judges = {name: self.judge(name) for name in self.judge_names}
        fid_info = real = collector = None
        if real_files is not None:
            from .fid import InceptionFeatures, folder_label

            model, inception_label, inception_sha = inception
            measured_real = self._real_features(real_files, model, inception_sha, cache, real_progress)
            real = measured_real.features
            if measured_real.unwritable:
                self.notify("FID: the feature cache cannot be written (a full disk or a read-only cache); the next "
                            "evaluation will measure the real images again")
            collector = InceptionFeatures(model, self.backend.device)
            fid_info = {"real": folder_label(fid), "real_images": len(real_files), "real_cached": measured_real.cached,
                        "inception": inception_label, "inception_sha256": inception_sha, "warning": None}
        embedder = _Embedder(self.identity, judges, self.backend.device, inception=collector)
        infos, target_embeddings = [], []
        for term, label, target in zip(terms, labels, target_images):
            meta = term.essence.metadata
            clip_name = meta.get("clip_model", PUBLISHED_CLIP)
            face, how = self.target_face(target.image, align_target)
            with torch.no_grad():
                identity = self.identity.embed(face.to(self.backend.device)).float().cpu()
                clip = {name: judge.encode_target(target.image).float().cpu() for name, judge in judges.items()}
            target_embeddings.append((identity, clip))
            own = [s for s in (sweep or default_strengths(term.recommended_strength)) if s != 0]
            infos.append(EssenceInfo(label, term.shared_source, target.file or target.name, how, clip_name, own))

        measured: list = []  # (source, face) keys in order
        failures: list[dict] = []
        grid: dict = {}
        positions: dict = {}  # key -> the source's place in the input list, to merge a job's shares in order
        counted = _JobCount(self.group, progress, "evaluate/images")
        for index, info in enumerate(infos):
            first = index == 0
            run_strengths = ([0.0] if first else []) + info.strengths
            run = self.models.transfer(
                source_items, terms[index], run_strengths, crops=True, output=None, align=align,
                batch_size=batch_size, cache=cache,
            )
            for result in run:
                if result.status == "failed":
                    if first:
                        failures.append({"source": result.source, "reason": result.reason})
                        positions[result.source] = result.position
                    continue
                key = (result.source, result.face)
                positions[key] = result.position
                strength = float(result.strength)
                if first and strength == 0:
                    measured.append(key)
                    embedder.add(("recon", *key), result.image)
                else:
                    embedder.add((index, strength, *key), result.image)
                if key in grid or len(grid) < grid_sources:
                    grid.setdefault(key, {})[(None if strength == 0 else info.label, strength)] = \
                        _thumbnail(result.image)
                counted.add(1)
            embedder.flush()
        if self.group is not None and self.group.launch.distributed:
            measured, failures, grid = _merge_shares(self.group.gather(
                (measured, failures, grid, positions, embedder.identity_out, embedder.clip_out, embedder.fid_out)),
                embedder, grid_sources)
        with self._agreed():
            if not measured:
                reasons = "; ".join(f"{f['source']}: {f['reason']}" for f in failures[:3])
                raise EssencekitError(f"no source could be rendered{': ' + reasons if reasons else ''}")
        rows = self._rows(infos, target_embeddings, measured, embedder)
        if fid_info is not None:
            from .fid import Fid, few_images_warning, frechet_distance

            for row in rows:
                index = next(i for i, info in enumerate(infos) if info.label == row.essence)
                keys = [("recon", *k) if row.strength == 0 else (index, row.strength, *k) for k in measured]
                features = torch.stack([embedder.fid_out[key] for key in keys]).numpy()
                row.fid = Fid(frechet_distance(features, real), len(keys), len(real))
            fid_info["warning"] = few_images_warning(len(measured), len(real))
            if fid_info["warning"] is not None:
                self.notify(fid_info["warning"])
        return Evaluation(
            rows=rows, essences=infos, judges=self.judge_names,
            sources=[f"{source}#{face}" if face else source for source, face in measured], failures=failures,
            identity_model=self.identity_label or "identity model", generator=self.models.generator_label,
            grid=[{"source": source, "images": images} for (source, _), images in grid.items()], fid=fid_info,
        )

    def _rows(self, infos, target_embeddings, measured, embedder: _Embedder) -> list[Row]:
        ids, clips = embedder.identity_out, embedder.clip_out
        recon_id = torch.stack([ids[("recon", *k)] for k in measured])
        rows = []
        for index, (info, (target_id, target_clip)) in enumerate(zip(infos, target_embeddings)):
            for strength in [0.0, *info.strengths]:
                if strength == 0:
                    edit_id, edit_clip = recon_id, {
                        name: torch.stack([clips[(name, "recon", *k)] for k in measured]) for name in self.judge_names
                    }
                else:
                    edit_id = torch.stack([ids[(index, strength, *k)] for k in measured])
                    edit_clip = {name: torch.stack([clips[(name, index, strength, *k)] for k in measured])
                                 for name in self.judge_names}
                consistency = {}
                for name in self.judge_names:
                    source_clip = torch.stack([clips[(name, "recon", *k)] for k in measured])
                    consistency[name] = None if strength == 0 else \
                        mean_pairwise_cosine(clip_changes(edit_clip[name], source_clip))
                rows.append(Row(
                    essence=info.label, strength=strength,
                    identity=summarize(paired_cosine(edit_id, recon_id)),
                    identity_leak=summarize(paired_cosine(edit_id, target_id)),
                    target_similarity={name: summarize(paired_cosine(edit_clip[name], target_clip[name]))
                                       for name in self.judge_names},
                    consistency=consistency,
                ))
        return rows


class _JobCount:
    """Images counted for ``progress``: the whole job's on rank 0 of a torchrun job (through
    the group's counter ``name``), this process's otherwise."""

    def __init__(self, group, progress: Callable[[int], None] | None, name: str):
        self.group, self.progress, self.name, self.shown = group, progress, name, 0
        self.distributed = group is not None and group.launch.distributed

    def add(self, n: int) -> None:
        if not self.distributed:
            if self.progress is not None:
                self.progress(n)
            return
        total = self.group.add(self.name, n)
        if self.progress is not None and self.group.is_main:
            self.progress(total - self.shown)
            self.shown = total


def _merge_shares(shares, embedder: _Embedder, grid_sources: int):
    """Every process's share of an evaluation as one, in input order: the measured keys, the
    failures, the report's grid (its first ``grid_sources`` sources); the embeddings go into
    ``embedder``."""
    measured, failures, grid, positions = [], [], {}, {}
    for keys, failed, thumbnails, where, identity_out, clip_out, fid_out in shares:
        measured += keys
        failures += failed
        grid.update(thumbnails)
        positions.update(where)
        embedder.identity_out.update(identity_out)
        embedder.clip_out.update(clip_out)
        embedder.fid_out.update(fid_out)
    measured.sort(key=lambda key: (positions[key], key[1] or 0))
    failures.sort(key=lambda failure: positions[failure["source"]])
    kept = sorted(grid, key=lambda key: (positions[key], key[1] or 0))[:grid_sources]
    return measured, failures, {key: grid[key] for key in kept}


def _unique_labels(labels: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    unique = []
    for label in labels:
        seen[label] = seen.get(label, 0) + 1
        unique.append(label if seen[label] == 1 else f"{label}-{seen[label]}")
    return unique


def evaluate(essences, targets, sources, strengths=None, *, identity_model=None, judges: Sequence[str] = DEFAULT_JUDGES,
             clip_weights: dict[str, str] | None = None, clip_input: str = "raw", encoder=None, generator=None, device=None, aligner=None,
             notify: Callable[[str], None] | None = None, group=None, fid_weights=None, **options) -> Evaluation:
    """Measure essences as the TargetCLIP paper does (see the module docstring).

    ``essences``: specs as transfer takes them (files or published names), paired by position
    with ``targets`` (image paths or PIL images). ``sources``: photo folders or files, W+
    latent files, or ``"celebs"`` (the 68 published celebrity latents). ``strengths``: a number,
    list or ``"0.5,1,1.5"`` for every essence; ``None``: 0.5, 1 and 1.5 times each essence's
    recommended strength. Strength 0 (the sources themselves) is always measured too.
    ``judges``: the CLIP variants for target similarity and consistency, all fed in the
    ``clip_input`` mode. Options:
    ``align`` (False: photos are aligned crops), ``align_target``, ``batch_size``, ``cache``
    (the W+ cache and the FID feature cache), ``grid_sources`` (thumbnails kept for the report),
    ``max_sources`` (measure only the first N faces), ``fid`` (a folder of real face images:
    each row also gets the Fréchet Inception Distance between its edits and them, see
    :mod:`.fid`), ``progress`` (called with 1 per rendered image), ``real_progress`` (with
    ``fid``: called with ``(n, total)`` as ``n`` more of the ``total`` real images are
    measured, or read from the cache). Models, ``fid_weights`` (the FID Inception) and
    ``group`` (a ``torchrun`` job's process group): see :class:`Evaluator`.
    """
    evaluator = Evaluator(encoder=encoder, generator=generator, device=device, aligner=aligner,
                          identity_model=identity_model, judges=judges, clip_weights=clip_weights,
                          clip_input=clip_input, notify=notify, group=group, fid_weights=fid_weights)
    return evaluator.evaluate(essences, targets, sources, strengths, **options)
