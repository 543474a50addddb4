"""The encoder variant's training loss, per target, on the shared CLIP losses.

For target ``b`` with direction ``d_b`` (the encoder's raw output) and S fixed sources ``w_s``,
every coefficient 1 (TargetCLIP's ``training/coach.py``):

    loss_b = transfer(E(G(w_s + d_b)), E(target_b))
             + lambda_consistency * consistency(E(G(w_s + d_b)) - E(G(w_s)))   (raw deltas)
             + lambda_norm * ||d_b||

and the batch's loss is the mean over its targets. The norm is each target's own: the
reference added the norm of the whole batch's directions for every target, which is the same
at batch 1 and wrong above it. The target's CLIP input is the training image itself (256 px
in [-1, 1]) brought to the generator's size by bilinear interpolation, then given to CLIP
exactly as a generated image (the raw mode), as the reference does.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..chunked import backward_in_chunks, chunk_slices
from ..clip_losses import consistency_loss, transfer_loss


@dataclass
class LossTerms:
    """The batch means of the loss and its three terms, as Python floats."""

    loss: float
    similarity: float
    consistency: float
    norm: float

    def as_dict(self) -> dict[str, float]:
        return {"loss": self.loss, "similarity": self.similarity, "consistency": self.consistency, "norm": self.norm}

    @staticmethod
    def mean(terms: list[LossTerms], weights: list[int] | None = None) -> LossTerms:
        weights = weights or [1] * len(terms)
        total = sum(weights)
        return LossTerms(*(
            sum(w * getattr(t, name) for t, w in zip(terms, weights)) / total
            for name in ("loss", "similarity", "consistency", "norm")
        ))


class EssenceLoss:
    """The loss of directions for targets, with the generator and CLIP frozen and shared.

    ``clip`` is any callable mapping generated images [B, 3, S, S] in [-1, 1] to embeddings
    [B, D] (a :class:`~essencekit.clip.ClipEncoder`, or a stand-in in tests). ``chunk``: the
    most edited images rendered at once (``None``: all of a target's sources). The sources'
    own embeddings are computed once: the reference recomputed them at every step, but the
    generator renders them with constant noise, so they never change.
    """

    def __init__(self, generator, clip: Callable[[Tensor], Tensor], sources: Tensor, *,
                 lambda_consistency: float = 0.5, lambda_norm: float = 3e-3, autocast=None, chunk: int | None = None):
        self.generator, self.clip, self.chunk = generator, clip, chunk
        self.lambda_consistency, self.lambda_norm = lambda_consistency, lambda_norm
        self.autocast = autocast or contextlib.nullcontext
        parameter = next(generator.parameters())
        self.sources = sources.to(device=parameter.device, dtype=parameter.dtype)
        with torch.no_grad():
            self.source_embeddings = torch.cat([self._embed(self.sources[part])
                                                for part in chunk_slices(self.sources.shape[0], chunk)])

    def _embed(self, latents: Tensor) -> Tensor:
        with self.autocast():
            images = self.generator.synthesis(latents, noise="const")
        return self.clip(images.to(self.sources.dtype))

    @torch.no_grad()
    def target_embeddings(self, targets: Tensor) -> Tensor:
        """[B, D] CLIP embeddings of training targets [B, 3, 256, 256] in [-1, 1]."""
        size = self.generator.size
        resized = F.interpolate(targets.to(self.sources), size=(size, size), mode="bilinear",
                                align_corners=False, antialias=False)
        return self.clip(resized)

    def _terms(self, embeddings: Tensor, direction: Tensor, target_embedding: Tensor) -> tuple[Tensor, ...]:
        """``(loss, similarity, consistency, norm)`` of one direction from its edited sources'
        embeddings [1, S, D] (each [1])."""
        similarity = transfer_loss(embeddings, target_embedding)
        if self.lambda_consistency:
            consistency = consistency_loss(embeddings, self.source_embeddings, "raw")
        else:
            consistency = torch.zeros_like(similarity)
        norm = direction.norm().reshape(1)
        loss = similarity + self.lambda_consistency * consistency + self.lambda_norm * norm
        return loss, similarity, consistency, norm

    def backward(self, directions: Tensor, target_embeddings: Tensor) -> LossTerms:
        """The batch's loss terms, with the gradient of the batch loss accumulated into
        whatever produced ``directions`` [B, n_latent, style_dim].

        One target's images are held at a time, and of those only a chunk of ``chunk``
        sources when they do not fit together (two passes, :func:`essencekit.chunked.backward_in_chunks`):
        each target's loss is differentiated with respect to a detached copy of its direction,
        and the encoder then gets one backward pass with the collected gradients (so a
        DistributedDataParallel encoder averages them across processes once per step)."""
        leaf = directions.detach().to(self.sources.dtype).requires_grad_(True)
        count, n_sources = leaf.shape[0], self.sources.shape[0]
        chunks = chunk_slices(n_sources, self.chunk)
        sums = torch.zeros(4, dtype=torch.float64)
        for b in range(count):
            direction = leaf[b]

            def embed_chunk(part: slice, direction: Tensor = direction) -> Tensor:
                return self._embed(self.sources[part] + direction)

            def loss_fn(embeddings: Tensor, direction: Tensor = direction, b: int = b) -> tuple[Tensor, ...]:
                loss, *terms = self._terms(embeddings, direction, target_embeddings[b])
                return (loss / count, loss, *terms)

            _, *terms = backward_in_chunks(embed_chunk, chunks, (1, n_sources), loss_fn, two_pass=len(chunks) > 1)
            sums += torch.cat(terms).detach().double().cpu()
        if directions.requires_grad:
            directions.backward(leaf.grad.to(directions.dtype))
        return LossTerms(*(float(v) for v in sums / count))

    @torch.no_grad()
    def evaluate(self, directions: Tensor, target_embeddings: Tensor) -> LossTerms:
        """The batch's loss terms, without gradients (validation)."""
        rows = []
        for direction, target in zip(directions.to(self.sources.dtype), target_embeddings):
            embeddings = torch.cat([self._embed(self.sources[part] + direction)
                                    for part in chunk_slices(self.sources.shape[0], self.chunk)])
            rows.append(torch.cat(self._terms(embeddings.unsqueeze(0), direction, target)))
        return LossTerms(*(float(v) for v in torch.stack(rows).double().mean(0)))
