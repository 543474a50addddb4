"""``essencekit.transfer`` and ``essencekit.invert``: the Python API of the two commands.

:class:`Transferrer` holds the models (loaded on first use, once for any number of runs);
:func:`transfer` and :func:`invert` are one-shot shortcuts. Both return a :class:`Run`, an
iterable of :class:`~essencekit.transfers.pipeline.Result` (one per output file, skipped output
or failed input); options are checked and existing outputs refused when the run is created,
the work happens while it is iterated. Under ``torchrun``, a :class:`Transferrer` given the
job's :class:`~essencekit.distributed.ProcessGroup` (``group``) works on its rank's share of the
sources and :meth:`Run.results` gives the job's results on rank 0 (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from ..distributed import Launch
from ..errors import EssencekitError, OptionError, braced
from ..images import DEFAULT_MAX_PIXELS
from .pipeline import Pipeline, Result, Settings
from .sharding import merge, portable, shard_positions
from .writing import FORMATS

DEFAULT_OUTPUT = Path("essencekit-out")
DEFAULT_LATENTS_OUTPUT = Path("essencekit-latents")
FACES = ("largest", "all")
PASTE = ("difference", "edited")

TransferResult = InversionResult = Result
# how often a process that has finished its share looks whether the others have
POLL_SECONDS = 0.5
# every rank makes the job's runs in the same order, so the n-th run has one name job-wide
_run_numbers = itertools.count()


class Run:
    """The results of one run, produced while it is iterated (once); ``total`` is the number
    of sources found, ``batch_size`` the faces per model pass.

    In a job of several processes (a ``group`` under ``torchrun``) each takes its share of the
    sources (:mod:`.sharding`): iterating gives this process's results, :meth:`results` the
    job's. ``progress``, when set, is called on rank 0 (in one process: always) with the job's
    count of finished sources and of their faces, as sources finish."""

    def __init__(self, pipeline: Pipeline, items: list, group=None):
        self.pipeline = pipeline
        self.group = group
        self.launch = group.launch if group is not None else Launch()
        self.total = len(items)
        named = [item.outputs is not None or bool(item.failure) for item in items]
        self.items = [items[p] for p in shard_positions([item.base for item in items], named, self.launch)]
        self.batch_size = pipeline.batch_size()
        self.progress: Callable[[int, int], None] | None = None
        self._name = f"run{next(_run_numbers)}"
        self._done = (0, 0)
        self._started = False

    @property
    def is_main(self) -> bool:
        return self.launch.is_main

    def __iter__(self) -> Iterator[Result]:
        if self._started:
            raise RuntimeError("a transfer run can be iterated only once; start another run")
        self._started = True
        return self._counted(self.pipeline.run(self.items, self.batch_size))

    def __len__(self) -> int:
        return self.total

    def results(self) -> Iterator[Result]:
        """The job's results, in input order. In one process, as they are made (iterating the
        run); in a job of several, on rank 0 once every process has finished its share, and
        none on the others. Results that cross from another process leave the image and the
        W+ tensor behind: iterate the run for those."""
        if not self.launch.distributed:
            yield from self
            return
        parts = self.group.collect([portable(result) for result in self])
        if parts is not None:
            yield from merge(parts)

    # -- the job's progress -----------------------------------------------------------------------

    def _counted(self, results: Iterator[Result]) -> Iterator[Result]:
        for result in results:
            yield result
            if result.last:
                self._count(1, result.faces if result.status != "failed" else 0)
        if self.launch.distributed:
            self._wait_for_the_others()

    def _count(self, sources: int, faces: int) -> None:
        if self.launch.distributed:
            self._done = (self.group.add(f"{self._name}/sources", sources), self.group.add(f"{self._name}/faces", faces))
        else:
            self._done = (self._done[0] + sources, self._done[1] + faces)
        if self.progress is not None and self.is_main:
            self.progress(*self._done)

    def _wait_for_the_others(self) -> None:
        # what follows (merging the results) is a collective, which gives up after its timeout
        # (30 minutes for gloo, 10 for nccl): a rank that finished long before the slowest one
        # waits here instead, on the store, and rank 0 keeps showing the job's progress
        self.group.add(f"{self._name}/finished", 1)
        while self.group.add(f"{self._name}/finished") < self.launch.world_size:
            self._count(0, 0)
            time.sleep(POLL_SECONDS)
        self._count(0, 0)


def _together(method):
    """Make a run as one step of the whole job (:meth:`ProcessGroup.together`): a refusal
    (an option, an existing output) stops every rank at once and is reported once, and no
    rank starts writing before every rank has checked what exists."""

    @functools.wraps(method)
    def make(self, *args, **kwargs):
        with self.group.together() if self.group is not None else contextlib.nullcontext():
            return method(self, *args, **kwargs)

    return make


class Transferrer:
    """The models of transfer and invert runs.

    ``encoder``: an e4e checkpoint (path or artifact name, default ``e4e-ffhq``) or a loaded
    :class:`~essencekit.models.e4e.E4E`. ``generator``: the generator that synthesises the
    edits (path, artifact name or loaded model); by default the encoder's embedded decoder,
    the generator e4e was trained to invert into. ``device``: a backend name, ``torch.device``
    or :class:`~essencekit.backends.Backend`. ``aligner``: a face aligner name (default: dlib
    when installed). ``notify`` receives one-line notices. ``group``: the job's
    :class:`~essencekit.distributed.ProcessGroup` under ``torchrun`` (its backend is the device
    when ``device`` is not given); runs then share their sources out among its processes.
    """

    def __init__(self, *, encoder=None, generator=None, device=None, aligner=None,
                 notify: Callable[[str], None] | None = None, group=None):
        from ..backends import resolve_backend

        self.group = group
        self.backend = resolve_backend(group.backend if device is None and group is not None else device)
        self.notify = notify or (lambda message: None)
        self._encoder_spec = encoder
        self._generator_spec = generator
        self._aligner_spec = aligner
        self._encoder = None
        self._generator = None
        self._aligner = None
        self.encoder_label = ""
        self.encoder_sha256: str | None = None
        self.generator_label = ""

    # -- models ---------------------------------------------------------------------------------

    @property
    def encoder(self):
        """The e4e model, loaded (and its file fingerprinted for the W+ cache) on first use."""
        if self._encoder is None:
            spec = self._encoder_spec
            if isinstance(spec, torch.nn.Module):
                model, self.encoder_label, self.encoder_sha256 = spec, "in-memory encoder", None
            else:
                from ..models.e4e import load_encoder_checkpoint
                from ..weights import weights_identity

                path, self.encoder_label, self.encoder_sha256 = weights_identity(spec, "e4e-ffhq")
                model = load_encoder_checkpoint(path)
            from ..models.e4e_inference import inference_form

            # runs only invert: the BatchNorm-folded form computes the same codes with less work
            self._encoder = inference_form(self.backend.prepare(model))
            self._check_pair()
        return self._encoder

    @property
    def generator(self):
        if self._generator is None:
            spec = self._generator_spec
            if spec is None:
                self._generator = self.encoder.generator
                self.generator_label = f"{self.encoder_label} (embedded decoder)"
            elif isinstance(spec, torch.nn.Module):
                self._generator = self.backend.prepare(spec)
                self.generator_label = getattr(spec, "name", "") or "in-memory generator"
            else:
                from ..models.stylegan2 import load_generator_checkpoint
                from ..weights import resolve_weights, weights_label

                path = resolve_weights(spec, "stylegan2-ffhq")
                self._generator = self.backend.prepare(load_generator_checkpoint(path))
                self.generator_label = weights_label(spec, "stylegan2-ffhq")
            self._check_pair()
        return self._generator

    def _check_pair(self) -> None:
        if self._encoder is None or self._generator is None:
            return
        e4e, generator = self._encoder, self._generator
        if (e4e.n_latent, e4e.style_dim) != (generator.n_latent, generator.style_dim):
            raise EssencekitError(
                f"the encoder ({self.encoder_label}) makes [{e4e.n_latent}, {e4e.style_dim}] W+ codes but the "
                f"generator ({self.generator_label}) takes [{generator.n_latent}, {generator.style_dim}]: use the "
                "generator the encoder was trained with (the default: its embedded decoder)"
            )

    @property
    def aligner(self):
        if self._aligner is None:
            from ..faces import get_aligner

            self._aligner = get_aligner(self._aligner_spec)
        return self._aligner

    @property
    def aligner_name(self) -> str:
        return self.aligner.name

    # -- runs -----------------------------------------------------------------------------------

    @_together
    def transfer(
        self, inputs, essence, strength=None, *, output: str | os.PathLike | None = None, layers: str | None = None,
        faces: str = "largest", align: bool = True, crops: bool = False, paste: str = "difference",
        recursive: bool = False, format: str = "png", quality: int | None = None, overwrite: bool = False,
        skip_existing: bool = False, grid: bool = False, batch_size: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS, cache: bool = True, workers: int | None = None,
    ) -> Run:
        """Apply ``essence`` to the faces of ``inputs``; see :func:`transfer`."""
        from ..essence_mix import EssenceMix, parse_strengths
        from .layers import parse_layers

        _check_choice("faces", faces, FACES)
        _check_choice("paste", paste, PASTE)
        _check_choice("format", format, tuple(FORMATS))
        if quality is not None and not 1 <= int(quality) <= 100:
            raise OptionError(f"quality must be from 1 to 100, got {quality}", parameter="quality")
        strengths = parse_strengths(strength, parameter="strength")
        mix = EssenceMix(essence)
        mix.check_magnitude(strengths)
        generator = self.generator
        mix.check(generator.n_latent, generator.style_dim, self.generator_label)
        rows = None if layers is None else parse_layers(layers, generator.n_latent)
        settings = self._settings(
            "transfer", output, faces=faces, align=align, crops=crops, paste=paste, fmt=format, quality=quality,
            overwrite=overwrite, skip_existing=skip_existing, grid=grid, batch_size=batch_size,
            max_pixels=max_pixels, cache=cache, workers=workers, strengths=strengths, rows=rows,
        )
        return self._run(settings, inputs, recursive, mix)

    @_together
    def invert(
        self, inputs, *, output: str | os.PathLike | None = None, faces: str = "largest", align: bool = True,
        recursive: bool = False, overwrite: bool = False, skip_existing: bool = False, batch_size: int | None = None,
        max_pixels: int | None = DEFAULT_MAX_PIXELS, cache: bool = True, workers: int | None = None,
    ) -> Run:
        """Invert the faces of ``inputs`` to W+; see :func:`invert`."""
        _check_choice("faces", faces, FACES)
        settings = self._settings(
            "invert", output, faces=faces, align=align, overwrite=overwrite, skip_existing=skip_existing,
            batch_size=batch_size, max_pixels=max_pixels, cache=cache, workers=workers,
        )
        return self._run(settings, inputs, recursive, None)

    @staticmethod
    def _settings(mode: str, output, **options) -> Settings:
        if options.get("overwrite") and options.get("skip_existing"):
            raise OptionError(
                "{overwrite} and {skip_existing} exclude each other", parameter="skip_existing",
                mentions=("overwrite", "skip_existing"),
            )
        batch_size = options.get("batch_size")
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise OptionError(f"batch_size must be at least 1, got {batch_size}", parameter="batch_size")
        max_pixels = options.get("max_pixels")
        if max_pixels is not None and int(max_pixels) < 0:  # only 0 means no limit: -1 is more likely a slip
            raise OptionError(f"max_pixels must be 0 (no limit) or more, got {max_pixels}", parameter="max_pixels")
        if max_pixels is not None and int(max_pixels) == 0:
            options["max_pixels"] = None
        if output is not None:
            _check_output_folder(Path(output))
        return Settings(mode=mode, output=Path(output) if output is not None else None, **options)

    def _run(self, settings: Settings, inputs, recursive: bool, mix) -> Run:
        from ..images import describe_unsupported
        from ..inputs import discover

        sources = discover(inputs, recursive=recursive, exclude=settings.output)
        skipped = describe_unsupported(sources.skipped) if sources.skipped else ""
        if not sources:
            raise EssencekitError(
                "no photos or W+ latent files found in the given sources"
                + (f": {braced(skipped)}" if skipped else "")
                + (f" (use {{recursive}} to look into {sources.subfolders} sub-folder(s))" if sources.subfolders else ""),
                mentions=("recursive",),
            )
        if skipped:
            self.notify(skipped)
        pipeline = Pipeline(self, settings, mix, notify=self.notify)
        items = pipeline.start(sources)
        return Run(pipeline, items, self.group)


def _check_output_folder(output: Path) -> None:
    """Refuse an output "folder" that is a file, or lies under one, before any work (making it
    would fail later with a bare "File exists")."""
    probe = output
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        problem = "is a file" if probe == output else f"cannot be a folder: {probe} is a file"
        raise OptionError(f"output {output} {problem}, but the output must be a folder: name a new or existing folder", parameter="output")


def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise OptionError(f"{name} must be one of {', '.join(choices)}, not {value!r}", parameter=name)


def transfer(inputs, essence, strength=None, *, encoder=None, generator=None, device=None, aligner=None,
             notify: Callable[[str], None] | None = None, group=None, **options) -> Run:
    """Apply an essence to every face in ``inputs`` and give back whole photos.

    ``inputs``: photo files, folders (``recursive=True`` for sub-folders), glob patterns, W+
    latent files (``essencekit invert``'s, ``.npy``/``.pt`` arrays); one path or a list.
    ``essence``: ``"NAME_OR_PATH[@WEIGHT]"``, an :class:`~essencekit.essence.Essence`, an
    ``(essence, weight)`` pair, or a list of them (they add up). ``strength``: a number, a
    list (a sweep) or ``"0.5,1,1.5"``; ``None`` applies each essence at its recommended
    strength.

    Options: ``output`` (a folder; ``None`` writes nothing and each result carries its PIL
    ``image``), ``layers`` (``"coarse"``, ``"medium"``, ``"fine"``, ``"0-7"``, ``"4,5,6"``),
    ``faces`` (``"largest"`` or ``"all"``), ``align`` (False: the inputs are aligned crops),
    ``crops`` (write the edited crops instead of whole photos), ``paste``
    (``"difference"``, the default, or ``"edited"``), ``format`` (``png``, ``jpg``, ``webp``),
    ``quality``, ``overwrite``, ``skip_existing``, ``grid``, ``batch_size``, ``max_pixels``,
    ``cache`` (the W+ cache), ``workers`` (background threads; default: none on the CPU).
    Models, and ``group`` (a ``torchrun`` job's process group): see :class:`Transferrer`.

    Returns a :class:`Run`: iterate it to do the work; each item is a
    :class:`~essencekit.transfers.pipeline.Result`. Bad inputs are failed results, not
    exceptions; options that cannot work (a strength whose edit is far larger than any essence
    means, ``output`` naming a file, ...) raise ``ValueError``, missing weights, existing outputs
    and outputs that would replace an input :class:`~essencekit.errors.EssencekitError`, before
    any work.
    """
    models = Transferrer(encoder=encoder, generator=generator, device=device, aligner=aligner, notify=notify,
                         group=group)
    return models.transfer(inputs, essence, strength, **options)


def invert(inputs, *, encoder=None, device=None, aligner=None, notify: Callable[[str], None] | None = None,
           group=None, **options) -> Run:
    """Invert every face in ``inputs`` into W+ with e4e.

    Options as :func:`transfer` (``output``, ``faces``, ``align``, ``recursive``,
    ``overwrite``, ``skip_existing``, ``batch_size``, ``max_pixels``, ``cache``, ``workers``).
    With an ``output`` folder, one safetensors file per face (tensor ``w_plus``
    [n_latent, style_dim] and metadata: source file and sha256, face index, crop quad); each
    result carries ``w_plus`` and the crop ``transform`` either way.
    """
    models = Transferrer(encoder=encoder, device=device, aligner=aligner, notify=notify, group=group)
    return models.invert(inputs, **options)
