"""The optimisation loop: K restarts of one essence direction, batched.

For restart ``k`` the edited latents are ``w_n + c[k, n] * d[k]`` for the N sources ``w_n``;
the loop minimises ``lambda_t * transfer + lambda_c * consistency`` on their CLIP embeddings
(see :mod:`essencekit.clip_losses`) with Adam on ``d`` (scheduled learning rate, coupled weight decay) and
one of the coefficient rules of :mod:`.coefficients`.

The generator and the encoder are used as given, frozen: ``generator.synthesis(w_plus,
noise="const"[, max_size=...])`` and ``encoder(images) -> [B, D]``, so any encoder object works
(the reference trace is replayed with a fixed stand-in encoder).

Memory: the K * N edited images go through the generator in chunks of ``batch_size``. The
consistency loss couples every source of a restart, so chunks cannot simply be
back-propagated one after another. The exact two-pass form used instead:

1. render and encode every chunk without an autograd graph -> embeddings ``E``;
2. compute the loss on ``E`` as a leaf tensor -> ``dL/dE`` (and the loss that is reported
   and compared for the best snapshot);
3. render and encode each chunk again with a graph and back-propagate ``dL/dE[chunk]``;
   gradients of ``d`` and ``c`` accumulate across chunks. (The last chunk keeps its graph
   from step 1 instead of being rendered twice.)

It costs one extra forward pass per chunk but one; when everything fits in one chunk the loop
keeps the graph of the single pass instead (measured faster: no second forward).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from ..chunked import backward_in_chunks, chunk_slices
from ..clip_losses import total_loss
from .coefficients import WEIGHT_DECAY, CoefficientRule
from .schedule import learning_rate
from .settings import Recipe, declare, finite_number, whole_number


@dataclass
class OptimiseSettings(Recipe):
    """Hyper-parameters of the loop: the :class:`~essencekit.extraction.settings.Recipe` (its
    defaults, the published recipe, and checks), and how the loop runs on this device."""

    coefficient_lr: float | None = declare(None, finite_number(positive=True, optional=True))  # None: the direction's lr
    coefficient_weight_decay: float = declare(WEIGHT_DECAY, finite_number())
    render_size: int | None = declare(None, whole_number(1, optional=True))  # render only up to this size (fast)
    checkpoint: bool = False  # recompute each synthesis block in the backward pass (less memory)
    two_pass: bool | None = None  # None: only when there is more than one chunk


@dataclass
class StepReport:
    """What the loop reports after each step (losses measured before that step's update)."""

    step: int  # 0-based
    steps: int
    lr: float
    loss: Tensor  # [K]
    transfer: Tensor  # [K]
    consistency: Tensor  # [K]
    best_loss: Tensor  # [K]
    seconds: float  # this step
    elapsed: float  # since the loop started


@dataclass
class OptimiseResult:
    """Per restart (first dimension K): the best snapshot and the final parameters.

    ``best_*`` are the parameters whose measured loss was the lowest, with that loss and the
    0-based step it was measured at (-1 for a restart never measured). ``history`` holds the
    losses of every step done, [steps_done, K].
    """

    best_direction: Tensor
    best_coefficients: Tensor
    best_loss: Tensor
    best_transfer: Tensor
    best_consistency: Tensor
    best_step: Tensor
    final_direction: Tensor
    final_coefficients: Tensor
    history: dict[str, Tensor] = field(default_factory=dict)
    steps_done: int = 0
    interrupted: bool = False
    seconds: float = 0.0

    @property
    def restarts(self) -> int:
        return self.best_direction.shape[0]


def render(generator, w_plus: Tensor, render_size: int | None = None) -> Tensor:
    """Images of ``w_plus`` with the generator's constant noise (optionally only up to ``render_size``)."""
    if render_size is not None and render_size != getattr(generator, "size", None):
        return generator.synthesis(w_plus, noise="const", max_size=render_size)
    return generator.synthesis(w_plus, noise="const")


def working_dtype(tensor: Tensor) -> torch.dtype:
    """float64 inputs keep float64 (rounding-free checks of the loop's invariants); everything
    else, half-precision autocast outputs included, is carried in float32."""
    return torch.float64 if tensor.dtype == torch.float64 else torch.float32


def embed_latents(
    generator, encoder, latents: Tensor, *, batch_size: int | None = None, render_size: int | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> Tensor:
    """CLIP embeddings [B, D] (float32, or float64 for float64 latents; no graph) of the images
    of ``latents`` [B, n_latent, style_dim]."""
    parts, dtype = [], working_dtype(latents)
    with torch.no_grad():
        for part in chunk_slices(latents.shape[0], batch_size):
            with autocast():
                parts.append(encoder(render(generator, latents[part], render_size)).to(dtype))
    return torch.cat(parts)


@contextlib.contextmanager
def _checkpointing(generator, enabled: bool):
    if not hasattr(generator, "checkpoint_blocks"):
        yield
        return
    previous = generator.checkpoint_blocks
    generator.checkpoint_blocks = enabled
    try:
        yield
    finally:
        generator.checkpoint_blocks = previous


def optimise(
    generator,
    encoder: Callable[[Tensor], Tensor],
    sources: Tensor,
    target: Tensor,
    init: Tensor,
    settings: OptimiseSettings | None = None,
    *,
    source_embeddings: Tensor | None = None,
    callback: Callable[[StepReport], None] | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> OptimiseResult:
    """Optimise K essence directions at once.

    ``sources`` [N, n_latent, style_dim]: the source latents (on the device to work on);
    ``target`` [D] or [1, D]: the target's CLIP embedding; ``init`` [K, n_latent, style_dim]
    (or [n_latent, style_dim] for K = 1): the initial directions. ``source_embeddings``
    [N, D] skips encoding the sources (they are encoded once otherwise). ``callback`` gets a
    :class:`StepReport` after every step.

    Ctrl-C (``KeyboardInterrupt``, also from ``callback``) ends the loop early: the result
    then has ``interrupted=True`` and the best snapshots so far.

    The loop runs in float32, or in float64 when ``init`` is float64 (then the generator and
    encoder must be float64 too).
    """
    settings = settings or OptimiseSettings()
    device = sources.device
    if init.dim() == 2:
        init = init.unsqueeze(0)
    if init.dim() != 3 or init.shape[1:] != sources.shape[1:]:
        raise ValueError(f"init must be [K, {sources.shape[1]}, {sources.shape[2]}], got {list(init.shape)}")
    restarts, n_sources = init.shape[0], sources.shape[0]
    dtype = working_dtype(init)
    sources = sources.detach().to(dtype)
    target = target.detach().to(device, dtype).reshape(-1)
    use_checkpoint = settings.checkpoint
    chunks = chunk_slices(restarts * n_sources, settings.batch_size)
    two_pass = len(chunks) > 1 if settings.two_pass is None else settings.two_pass
    loss_options = dict(
        lambda_transfer=settings.lambda_transfer, lambda_consistency=settings.lambda_consistency,
        form=settings.consistency,
    )

    if source_embeddings is None:
        source_embeddings = embed_latents(
            generator, encoder, sources, batch_size=settings.batch_size, render_size=settings.render_size,
            autocast=autocast,
        )
    source_embeddings = source_embeddings.detach().to(device, dtype)

    direction = init.detach().to(device, dtype).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([direction], lr=settings.lr, weight_decay=settings.weight_decay)
    coefficient_lr = settings.lr if settings.coefficient_lr is None else settings.coefficient_lr
    coefficients = CoefficientRule(
        settings.coefficients, torch.ones(restarts, n_sources, device=device, dtype=dtype),
        lr=coefficient_lr, weight_decay=settings.coefficient_weight_decay,
    )
    restart_of = torch.arange(restarts, device=device).repeat_interleave(n_sources)
    source_of = torch.arange(n_sources, device=device).repeat(restarts)

    def embed_chunk(part: slice) -> Tensor:
        k, n = restart_of[part], source_of[part]
        latents = sources[n] + coefficients.values[k, n][:, None, None] * direction[k]
        with autocast():
            return encoder(render(generator, latents, settings.render_size)).to(dtype)

    best = dict(
        direction=direction.detach().clone(), coefficients=coefficients.values.detach().clone(),
        loss=torch.full((restarts,), math.inf, dtype=dtype), transfer=torch.full((restarts,), math.nan, dtype=dtype),
        consistency=torch.full((restarts,), math.nan, dtype=dtype), step=torch.full((restarts,), -1, dtype=torch.long),
    )
    history = {"loss": [], "transfer": [], "consistency": []}
    interrupted = False
    start = time.perf_counter()
    with _checkpointing(generator, use_checkpoint):
        try:
            for step in range(settings.steps):
                step_start = time.perf_counter()
                lr = learning_rate(step, settings.steps, settings.lr)
                optimizer.param_groups[0]["lr"] = lr
                optimizer.zero_grad(set_to_none=True)
                coefficients.zero_grad()

                loss, transfer, consistency = backward_in_chunks(
                    embed_chunk, chunks, (restarts, n_sources),
                    lambda e: total_loss(e, source_embeddings, target, **loss_options), two_pass=two_pass,
                )
                loss, transfer, consistency = (t.detach().to(dtype).cpu() for t in (loss, transfer, consistency))
                # The snapshot is of the parameters this loss was measured on, i.e. before
                # the update below (the reference saved them after it, one step late).
                improved = loss < best["loss"]
                if improved.any():
                    on_device = improved.to(device)
                    best["direction"][on_device] = direction.detach()[on_device]
                    best["coefficients"][on_device] = coefficients.values.detach()[on_device]
                    best["loss"][improved] = loss[improved]
                    best["transfer"][improved] = transfer[improved]
                    best["consistency"][improved] = consistency[improved]
                    best["step"][improved] = step
                history["loss"].append(loss)
                history["transfer"].append(transfer)
                history["consistency"].append(consistency)

                coefficients.step()
                optimizer.step()
                if callback is not None:
                    now = time.perf_counter()
                    callback(StepReport(
                        step=step, steps=settings.steps, lr=lr, loss=loss, transfer=transfer,
                        consistency=consistency, best_loss=best["loss"].clone(), seconds=now - step_start,
                        elapsed=now - start,
                    ))
        except KeyboardInterrupt:
            interrupted = True
            optimizer.zero_grad(set_to_none=True)
            coefficients.zero_grad()

    steps_done = len(history["loss"])
    stacked = {
        key: torch.stack(values) if values else torch.zeros(0, restarts, dtype=dtype) for key, values in history.items()
    }
    return OptimiseResult(
        best_direction=best["direction"].cpu(),
        best_coefficients=best["coefficients"].cpu(),
        best_loss=best["loss"],
        best_transfer=best["transfer"],
        best_consistency=best["consistency"],
        best_step=best["step"],
        final_direction=direction.detach().cpu(),
        final_coefficients=coefficients.values.detach().cpu(),
        history=stacked,
        steps_done=steps_done,
        interrupted=interrupted,
        seconds=time.perf_counter() - start,
    )


def evaluate_directions(
    generator,
    encoder: Callable[[Tensor], Tensor],
    sources: Tensor,
    target: Tensor,
    directions: Tensor,
    strengths: Tensor,
    *,
    lambda_transfer: float = 1.0,
    lambda_consistency: float = 0.6,
    consistency: str = "raw",
    batch_size: int | None = None,
    render_size: int | None = None,
    source_embeddings: Tensor | None = None,
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext,
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, transfer, consistency)`` [K] of directions [K, L, S] applied at ``strengths``
    [K] to ``sources`` [M, L, S] (no gradients): how the restarts compare on sources that took
    no part in their optimisation."""
    device = sources.device
    directions = directions.to(device, torch.float32)
    strengths = torch.as_tensor(strengths, dtype=torch.float32).to(device).reshape(-1)
    restarts, count = directions.shape[0], sources.shape[0]
    if source_embeddings is None:
        source_embeddings = embed_latents(
            generator, encoder, sources, batch_size=batch_size, render_size=render_size, autocast=autocast
        )
    edited = (sources[None] + strengths[:, None, None, None] * directions[:, None]).reshape(
        restarts * count, *sources.shape[1:]
    )
    embeddings = embed_latents(
        generator, encoder, edited, batch_size=batch_size, render_size=render_size, autocast=autocast
    ).view(restarts, count, -1)
    with torch.no_grad():
        losses = total_loss(
            embeddings, source_embeddings.to(device, torch.float32), target.to(device, torch.float32).reshape(-1),
            lambda_transfer=lambda_transfer, lambda_consistency=lambda_consistency, form=consistency,
        )
    return tuple(t.float().cpu() for t in losses)
