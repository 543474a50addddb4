"""The training loop of the encoder variant, on one process or under torchrun.

Every process holds the frozen generator and CLIP once and its copy of the encoder, wrapped in
DistributedDataParallel when there are several (the gradients of each step are averaged across
processes). Rank 0 alone validates, writes checkpoints, the metrics log and the sample grids,
and reports progress; the others wait for it.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..distributed import ProcessGroup
from ..errors import EssencekitError, OptionError, braced
from ..essence_encoder import DEFAULT_STRENGTH, read_encoder_checkpoint, save_encoder_checkpoint
from .data import TrainingImages
from .interrupts import deferred_stop
from .loss import EssenceLoss, LossTerms
from .ranger import make_optimizer
from .run_folder import RunFolder
from .sampling import StepSampler
from .settings import Schedule, TrainSettings


@dataclass
class StepReport:
    step: int  # steps done, from 1
    steps: int
    terms: LossTerms
    seconds: float


@dataclass
class ValidationReport:
    step: int
    terms: LossTerms
    best: bool
    grid: Path | None


@dataclass
class TrainResult:
    steps_done: int
    last: Path
    best: Path
    best_val_loss: float | None
    train: LossTerms | None


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the run stopped after ``steps_done`` steps, ``last`` saved."""

    def __init__(self, steps_done: int, last: Path | None, signal_number: int | None):
        super().__init__(f"stopped after {steps_done} steps")
        self.steps_done, self.last, self.signal_number = steps_done, last, signal_number


def set_mode(module: nn.Module, batchnorm: str) -> None:
    """Training mode, with BatchNorm on its running statistics when ``batchnorm == "frozen"``."""
    module.train()
    if batchnorm == "frozen":
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.eval()


def train_step(model: nn.Module, loss: EssenceLoss, optimizer, images: torch.Tensor, *, batchnorm: str = "frozen",
               autocast=None) -> LossTerms:
    """One optimisation step of the encoder on ``images`` [B, 3, 256, 256] in [-1, 1] (the
    targets): their directions, the loss and its gradient, the optimiser's update."""
    set_mode(model, batchnorm)
    with (autocast or contextlib.nullcontext)():
        directions = model(images)
    terms = loss.backward(directions.float(), loss.target_embeddings(images))
    optimizer.step()
    optimizer.zero_grad()
    return terms


