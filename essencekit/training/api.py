"""``essencekit.train_encoder``: fine-tune e4e into an essence encoder (TargetCLIP's variant b)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from ..chunked import plan_chunks
from ..distributed import ProcessGroup
from ..errors import EssencekitError, OptionError
from ..latents import check_latents, load_latent_file
from ..weights import weights_identity
from .data import TrainingImages, load_training_images
from .loss import EssenceLoss
from .run_folder import RunFolder
from .settings import Schedule, TrainSettings, check_world
from .trainer import EncoderTrainer, StepReport, TrainResult, ValidationReport

DEFAULT_SOURCES = "encoder-sources"


def _load_sources(sources, n_latent: int, style_dim: int) -> tuple[Tensor, dict[str, str]]:
    if isinstance(sources, Tensor):
        return check_latents(sources, n_latent, style_dim, "sources"), {"sources": "in-memory latents"}
    path, label, sha = weights_identity(sources, DEFAULT_SOURCES)
    latents = check_latents(load_latent_file(Path(path)), n_latent, style_dim, str(path))
    return latents, {"sources": label, "sources_sha256": sha}


def _load_images(group: ProcessGroup, folder, parameter: str, **options) -> TrainingImages:
    # rank 0 aligns and fills the shared cache; the others then read it instead of aligning
    # the same photos again at the same time
    if group.launch.distributed and not group.is_main:
        group.barrier()
        return load_training_images(folder, parameter=parameter, **options)
    images = load_training_images(folder, parameter=parameter, **options)
    group.barrier()
    return images


def train_encoder(
    train_dir: str | os.PathLike,
    output: str | os.PathLike,
    *,
    val_dir: str | os.PathLike | None = None,
    resume: bool = False,
    encoder=None,
    generator=None,
    clip=None,
    clip_weights: str | os.PathLike | None = None,
    clip_input: str = "raw",
    sources=None,
    device=None,
    align: bool = True,
    aligner: str | None = None,
    val_every: int | None = None,
    checkpoint_every: int = 500,
    samples: int = 4,
    progress: Callable[[StepReport], None] | None = None,
    on_validation: Callable[[ValidationReport], None] | None = None,
    on_images: Callable[[int, int], None] | None = None,
    notify: Callable[[str], None] | None = None,
    **hyperparameters,
) -> TrainResult:
    """Train an essence encoder on the photos in ``train_dir``; checkpoints go to the run
    folder ``output`` (``best.pt`` by validation loss on ``val_dir``, ``last.pt``).

    Hyper-parameters: the keywords of :class:`~essencekit.training.settings.TrainSettings`
    (``steps``, ``lr``, ``batch_size`` per process, ``optimizer``, ``batchnorm``, ...).
    ``encoder``: the e4e checkpoint to start from (default ``e4e-ffhq``); ``generator``: the
    StyleGAN2 generator (default: the one inside the e4e checkpoint, the FFHQ generator);
    ``clip``: a CLIP variant name or a loaded encoder (or any callable from generated images to
    embeddings); ``sources``: W+ latents [S, n_latent, style_dim] (default the published
    ``encoder-sources``). ``resume=True`` continues the run in ``output`` exactly.

    Under ``torchrun`` each process trains its part of every batch on its device and the
    gradients are averaged (DistributedDataParallel); rank 0 validates and writes.
    Ctrl-C or SIGTERM finishes the current step, saves ``last.pt`` and raises
    :class:`~essencekit.training.trainer.TrainingInterrupted`.
    """
    from ..backends import resolve_backend

    unknown = set(hyperparameters) - set(TrainSettings.__dataclass_fields__)
    if unknown:
        raise TypeError(f"train_encoder() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    settings = TrainSettings(**hyperparameters)
    schedule = Schedule(val_every=val_every, checkpoint_every=checkpoint_every, samples=samples)
    run = RunFolder(output)
    if resume:
        run.check_resumable()
    else:
        run.check_new()

    with ProcessGroup(resolve_backend(device)) as group:
        backend = group.backend
        image_options = {"align": align, "aligner": aligner, "notify": notify, "progress": on_images}
        train = _load_images(group, train_dir, "train_dir", **image_options)
        check_world(settings, group.launch.world_size, len(train.files))
        val = _load_images(group, val_dir, "val_dir", **image_options) if val_dir is not None else None

        info: dict[str, str] = {}
        trainable, decoder = _load_e4e(encoder, info)
        if generator is None:
            generator = decoder
            info.update(generator="the e4e checkpoint's decoder", generator_sha256="")
        elif not isinstance(generator, torch.nn.Module):
            from ..models.stylegan2 import load_generator_checkpoint

            path, label, sha = weights_identity(generator, "stylegan2-ffhq")
            generator = load_generator_checkpoint(path)
            info.update(generator=label, generator_sha256=sha)
        else:
            info.update(generator=getattr(generator, "name", "") or "in-memory generator", generator_sha256="")
        generator = backend.prepare(generator)
        trainable = backend.prepare(trainable)
        if trainable.n_latent != generator.n_latent or trainable.style_dim != generator.style_dim:
            raise EssencekitError(
                f"the encoder gives {trainable.n_latent} x {trainable.style_dim} directions but the generator takes "
                f"{generator.n_latent} x {generator.style_dim} latents: use the e4e checkpoint of that generator"
            )
        clip = _load_clip(clip, clip_weights, clip_input, generator.size, backend, info)
        latents, described = _load_sources(sources, generator.n_latent, generator.style_dim)
        info.update(described, source_count=str(latents.shape[0]))
        if settings.lambda_consistency and latents.shape[0] < 2:
            raise OptionError("the consistency loss compares sources in pairs: give 2 or more sources",
                              parameter="sources")
        # a target's sources in one graph when the backend's memory allows (a GPU), else in
        # chunks (1024 px on a CPU: one image's forward and backward alone takes about 2.6 GiB)
        chunk, _ = plan_chunks(generator, backend, generator.size, latents.shape[0])
        info["source_chunk"] = str(chunk)
        loss = EssenceLoss(generator, clip, latents, lambda_consistency=settings.lambda_consistency,
                           lambda_norm=settings.lambda_norm, autocast=backend.autocast, chunk=chunk)
        trainer = EncoderTrainer(trainable, loss, train, val, settings, schedule, run, group, info,
                                 progress=progress, on_validation=on_validation)
        if resume:
            trainer.resume()
        return trainer.fit()


def _load_e4e(spec, info: dict[str, str]):
    """The trainable encoder and the embedded generator of the starting e4e checkpoint."""
    from ..models.e4e import E4E, load_encoder_checkpoint

    if isinstance(spec, E4E):
        info.update(base_encoder="in-memory e4e", base_encoder_sha256="")
        e4e = spec
    else:
        path, label, sha = weights_identity(spec, "e4e-ffhq")
        e4e = load_encoder_checkpoint(path)
        info.update(base_encoder=label, base_encoder_sha256=sha)
    return e4e.encoder, e4e.generator


def _load_clip(clip, clip_weights, clip_input: str, generator_size: int, backend, info: dict[str, str]):
    if clip is None or isinstance(clip, str):
        from ..clip import get_variant, load_clip

        variant = get_variant(clip)
        path, label, sha = weights_identity(clip_weights, variant.weights)
        info.update(clip_model=variant.name, clip_input=clip_input, clip_weights=label, clip_weights_sha256=sha)
        return load_clip(variant.name, backend, input_mode=clip_input, generator_size=generator_size, weights=path)
    if not callable(clip):
        raise EssencekitError("clip must be a CLIP variant name, a loaded CLIP encoder or a callable on images")
    variant = getattr(clip, "variant", None)
    info.update(clip_model=getattr(variant, "name", "") or type(clip).__name__,
                clip_input=str(getattr(clip, "input_mode", clip_input)), clip_weights="in-memory CLIP",
                clip_weights_sha256="")
    return clip
