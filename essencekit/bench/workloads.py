"""The workloads ``essencekit bench`` times: essencekit's own path on random weights.

* :func:`generator_cases`: the StyleGAN2 synthesis network forward, or forward + backward to
  W+, at a few batch sizes;
* :func:`extract_case`: essence-extraction steps as ``essencekit extract`` runs them;
* :func:`transfer_case`: ``essencekit transfer --no-align --crops`` over PNG crops (and
  :func:`transfer_models` for the e4e inversion on its own).

Each takes a plain spec (what a worker process reads from JSON) and returns plain figures.
The ``adapt`` and ``loop`` arguments let the comparisons in the source checkout's
``benchmarks/`` run the very same workload on the reference form of a model or with the
reference's loop, so that this package needs to know nothing about the reference.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..hugepages import huge_pages_requested
from . import measure

OPS = ("forward", "fwd+bwd")
DEFAULT_REPEATS = 3
DEFAULT_SEED = 0
# The stage widths and unit counts of e4e's ir_se-50 encoder.
IR_SE50_UNITS = (3, 4, 14, 3)
IR_SE50_WIDTHS = (64, 128, 256, 512)

# Changes a freshly built, backend-prepared generator in place (a benchmark's other form).
Adapt = Callable[[Any], Any]


# --------------------------------------------------------------------------------------------
# The generator


def random_w_plus(config, batch: int, seed: int = DEFAULT_SEED):
    """W+ [batch, n_latent, style_dim], standard normal, drawn on the CPU from ``seed + 1``."""
    import torch

    generator = torch.Generator().manual_seed(seed + 1)
    return torch.randn(batch, config.n_latent, config.style_dim, generator=generator)


def generator_step(model, op: str, w_plus, backend, autocast: bool, keep: bool) -> Callable[[], Any]:
    """One timed call of ``op`` (``forward`` or ``fwd+bwd``: the gradient of the images' sum with
    respect to W+, what extraction runs); with ``keep`` it returns the image (and gradient)."""
    import contextlib

    import torch

    amp = backend.autocast if autocast else contextlib.nullcontext

    def forward():
        with torch.no_grad(), amp():
            image = model.synthesis(w_plus, noise="const")
        return {"image": image.float().cpu()} if keep else None

    def forward_backward():
        w = w_plus.detach().clone().requires_grad_(True)
        with amp():
            image = model.synthesis(w, noise="const")
        image.float().sum().backward()
        return {"image": image.detach().float().cpu(), "grad": w.grad.float().cpu()} if keep else None

    if op == "forward":
        return forward
    if op == "fwd+bwd":
        return forward_backward
    raise ValueError(f"unknown op {op!r}; expected one of {OPS}")


def generator_cases(spec: dict, adapt: Adapt | None = None) -> dict:
    """Time a generator's cases in this process and return their figures.

    ``spec``: ``config`` (GeneratorConfig fields), ``cases`` ([op, batch] pairs, ascending in
    memory: the CPU's peak RSS never goes down), ``backend``, ``repeats``, ``time_budget_s``,
    ``warmup``, ``autocast``, ``seed``, and optionally ``save_dir`` (where batch-1 outputs go,
    named after ``tag``). The generator has random weights drawn from ``seed`` and the backend's
    own form, then ``adapt(generator)``.
    """
    import torch

    from ..backends import select_backend
    from ..models.stylegan2 import Generator, GeneratorConfig

    backend = select_backend(spec.get("backend"))
    config = GeneratorConfig(**spec["config"])
    seed = int(spec.get("seed", DEFAULT_SEED))
    autocast = bool(spec.get("autocast", True))
    save_dir = spec.get("save_dir")

    torch.manual_seed(seed)
    model = backend.prepare(Generator(config).eval().requires_grad_(False))
    if adapt is not None:
        adapt(model)
    rss_model = measure.current_rss_bytes()
    warmed: set[str] = set()
    cases = []
    for op, batch in spec["cases"]:
        keep = bool(save_dir) and batch == 1
        w_plus = random_w_plus(config, batch, seed).to(backend.device)
        step = generator_step(model, op, w_plus, backend, autocast, keep)
        if spec.get("warmup", True) and op not in warmed:
            step()
            backend.synchronize()
        warmed.add(op)
        backend.reset_peak_memory()
        times, output = measure.time_repeats(
            step, repeats=int(spec.get("repeats", DEFAULT_REPEATS)),
            budget_s=spec.get("time_budget_s"), synchronize=backend.synchronize,
        )
        record = {"op": op, "batch": batch, "times_s": times, "median_s": measure.median(times),
                  **measure.peak_memory(backend)}
        if keep and output is not None:
            path = Path(save_dir) / f"{config.size}-{spec.get('tag', 'generator')}-{op}.pt"
            torch.save(output, path)
            record["output_path"] = str(path)
        output = step = w_plus = None  # let this case's tensors go before the next one's
        cases.append(record)
    return {
        "size": config.size,
        "rss_after_model_bytes": rss_model,
        "torch_threads": torch.get_num_threads(),
        "modulated_conv": model.modulated_conv,
        # as torch read it at its first allocation in this process
        "huge_pages": huge_pages_requested(),
        "cases": cases,
    }


# --------------------------------------------------------------------------------------------
# Essence extraction


def extract_models(spec: dict, backend, adapt: Adapt | None = None):
    """(generator, CLIP encoder) with random weights: the FFHQ architecture at ``spec["size"]``
    (widths capped by ``max_channels``) and the CLIP variant ``spec["clip"]``."""
    import torch

    from ..models.stylegan2 import Generator, GeneratorConfig

    config = GeneratorConfig.ffhq(spec["size"], max_channels=spec.get("max_channels"))
    torch.manual_seed(spec["seed"])
    generator = backend.prepare(Generator(config).eval().requires_grad_(False))
    if adapt is not None:
        adapt(generator)
    return generator, random_clip(spec, config.size, backend)


def _optimise(generator, encoder, sources, target, init, spec: dict, backend, on_step) -> dict:
    """essencekit's loop: :func:`essencekit.extraction.optimise.optimise` in the automatic chunks."""
    from ..chunked import plan_chunks
    from ..extraction.optimise import OptimiseSettings, optimise

    count = sources.shape[0] * init.shape[0]
    batch, checkpoint = plan_chunks(generator, backend, generator.size, count, spec.get("batch_size"))
    settings = OptimiseSettings(steps=spec["steps"], batch_size=batch, checkpoint=checkpoint)
    result = optimise(generator, encoder, sources, target, init, settings, autocast=backend.autocast,
                      callback=lambda report: on_step(report.seconds))
    return {"first_loss": float(result.history["loss"][0, 0]), "batch_size": batch,
            "chunks": math.ceil(count / batch), "checkpoint": checkpoint}


def extract_case(spec: dict, *, adapt: Adapt | None = None, loop: Callable[..., dict] | None = None) -> dict:
    """Time extraction steps in this process. ``spec``: ``size``, ``max_channels``, ``sources``
    (N), ``restarts`` (K), ``steps``, ``backend``, ``clip``, ``seed``, optionally ``batch_size``.

    The N sources, K initial directions and the target embedding are drawn from ``seed``;
    ``loop(generator, encoder, sources, target, init, spec, backend, on_step)`` runs the steps
    (default: essencekit's), calls ``on_step(seconds)`` after each and returns figures of its
    own (at least ``first_loss``). The first step is the warm-up: ``median_step_s`` is the
    median of the others.
    """
    import torch

    from ..backends import select_backend
    from ..extraction.sources import random_directions, sample_latents

    backend = select_backend(spec.get("backend"))
    generator, encoder = extract_models(spec, backend, adapt)
    count, restarts = spec["sources"], spec["restarts"]
    sources = sample_latents(generator, count, spec["seed"], "source").to(backend.device)
    init = random_directions(generator, range(restarts), spec["seed"]).to(backend.device)
    target = torch.randn(encoder.embed_dim, generator=torch.Generator().manual_seed(spec["seed"] + 2))
    target = target.to(backend.device)
    rss_models = measure.current_rss_bytes()
    times: list[float] = []
    backend.reset_peak_memory()
    started = time.perf_counter()
    record = (loop or _optimise)(
        generator, encoder, sources, target, init, spec, backend,
        lambda seconds: (backend.synchronize(), times.append(seconds)),
    )
    wall = time.perf_counter() - started
    timed = times[1:] if len(times) > 1 else times
    record.update(
        size=generator.size, sources=count, restarts=restarts, steps=len(times), step_times_s=times,
        median_step_s=measure.median(timed), wall_s=wall, rss_models_bytes=rss_models,
        **measure.peak_memory(backend), torch_threads=torch.get_num_threads(),
    )
    return record


# --------------------------------------------------------------------------------------------
# Essence transfer


def transfer_generator_config(size: int, max_channels: int | None):
    """FFHQ's generator at ``size`` px; ``max_channels`` caps widths and the style width (smoke runs)."""
    from ..models.stylegan2 import GeneratorConfig

    config = GeneratorConfig.ffhq(size, max_channels=max_channels)
    if max_channels is None:
        return config
    return GeneratorConfig(size=size, style_dim=min(512, max_channels), n_mlp=2, channels=config.channels)


def random_e4e(generator, max_channels: int | None, seed: int):
    """An ir_se-50 e4e (stage widths capped by ``max_channels``) with random weights, around
    ``generator``, with a ``latent_avg`` of the generator's mean w."""
    import torch

    from ..models.e4e import E4E, Encoder4Editing, EncoderConfig, UnitSpec

    widths = [w if max_channels is None else min(w, max_channels) for w in IR_SE50_WIDTHS[:3]]
    widths.append(generator.style_dim)  # the last stage is as wide as a style
    units, previous = [], widths[0]
    for width, count in zip(widths, IR_SE50_UNITS):
        for k in range(count):
            units.append(UnitSpec(previous, width, 2 if k == 0 else 1, max(1, width // 16)))
            previous = width
    ends = [sum(IR_SE50_UNITS[: i + 1]) - 1 for i in range(4)]
    # e4e's style blocks: 3 read the 16 px map (4 convolutions to 1x1), 4 the 32 px one, the rest 64 px
    n = generator.n_latent
    convs = tuple(4 if i < 3 else 5 if i < 7 else 6 for i in range(n))
    config = EncoderConfig(3, widths[0], tuple(units), tuple(widths), IR_SE50_UNITS, (ends[1], ends[2], ends[3]),
                           generator.style_dim, convs)
    torch.manual_seed(seed + 3)
    encoder = Encoder4Editing(config).eval().requires_grad_(False)
    latent_avg = generator.mean_latent(1000, seed).expand(n, -1).clone()
    generator.latent_avg.copy_(latent_avg[0])
    return E4E(encoder, generator, latent_avg).eval().requires_grad_(False)


def transfer_models(spec: dict, backend, adapt: Adapt | None = None):
    """(e4e with the generator as its decoder, the essence direction), random, from ``spec``
    (``size``, ``max_channels``, ``seed``); ``adapt`` gets the prepared generator."""
    import torch

    from ..models.stylegan2 import Generator

    torch.manual_seed(spec["seed"])
    config = transfer_generator_config(spec["size"], spec.get("max_channels"))
    generator = Generator(config).eval().requires_grad_(False)
    e4e = random_e4e(generator, spec.get("max_channels"), spec["seed"])
    stream = torch.Generator().manual_seed(spec["seed"] + 4)
    direction = torch.randn(generator.n_latent, generator.style_dim, generator=stream)
    e4e = backend.prepare(e4e)
    if adapt is not None:
        adapt(e4e.generator)
    return e4e, direction * 0.5


def _pipeline(e4e, direction, photos: list[Path], out: Path, backend, spec: dict) -> int:
    """essencekit's transfer pipeline over ``photos``; returns the batch size it used."""
    from ..essence import Essence
    from ..transfers.api import Transferrer

    models = Transferrer(encoder=e4e, device=backend)
    run = models.transfer(photos, Essence(direction, metadata={"name": "bench"}), output=out, align=False,
                          crops=True, overwrite=True, cache=False, batch_size=spec.get("batch_size"),
                          workers=spec.get("workers"))
    for result in run:
        if result.status != "written":
            raise RuntimeError(f"{result.source}: {result.status} {result.reason}")
    return run.batch_size


def transfer_case(spec: dict, *, adapt: Adapt | None = None, loop: Callable[..., None] | None = None) -> dict:
    """Time essence transfer in this process. ``spec``: ``size``, ``max_channels``, ``photos``
    (paths), ``warmup`` (how many of them warm up), ``backend``, ``seed``, ``workdir``, and
    optionally ``batch_size``, ``workers`` and ``repeats`` (timed passes over the photos, default
    1: ``seconds`` is their median, ``times_s`` all of them).

    ``loop(e4e, direction, photos, out, backend)`` replaces essencekit's pipeline (it then
    counts as batch 1). Caching is off: every image is inverted.
    """
    import torch

    from ..backends import select_backend

    backend = select_backend(spec.get("backend"))
    e4e, direction = transfer_models(spec, backend, adapt)
    photos = [Path(p) for p in spec["photos"]]
    warm, timed = photos[: spec["warmup"]], photos[spec["warmup"] :]
    out = Path(spec["workdir"]) / f"out-{spec.get('loop', 'transfer')}"
    out.mkdir(parents=True, exist_ok=True)
    rss_models = measure.current_rss_bytes()
    batch_size = 1

    def once(images):
        nonlocal batch_size
        if loop is not None:
            loop(e4e, direction, images, out, backend)
        else:
            batch_size = _pipeline(e4e, direction, images, out, backend, spec)

    if warm:
        once(warm)
    backend.synchronize()
    backend.reset_peak_memory()
    times, _ = measure.time_repeats(
        lambda: once(timed), repeats=int(spec.get("repeats", 1)), synchronize=backend.synchronize
    )
    seconds = measure.median(times)
    return {
        "size": spec["size"], "images": len(timed), "seconds": seconds, "times_s": times,
        "images_per_s": len(timed) / seconds, "batch_size": batch_size, "rss_models_bytes": rss_models,
        **measure.peak_memory(backend), "torch_threads": torch.get_num_threads(),
    }


def write_photos(folder: Path, count: int, size: int, seed: int) -> list[Path]:
    """``count`` random ``size`` px RGB PNGs (stand-ins for aligned face crops)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"face{i:04d}.png"
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, compress_level=1)
        paths.append(path)
    return paths


def prepare_photos(
    folder: Path, images: int, *, size: int, max_channels: int | None, seed: int, batch_size: int | None,
    max_batch: int,
) -> tuple[int, list[Path]]:
    """(warm-up count, photos): one full batch to warm up (the given ``batch_size``, else the
    backend's ``max_batch``) then ``images`` to time, written to ``folder``; 1024 px crops for the
    full-size models, ``size`` px for the capped smoke-test ones."""
    folder.mkdir(parents=True, exist_ok=True)
    warmup = batch_size or max_batch
    return warmup, write_photos(folder, warmup + images, 1024 if max_channels is None else size, seed)


# --------------------------------------------------------------------------------------------
# The encoder variant: train-encoder's step and extract --method encoder

#: Sources of a training step: the published ``encoder_sources.pt`` holds 5.
ENCODER_SOURCES = 5


def random_clip(spec: dict, generator_size: int, backend):
    """The CLIP variant ``spec["clip"]`` with random weights drawn from ``seed + 1``, raw input
    mode, for generated images of ``generator_size`` px."""
    import torch

    from ..clip import ClipEncoder, build_clip_model, get_variant

    variant = get_variant(spec["clip"])
    torch.manual_seed(spec["seed"] + 1)
    visual = build_clip_model(variant).visual.float().eval().requires_grad_(False)
    return backend.prepare(ClipEncoder(visual, variant, input_mode="raw", generator_size=generator_size))


def encoder_training_models(spec: dict, backend, sources: int):
    """``(e4e, loss)``: the random e4e of :func:`transfer_models` (its encoder trainable, its
    generator frozen) and the :class:`~essencekit.training.loss.EssenceLoss` over ``sources``
    random sources with a random CLIP, chunked as ``train_encoder`` chunks them."""
    from ..chunked import plan_chunks
    from ..extraction.sources import sample_latents
    from ..training.loss import EssenceLoss
    from ..training.settings import DEFAULTS

    e4e, _ = transfer_models(spec, backend)
    generator = e4e.generator
    clip = random_clip(spec, generator.size, backend)
    latents = sample_latents(generator, sources, spec["seed"], "source")
    chunk, _ = plan_chunks(generator, backend, generator.size, sources)
    loss = EssenceLoss(generator, clip, latents, lambda_consistency=DEFAULTS.lambda_consistency,
                       lambda_norm=DEFAULTS.lambda_norm, autocast=backend.autocast, chunk=chunk)
    e4e.encoder.requires_grad_(True)
    return e4e, loss


def random_targets(count: int, size: int, seed: int):
    """Training targets [count, 3, size, size] in [-1, 1], drawn from ``seed + 6``."""
    import torch

    stream = torch.Generator().manual_seed(seed + 6)
    return torch.rand(count, 3, size, size, generator=stream) * 2 - 1


def _resident_bytes(backend) -> int | None:
    """What is held now: the backend's device memory where it reports a peak (read just after
    a reset, the peak is what is allocated), else the process's RSS."""
    backend.synchronize()
    backend.reset_peak_memory()
    device = backend.peak_memory()
    return device if device is not None else measure.current_rss_bytes()


def encoder_train_case(spec: dict) -> dict:
    """Time ``train-encoder``'s step in this process: :func:`essencekit.training.trainer.train_step`
    at batch 1 on a random target, the optimiser of the defaults (Ranger) and their BatchNorm
    mode. ``spec``: ``size``, ``max_channels``, ``sources``, ``backend``, ``clip``, ``seed``,
    ``repeats``. One warm-up step (it also creates the optimiser's state), then ``repeats``
    timed; ``models_bytes`` is what was held before the first step."""
    import torch

    from ..backends import select_backend
    from ..training.ranger import make_optimizer
    from ..training.settings import DEFAULTS
    from ..training.trainer import train_step

    backend = select_backend(spec.get("backend"))
    e4e, loss = encoder_training_models(spec, backend, spec["sources"])
    encoder = e4e.encoder
    optimizer = make_optimizer(DEFAULTS.optimizer, encoder.parameters(), DEFAULTS.lr)
    images = random_targets(1, e4e.input_size, spec["seed"]).to(backend.device)
    models = _resident_bytes(backend)
    losses: list[float] = []

    def step():
        terms = train_step(encoder, loss, optimizer, images, batchnorm=DEFAULTS.batchnorm, autocast=backend.autocast)
        losses.append(terms.loss)

    step()
    backend.synchronize()
    backend.reset_peak_memory()
    times, _ = measure.time_repeats(step, repeats=int(spec["repeats"]), synchronize=backend.synchronize)
    return {
        "size": e4e.generator.size, "sources": spec["sources"], "batch": 1, "chunk": loss.chunk or spec["sources"],
        "optimizer": DEFAULTS.optimizer, "batchnorm": DEFAULTS.batchnorm, "times_s": times,
        "median_s": measure.median(times), "losses": losses, "models_bytes": models,
        **measure.peak_memory(backend), "torch_threads": torch.get_num_threads(),
    }


def encoder_parts_case(spec: dict) -> dict:
    """Time, each on its own, the parts a training step cannot do without (``spec`` as
    :func:`encoder_train_case`'s): ``e4e``, the encoder's forward and backward at batch 1;
    ``generator``, forward and backward of the S edited sources to the direction, in the
    step's chunks, once each; ``clip``, CLIP's forward and backward on S generated images in
    the same chunks, and the target's CLIP forward; and, not a part of the goal, ``optimizer``,
    one update of the optimiser, and ``step``, the whole training step.

    The step and its parts take turns, ``repeats`` rounds after a warm-up round, so that a
    machine whose load changes (a shared CPU) slows them alike and their ratio holds. Returns
    ``parts``: name -> ``times_s``, ``median_s``; ``step_peak_*``, the peak memory of the
    warm-up step, the round's first call (as :func:`measure.peak_memory`), and ``models_bytes``
    what was held before it."""
    import torch

    from ..backends import select_backend
    from ..chunked import chunk_slices
    from ..training.ranger import make_optimizer
    from ..training.settings import DEFAULTS
    from ..training.trainer import set_mode, train_step

    backend = select_backend(spec.get("backend"))
    e4e, loss = encoder_training_models(spec, backend, spec["sources"])
    encoder, generator, device = e4e.encoder, e4e.generator, backend.device
    targets = random_targets(1, e4e.input_size, spec["seed"]).to(device)
    chunks = chunk_slices(spec["sources"], loss.chunk)
    stream = torch.Generator().manual_seed(spec["seed"] + 7)
    direction = (torch.randn(generator.n_latent, generator.style_dim, generator=stream) * 0.1).to(loss.sources)
    size = generator.size
    generated = (torch.rand(spec["sources"], 3, size, size, generator=stream) * 2 - 1).to(loss.sources)

    def e4e_part():
        set_mode(encoder, DEFAULTS.batchnorm)
        with backend.autocast():
            directions = encoder(targets)
        directions.float().sum().backward()
        encoder.zero_grad(set_to_none=True)

    def generator_part():
        leaf = direction.clone().requires_grad_(True)
        for part in chunks:
            with backend.autocast():
                images = generator.synthesis(loss.sources[part] + leaf, noise="const")
            images.to(loss.sources.dtype).sum().backward()

    def clip_part():
        loss.target_embeddings(targets)
        for part in chunks:
            images = generated[part].clone().requires_grad_(True)
            loss.clip(images).sum().backward()

    # one optimiser for the step and the update alone: a second one's state would be the
    # size of the encoder three times over (at 1024 px on a CPU, gigabytes the step never holds)
    optimizer = make_optimizer(DEFAULTS.optimizer, encoder.parameters(), DEFAULTS.lr)
    gradients = [torch.randn_like(p) * 1e-3 for p in optimizer.param_groups[0]["params"]]

    def optimizer_part():
        # the update alone: the gradients are given, not computed
        for parameter, gradient in zip(optimizer.param_groups[0]["params"], gradients):
            parameter.grad = gradient
        optimizer.step()
        optimizer.zero_grad()

    def step():
        train_step(encoder, loss, optimizer, targets, batchnorm=DEFAULTS.batchnorm, autocast=backend.autocast)

    functions = {"step": step, "e4e": e4e_part, "generator": generator_part, "clip": clip_part,
                 "optimizer": optimizer_part}
    times: dict[str, list[float]] = {name: [] for name in functions}
    models = _resident_bytes(backend)
    step_peak: dict = {}
    for round_ in range(int(spec["repeats"]) + 1):
        for name, fn in functions.items():
            backend.synchronize()
            started = time.perf_counter()
            fn()
            backend.synchronize()
            if round_:  # the first round warms up
                times[name].append(time.perf_counter() - started)
            elif name == "step":  # no part holds more than the step that contains it
                step_peak = {f"step_{k}": v for k, v in measure.peak_memory(backend).items()}
    parts = {name: {"times_s": t, "median_s": measure.median(t)} for name, t in times.items()}
    return {"size": size, "sources": spec["sources"], "chunk": loss.chunk or spec["sources"], "parts": parts,
            "models_bytes": models, **step_peak, **measure.peak_memory(backend),
            "torch_threads": torch.get_num_threads()}


def encoder_extract_case(spec: dict) -> dict:
    """Time ``extract --method encoder`` in this process:
    :func:`essencekit.extraction.encoder_method.extract_with_encoder` over the ``photos``
    (paths) in one call, the whole picture as the target (``align="whole"``: no face detection),
    with the random e4e encoder of :func:`transfer_models` as the essence encoder. ``spec``:
    ``size``, ``max_channels``, ``photos``, ``backend``, ``seed``, ``repeats``. One warm-up call,
    then ``repeats`` timed; ``items`` targets per call."""
    import torch

    from ..backends import select_backend
    from ..essence_encoder import EssenceEncoder
    from ..extraction.encoder_method import extract_with_encoder

    backend = select_backend(spec.get("backend"))
    e4e, _ = transfer_models(spec, backend)
    model = EssenceEncoder(e4e.encoder).eval()
    del e4e  # the generator: extraction does not render
    photos = list(spec["photos"])

    def extract():
        essences = extract_with_encoder(photos, model, device=backend, align="whole")
        if len(essences) != len(photos):
            raise RuntimeError(f"{len(essences)} essences for {len(photos)} targets")

    extract()
    backend.synchronize()
    backend.reset_peak_memory()
    times, _ = measure.time_repeats(extract, repeats=int(spec["repeats"]), synchronize=backend.synchronize)
    return {"input_size": model.input_size, "items": len(photos), "times_s": times, "median_s": measure.median(times),
            **measure.peak_memory(backend), "torch_threads": torch.get_num_threads()}
