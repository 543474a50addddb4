"""``essencekit.extract``: the essence of a target image, by optimisation (TargetCLIP)."""

from __future__ import annotations

import datetime
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..chunked import plan_chunks
from ..errors import EssencekitError, OptionError
from ..essence import FORMAT_VERSION, Essence
from ..images import Target
from ..weights import weights_identity
from .coefficients import WEIGHT_DECAY
from .optimise import OptimiseResult, OptimiseSettings, StepReport, evaluate_directions, optimise
from .schedule import RAMPDOWN, RAMPUP
from .settings import FAST_SIZE, ExtractSettings
from .sources import SourceSet, random_directions, resolve_sources
from .targets import TargetSpec, check_text, resolve_target, target_embedding

log = logging.getLogger("essencekit.extract")


class ExtractionInterrupted(KeyboardInterrupt):
    """Ctrl-C during an extraction. ``essence`` is the best essence found so far (``None``
    when no step had finished); ``steps_done`` how many steps ran."""

    def __init__(self, essence: Essence | None, steps_done: int, steps: int):
        super().__init__(f"interrupted after {steps_done} of {steps} steps")
        self.essence = essence
        self.steps_done = steps_done
        self.steps = steps


def _warn(message: str) -> None:
    log.warning(message)


class Extractor:
    """The models of an extraction, loaded once for any number of targets.

    ``generator``: a checkpoint path, an artifact name (default ``stylegan2-ffhq``) or a
    loaded :class:`~essencekit.models.stylegan2.Generator`. ``clip``: a CLIP variant name (default: the
    highest-priority registered one, ViT-B/32 among the built-ins) or a loaded
    :class:`~essencekit.clip.ClipEncoder`; ``clip_weights`` a weights file for the
    variant. ``encoder``: the e4e checkpoint (path or artifact, default ``e4e-ffhq``), loaded
    only when a photo must be inverted. ``inverter``: replaces the face alignment + e4e
    inversion (a function PIL image -> W+ [n_latent, style_dim]). ``notify`` receives the
    plain-language notices of the run (default: the ``essencekit.extract`` logger). ``text``:
    also load CLIP's text tower (from the same weights file), for text targets.
    """

    def __init__(
        self,
        *,
        generator=None,
        clip=None,
        clip_weights: str | os.PathLike | None = None,
        clip_input: str = "raw",
        encoder=None,
        device=None,
        aligner: str | None = None,
        inverter: Callable[[object], Tensor] | None = None,
        notify: Callable[[str], None] | None = None,
        text: bool = False,
    ):
        from ..backends import resolve_backend

        self.backend = resolve_backend(device)
        self.notify = notify or _warn
        self.info: dict[str, str] = {}
        if isinstance(generator, torch.nn.Module):
            self.generator = self.backend.prepare(generator)
            self.info.update(generator=getattr(generator, "name", "") or "in-memory generator", generator_sha256="")
        else:
            from ..models.stylegan2 import load_generator_checkpoint

            path, label, sha = weights_identity(generator, "stylegan2-ffhq")
            self.generator = self.backend.prepare(load_generator_checkpoint(path))
            self.info.update(generator=label, generator_sha256=sha)
        self.info["generator_size"] = str(self.generator.size)
        if clip is None or isinstance(clip, str):
            from ..clip import get_variant, load_clip

            variant = get_variant(clip)
            path, label, sha = weights_identity(clip_weights, variant.weights)
            self.clip = load_clip(
                variant.name, self.backend, input_mode=clip_input, generator_size=self.generator.size, weights=path,
                text=text,
            )
            self.info.update(clip_weights=label, clip_weights_sha256=sha)
        else:
            self.clip = clip
            self.info.update(clip_weights="in-memory CLIP", clip_weights_sha256="")
        self._check_clip()
        variant = getattr(self.clip, "variant", None)
        self.info.update(
            clip_model=getattr(variant, "name", "") or type(self.clip).__name__,
            clip_input=str(getattr(self.clip, "input_mode", clip_input)),
        )
        self._encoder_spec = encoder
        self._aligner = aligner
        self._inverter = inverter
        self.last_sources: SourceSet | None = None
        self.last_batch_size: int | None = None

    def _check_clip(self) -> None:
        size = getattr(self.clip, "generator_size", self.generator.size)
        if size != self.generator.size:
            raise EssencekitError(
                f"the CLIP encoder was set up for {size} px images but the generator makes {self.generator.size} px "
                f"ones: load it with generator_size={self.generator.size}"
            )
        if not callable(self.clip) or not hasattr(self.clip, "encode_target"):
            raise EssencekitError("the CLIP encoder must be callable on images and have encode_target(image)")

    # -- inversion --------------------------------------------------------------------------

    def inverter(self) -> Callable[[object], Tensor]:
        if self._inverter is None:
            from .inversion import face_inverter

            def load_e4e():
                from ..models.e4e import load_encoder_checkpoint

                path, label, sha = weights_identity(self._encoder_spec, "e4e-ffhq")
                self.info.update(encoder=label, encoder_sha256=sha)
                return self.backend.prepare(load_encoder_checkpoint(path))

            self._inverter = face_inverter(load_e4e, self.generator, aligner=self._aligner)
        return self._inverter

    def initial_directions(self, target: Target | None, settings: ExtractSettings, seed: int) -> tuple[Tensor, list[str]]:
        """[K, n_latent, style_dim] starts and what each is ("inversion" or "random"). The
        inversion is of ``target`` (the first photo of several); ``None`` (a text alone): every
        start is random."""
        first = None
        if target is None and settings.init == "auto":
            self.notify("a text target has no photo to invert: every restart starts from a random latent")
        elif settings.init in ("auto", "inversion"):
            try:
                first = self.inverter()(target.image)
            except EssencekitError as error:
                if settings.init == "inversion":
                    name = target.file or target.name
                    raise EssencekitError(f"init 'inversion': cannot invert {name}: {error}") from None
                self.notify(
                    f"no e4e inversion of {target.file or target.name} ({error}); restart 1 starts from a random "
                    "latent like the others"
                )
            if first is not None:
                first = first.reshape(1, self.generator.n_latent, self.generator.style_dim).float().cpu()
        start = 0 if first is None else 1
        # restart k draws from its own stream whether or not restart 1 is an inversion
        random = random_directions(self.generator, range(start, settings.restarts), seed, settings.truncation)
        if first is None:
            return random, ["random"] * settings.restarts
        return torch.cat([first, random]), ["inversion"] + ["random"] * (settings.restarts - 1)

    # -- the run ----------------------------------------------------------------------------

    def run(
        self,
        target,
        settings: ExtractSettings | None = None,
        *,
        sources=None,
        seed: int | None = None,
        progress: Callable[[StepReport], None] | None = None,
        phase: Callable[[str], None] | None = None,
        preview: str | os.PathLike | None = None,
        text: str | None = None,
        text_weight: float | None = None,
        name: str | None = None,
    ) -> Essence:
        """Extract the essence of ``target`` (a path or PIL image, a folder, a glob pattern or a
        list of photos of one target; ``None`` with ``text``), aiming at ``text`` too when
        given; see :func:`extract`. ``name`` overrides the essence's name."""
        settings = (settings or ExtractSettings()).validate()
        phase = phase or (lambda text: None)
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "little")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise OptionError(f"seed must be a whole number >= 0, got {seed!r}", parameter="seed")
        spec = target if isinstance(target, TargetSpec) else resolve_target(
            target, text=text, text_weight=text_weight, name=name)
        if not spec.photos and settings.init == "inversion":
            raise OptionError("init 'inversion' starts from the target photo's inversion, and a text target has no "
                              "photo: use init 'random' or 'auto'", parameter="init")
        if spec.text is not None and not getattr(self.clip, "has_text", callable(getattr(self.clip, "encode_text", None))):
            raise EssencekitError("a text target needs CLIP's text tower: make the Extractor with text=True")
        generator, device = self.generator, self.backend.device
        started = time.perf_counter()

        phase("sources")
        source_set = resolve_sources(
            sources, generator, num_sources=settings.num_sources, held_out=settings.held_out, seed=seed,
            truncation=settings.truncation, inverter_factory=self.inverter, notify=self.notify,
        )
        phase("target")
        embedding = target_embedding(self.clip, spec, self.notify)
        init, kinds = self.initial_directions(spec.first_photo, settings, seed)

        render_size = min(FAST_SIZE, generator.size) if settings.fast else None
        batch_size, checkpoint = plan_chunks(
            generator, self.backend, render_size or generator.size, settings.restarts * settings.num_sources,
            settings.batch_size,
        )
        options = OptimiseSettings(
            **{**settings.recipe(), "batch_size": batch_size}, render_size=render_size, checkpoint=checkpoint
        )
        phase("optimise")
        result = optimise(
            generator, self.clip, source_set.train.to(device), embedding.to(device), init.to(device), options,
            callback=progress, autocast=self.backend.autocast,
        )
        if result.steps_done == 0:
            raise ExtractionInterrupted(None, 0, settings.steps)

        strengths = result.best_coefficients.mean(1)
        held = None
        if settings.held_out and not result.interrupted:
            phase("held-out")
            try:
                # at full size also with --fast: the choice is made on the images users get
                held = evaluate_directions(
                    generator, self.clip, source_set.held_out.to(device), embedding.to(device),
                    result.best_direction, strengths, lambda_transfer=settings.lambda_transfer,
                    lambda_consistency=settings.lambda_consistency, consistency=settings.consistency,
                    batch_size=batch_size, autocast=self.backend.autocast,
                )
            except KeyboardInterrupt:
                result.interrupted = True
        chosen = int(torch.argmin(held[0] if held is not None else result.best_loss))
        essence = self._essence(
            spec, settings, seed, source_set, kinds, result, strengths, held, chosen,
            batch_size=batch_size, checkpoint=checkpoint, render_size=render_size,
            seconds=time.perf_counter() - started,
        )
        self.last_sources, self.last_batch_size = source_set, batch_size
        if result.interrupted:
            raise ExtractionInterrupted(essence, result.steps_done, settings.steps)
        if preview is not None:
            phase("preview")
            self.write_preview(essence, preview)
        return essence

    def write_preview(self, essence: Essence, path: str | os.PathLike, sources: Tensor | None = None) -> Path:
        """The contact sheet of ``essence`` on ``sources`` (default: the last run's training
        sources, at most 8) as a PNG at ``path``."""
        from .preview import render_preview

        if sources is None:
            if getattr(self, "last_sources", None) is None:
                raise EssencekitError("no sources for the preview: run an extraction first or pass sources")
            sources = self.last_sources.train[:8]
        return render_preview(
            self.generator, sources.to(self.backend.device), essence.direction, essence.recommended_strength, path,
            batch_size=getattr(self, "last_batch_size", None), autocast=self.backend.autocast,
        )

    def _essence(
        self, target: TargetSpec, settings: ExtractSettings, seed: int, source_set: SourceSet, kinds: list[str],
        result: OptimiseResult, strengths: Tensor, held, chosen: int, *, batch_size: int, checkpoint: bool,
        render_size: int | None, seconds: float,
    ) -> Essence:
        from ..version import __version__

        def number(value) -> float | None:
            value = float(value)
            return round(value, 6) if value == value and abs(value) != float("inf") else None

        restarts = []
        for k in range(result.restarts):
            figures = {
                "restart": k, "init": kinds[k], "best_step": int(result.best_step[k]),
                "loss": number(result.best_loss[k]), "transfer": number(result.best_transfer[k]),
                "consistency": number(result.best_consistency[k]),
                "final_loss": number(result.history["loss"][-1, k]),
                "strength": number(strengths[k]), "direction_norm": number(result.best_direction[k].norm()),
            }
            if held is not None:
                figures.update(
                    held_out_loss=number(held[0][k]), held_out_transfer=number(held[1][k]),
                    held_out_consistency=number(held[2][k]),
                )
            figures["chosen"] = k == chosen
            restarts.append(figures)
        coefficients = result.best_coefficients[chosen]
        strength = float(coefficients.mean())
        best = restarts[chosen]
        n_latent, style_dim = self.generator.n_latent, self.generator.style_dim
        hyper = settings.as_dict()
        hyper.update(
            batch_size=batch_size, checkpoint_blocks=checkpoint, coefficient_lr=settings.lr,
            coefficient_weight_decay=WEIGHT_DECAY, render_size=render_size or self.generator.size,
            schedule=f"rampup {RAMPUP}, rampdown {RAMPDOWN}",
        )
        metadata = {
            "format_version": FORMAT_VERSION,
            "name": target.name,
            "kind": "essence",
            "method": "TargetCLIP optimisation (essencekit extract)",
            "latent_space": "w+",
            "shape": json.dumps([n_latent, style_dim]),
            **self.info,
            "hyperparameters": json.dumps(hyper),
            "seed": str(seed),
            **target.metadata(),
            "sources": json.dumps({"kind": source_set.kind, "num_sources": int(source_set.train.shape[0]),
                                   "held_out": int(source_set.held_out.shape[0]), **source_set.details}),
            "restarts": json.dumps(restarts),
            "chosen_restart": str(chosen),
            "selection": "held-out loss at the recommended strength" if held is not None else "training loss",
            "loss": str(best["loss"]),
            "transfer_loss": str(best["transfer"]),
            "consistency_loss": str(best["consistency"]),
            "coefficients": json.dumps([round(float(c), 6) for c in coefficients]),
            "recommended_strength": repr(strength),
            "steps_done": str(result.steps_done),
            "interrupted": "true" if result.interrupted else "false",
            "fast": "true" if settings.fast else "false",
            "backend": self.backend.name,
            "seconds": f"{seconds:.1f}",
            "essencekit_version": __version__,
            "torch_version": str(torch.__version__),
            "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        }
        if held is not None:
            metadata["held_out_loss"] = str(best["held_out_loss"])
        return Essence(result.best_direction[chosen], coefficients, metadata)


def extract(
    target=None,
    *,
    text: str | None = None,
    text_weight: float | None = None,
    generator=None,
    clip=None,
    clip_weights: str | os.PathLike | None = None,
    clip_input: str = "raw",
    encoder=None,
    sources=None,
    seed: int | None = None,
    device=None,
    aligner: str | None = None,
    inverter: Callable[[object], Tensor] | None = None,
    progress: Callable[[StepReport], None] | None = None,
    notify: Callable[[str], None] | None = None,
    preview: str | os.PathLike | None = None,
    **hyperparameters,
) -> Essence:
    """Find the essence of ``target`` by optimisation.

    ``target``: an image path or a PIL image; several photos of one target as a list (or a
    folder, or a glob pattern such as ``"obama/*.jpg"``), whose target embedding is the
    normalised mean of the photos' normalised CLIP embeddings; or ``None`` with ``text``.
    ``text``: a target in words, embedded by CLIP's text tower (loaded only then);
    ``text_weight`` (0 to 1, default 0.5) weighs it against the photos: the target embedding
    is ``normalize((1 - w) * normalize(photo_mean) + w * normalize(text))``. With a text
    alone every restart starts randomly (no photo to invert).

    Hyper-parameters: the keywords of :class:`~essencekit.extraction.settings.ExtractSettings`
    (``steps``, ``lr``, ``num_sources``, ``restarts``, ...), which declares their defaults (the
    recipe of the published essences) and checks; a value that cannot work raises
    :class:`~essencekit.errors.OptionError` naming the parameter.

    ``sources``: ``None`` (sampled with truncation 0.7 from ``seed``), ``"celebs"``, a W+
    latents file, a folder of face photos, or a [P, n_latent, style_dim] tensor. Models: see
    :class:`Extractor` (``generator``, ``clip``, ``clip_weights``, ``clip_input``,
    ``encoder``, ``device``, ``aligner``, ``inverter``). ``progress`` gets a
    :class:`~essencekit.extraction.optimise.StepReport` after every step; ``preview`` writes a
    contact sheet PNG at the end.

    Returns an :class:`~essencekit.essence.Essence` (``.direction``, ``.coefficients``,
    ``.metadata``, ``.recommended_strength``, ``.save(path)``). Ctrl-C raises
    :class:`ExtractionInterrupted` (a ``KeyboardInterrupt``) whose ``.essence`` is the best
    essence so far.
    """
    unknown = set(hyperparameters) - set(ExtractSettings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"extract() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    settings = ExtractSettings(**hyperparameters)
    check_text(text, text_weight)  # before any model is loaded
    if target is None and text is None:
        raise OptionError("no target: give one or more photos, or a text", parameter="target")
    if target is None and settings.init == "inversion":
        raise OptionError("init 'inversion' starts from the target photo's inversion, and a text target has no "
                          "photo: use init 'random' or 'auto'", parameter="init")
    extractor = Extractor(
        generator=generator, clip=clip, clip_weights=clip_weights, clip_input=clip_input, encoder=encoder,
        device=device, aligner=aligner, inverter=inverter, notify=notify, text=text is not None,
    )
    return extractor.run(target, settings, sources=sources, seed=seed, progress=progress, preview=preview,
                         text=text, text_weight=text_weight)