class EncoderTrainer:
    """One training run. ``encoder`` is the trainable Encoder4Editing (already on the device);
    ``info`` the models' identities for the checkpoints' metadata."""

    def __init__(
        self, encoder: nn.Module, loss: EssenceLoss, train: TrainingImages, val: TrainingImages | None,
        settings: TrainSettings, schedule: Schedule, run: RunFolder, group: ProcessGroup, info: dict[str, str], *,
        progress: Callable[[StepReport], None] | None = None,
        on_validation: Callable[[ValidationReport], None] | None = None,
    ):
        self.encoder, self.loss, self.train_set, self.val_set = encoder, loss, train, val
        self.settings, self.schedule, self.run_folder, self.group, self.info = settings, schedule, run, group, info
        self.progress, self.on_validation = progress, on_validation
        self.device = group.backend.device
        for parameter in encoder.parameters():
            parameter.requires_grad_(True)
        self.model = encoder
        if group.launch.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if group.backend.device_per_process else None
            self.model = DistributedDataParallel(encoder, device_ids=device_ids)
        self.optimizer = make_optimizer(settings.optimizer, encoder.parameters(), settings.lr)
        launch = group.launch
        self.sampler = StepSampler(len(train.files), settings.batch_size, launch, settings.seed, flip=settings.flip)
        self.val_every = schedule.validation_interval(
            settings.steps, len(val.files) if val is not None else 0, settings.batch_size * launch.world_size
        )
        self.step = 0
        self.best_val_loss: float | None = None
        self.best_step: int | None = None
        self.last_terms: LossTerms | None = None

    # -- state ------------------------------------------------------------------------------

    def _identity(self) -> dict:
        return {
            "settings": self.settings.as_dict(),
            "world_size": self.group.launch.world_size,
            "train_digest": self.train_set.digest,
            "val_digest": self.val_set.digest if self.val_set is not None else "",
            "base_encoder_sha256": self.info.get("base_encoder_sha256", ""),
        }

    def resume(self) -> None:
        """Continue from the run folder's ``last.pt``: weights, optimiser (Lookahead's slow
        weights included), step and best validation loss. Refuses a run of other settings,
        data, base encoder or number of processes."""
        path = self.run_folder.check_resumable()
        checkpoint = read_encoder_checkpoint(path)
        saved = checkpoint.get("training")
        if not isinstance(saved, dict):
            raise EssencekitError(f"cannot resume from {path}: it holds no training state")
        problems = self.settings.differences(saved.get("settings") or {})
        mine = self._identity()
        names = {"world_size": "number of processes", "train_digest": "training images",
                 "val_digest": "validation images", "base_encoder_sha256": "starting e4e checkpoint"}
        problems += [f"{label} differ" if key.endswith(("digest", "sha256")) else
                     f"{label}: {saved.get(key)!r} -> {mine[key]!r}"
                     for key, label in names.items() if saved.get(key) != mine[key]]
        if problems:
            raise OptionError(
                f"cannot resume {self.run_folder.path}: it was trained differently "
                f"({'; '.join(problems)}); resume with the run's own settings and data, or start a new run folder",
                parameter="resume",
            )
        if int(saved["step"]) > self.settings.steps:
            raise OptionError(
                f"cannot resume {braced(str(self.run_folder.path))} for {self.settings.steps} steps: it has done "
                f"{saved['step']} already; give more {{steps}}", parameter="steps", mentions=("steps",),
            )
        state = {k[len("encoder."):]: v for k, v in checkpoint["state_dict"].items()}
        self.encoder.load_state_dict(state)
        self.optimizer.load_state_dict(saved["optimizer"])
        self.step = int(saved["step"])
        self.best_val_loss = saved.get("best_val_loss")
        self.best_step = saved.get("best_step")
        if self.group.is_main:
            self.run_folder.truncate_log(self.step)

    def _metadata(self, **extra) -> dict[str, str]:
        from ..version import __version__

        metadata = {
            "kind": "essence-encoder",
            "method": "TargetCLIP encoder variant (essencekit train-encoder)",
            **self.info,
            "settings": json.dumps(self.settings.as_dict()),
            "steps_done": str(self.step),
            "train_images": str(len(self.train_set.files)),
            "train_digest": self.train_set.digest,
            "train_recipe": self.train_set.recipe,
            "val_images": str(len(self.val_set.files)) if self.val_set is not None else "0",
            "val_digest": self.val_set.digest if self.val_set is not None else "",
            "world_size": str(self.group.launch.world_size),
            "backend": self.group.backend.name,
            "recommended_strength": repr(DEFAULT_STRENGTH),
            "essencekit_version": __version__,
            "torch_version": str(torch.__version__),
            "created": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat(),
        }
        if self.last_terms is not None:
            metadata["train_loss"] = json.dumps(self.last_terms.as_dict())
        if self.best_val_loss is not None:
            metadata.update(best_val_loss=repr(self.best_val_loss), best_step=str(self.best_step))
        metadata.update({k: str(v) for k, v in extra.items()})
        return metadata

    def _save_last(self) -> Path:
        training = {**self._identity(), "step": self.step, "optimizer": self.optimizer.state_dict(),
                    "best_val_loss": self.best_val_loss, "best_step": self.best_step}
        return save_encoder_checkpoint(self.run_folder.last, self.encoder, self._metadata(), training)

    # -- the loop ---------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        settings, group = self.settings, self.group
        if group.is_main:
            self.run_folder.create()
        with deferred_stop() as stop:
            while self.step < settings.steps:
                started = time.perf_counter()
                self.last_terms = self._train_step(self.step)
                self.step += 1
                seconds = time.perf_counter() - started
                if group.is_main:
                    self.run_folder.log({"step": self.step, "kind": "train", **self.last_terms.as_dict(),
                                         "seconds": round(seconds, 4)})
                    if self.progress is not None:
                        self.progress(StepReport(self.step, settings.steps, self.last_terms, seconds))
                if self.val_set is not None and (self.step % self.val_every == 0 or self.step == settings.steps):
                    self.validate()
                if self.step % self.schedule.checkpoint_every == 0 and self.step < settings.steps and group.is_main:
                    save_encoder_checkpoint(self.run_folder.periodic(self.step), self.encoder, self._metadata())
                    self._save_last()
                if group.any(bool(stop)):
                    last = self._save_last() if group.is_main else None
                    group.barrier()
                    raise TrainingInterrupted(self.step, last, stop.signal)
        last = best = self.run_folder.last
        if group.is_main:
            last = self._save_last()
            if self.val_set is None:
                # no validation to choose by: the final weights are the run's result
                save_encoder_checkpoint(self.run_folder.best, self.encoder, self._metadata(selection="final weights"))
            best = self.run_folder.best
        group.barrier()
        return TrainResult(self.step, last, best, self.best_val_loss, self.last_terms)

    def _train_step(self, step: int) -> LossTerms:
        indices, flips = self.sampler.indices(step), self.sampler.flips(step)
        images = self.train_set.batch(indices, flips).to(self.device)
        terms = train_step(self.model, self.loss, self.optimizer, images, batchnorm=self.settings.batchnorm,
                           autocast=self.group.backend.autocast)
        if self.group.launch.distributed:
            terms = LossTerms.mean(self.group.gather(terms))
        return terms

    # -- validation -------------------------------------------------------------------------

    def validate(self) -> None:
        """Rank 0 measures the loss on every validation image (no flips, BatchNorm on its
        running statistics); a new best writes ``best.pt`` and a sample grid."""
        if self.group.is_main:
            terms = self._validation_loss()
            best = self.best_val_loss is None or terms.loss < self.best_val_loss
            grid = None
            if best:
                self.best_val_loss, self.best_step = terms.loss, self.step
                save_encoder_checkpoint(self.run_folder.best, self.encoder, self._metadata(selection="validation loss"))
            if self.schedule.samples:
                grid = self._sample_grid()
            self.run_folder.log({"step": self.step, "kind": "validation", **terms.as_dict(), "best": best})
            if self.on_validation is not None:
                self.on_validation(ValidationReport(self.step, terms, best, grid))
        self.group.barrier()

    @torch.no_grad()
    def _validation_loss(self) -> LossTerms:
        self.encoder.eval()
        parts, sizes = [], []
        batch = max(1, self.settings.batch_size)
        for start in range(0, len(self.val_set.files), batch):
            indices = list(range(start, min(start + batch, len(self.val_set.files))))
            images = self.val_set.batch(indices).to(self.device)
            with self.group.backend.autocast():
                directions = self.encoder(images).float()
            parts.append(self.loss.evaluate(directions, self.loss.target_embeddings(images)))
            sizes.append(len(indices))
        return LossTerms.mean(parts, sizes)

    @torch.no_grad()
    def _sample_grid(self) -> Path:
        from ..atomic import atomic_path
        from ..images import contact_sheet, to_pil

        self.encoder.eval()
        count = min(self.schedule.samples, len(self.val_set.files))
        images = self.val_set.batch(list(range(count))).to(self.device)
        directions = self.encoder(images).float()
        sources = self.loss.sources[:3]
        generator = self.loss.generator
        rows = [[None] + [to_pil(image) for image in generator.synthesis(sources, noise="const").float()]]
        for target, direction in zip(images, directions):
            edited = generator.synthesis(sources + direction.to(sources.dtype), noise="const").float()
            rows.append([to_pil(target)] + [to_pil(image) for image in edited])
        labels = ["target"] + [f"source {i + 1}" for i in range(sources.shape[0])]
        path = self.run_folder.sample_grid(self.step)
        with atomic_path(path) as tmp:
            contact_sheet(labels, rows).save(tmp, format="PNG")
        return path
