"""The TargetCLIP losses on CLIP embeddings, shared by both ways of finding an essence.

Embeddings arrive as ``[K, N, D]`` (K directions, N sources): every function returns one value
per direction, ``[K]``, so directions optimised in one batch (extract's restarts, the encoder
variant's targets) stay independent (the total loss is their sum, and the gradient of a sum
does not mix its terms).

torch is imported inside the functions: the settings modules the command line reads at
start-up take :data:`CONSISTENCY_FORMS` from here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import Tensor

#: ``raw``: CLIP deltas of the un-normalised embeddings (the published essences' recipe and the
#: encoder variant's); ``normalized``: each embedding L2-normalised first (the later script).
CONSISTENCY_FORMS = ("raw", "normalized")


def transfer_loss(edited: Tensor, target: Tensor) -> Tensor:
    """``1 - mean_i cos(edited_i, target)`` per direction.

    ``edited`` [K, N, D] (or [N, D]), ``target`` [D] or [1, D]; both un-normalised.
    """
    import torch.nn.functional as F

    squeeze = edited.dim() == 2
    if squeeze:
        edited = edited.unsqueeze(0)
    target = F.normalize(target.reshape(1, 1, -1).to(edited.dtype), dim=-1)
    similarity = (F.normalize(edited, dim=-1) * target).sum(-1)
    loss = 1.0 - similarity.mean(-1)
    return loss[0] if squeeze else loss


def consistency_loss(edited: Tensor, sources: Tensor, form: str = "raw") -> Tensor:
    """Mean over ordered pairs ``i != j`` of ``1 - cos(delta_i, delta_j)`` per direction.

    ``delta_i = edited_i - source_i``. ``form="raw"`` differences the un-normalised
    embeddings (the published essences' recipe); ``"normalized"`` L2-normalises each
    embedding first (the later optimisation script). ``edited`` [K, N, D] (or [N, D]),
    ``sources`` [N, D]. With a single source there is no pair and the loss is 0.
    """
    import torch
    import torch.nn.functional as F

    if form not in CONSISTENCY_FORMS:
        raise ValueError(f"consistency form must be one of {CONSISTENCY_FORMS}, got {form!r}")
    squeeze = edited.dim() == 2
    if squeeze:
        edited = edited.unsqueeze(0)
    sources = sources.to(edited.dtype)
    if form == "normalized":
        edited, sources = F.normalize(edited, dim=-1), F.normalize(sources, dim=-1)
    n = edited.shape[-2]
    if n < 2:
        loss = edited.new_zeros(edited.shape[0])
    else:
        deltas = F.normalize(edited - sources, dim=-1)
        gram = deltas @ deltas.transpose(-1, -2)
        # The diagonal is left out explicitly rather than assumed to be 1: a zero delta (a
        # zero coefficient) would otherwise count as a perfect pair with itself.
        off_diagonal = gram.sum((-1, -2)) - torch.diagonal(gram, dim1=-2, dim2=-1).sum(-1)
        loss = 1.0 - off_diagonal / (n * (n - 1))
    return loss[0] if squeeze else loss


def total_loss(
    edited: Tensor, sources: Tensor, target: Tensor, *, lambda_transfer: float = 1.0,
    lambda_consistency: float = 0.6, form: str = "raw",
) -> tuple[Tensor, Tensor, Tensor]:
    """``(loss, transfer, consistency)``, each [K]: ``loss = lt * transfer + lc * consistency``."""
    import torch

    transfer = transfer_loss(edited, target)
    if lambda_consistency:
        consistency = consistency_loss(edited, sources, form)
    else:
        consistency = torch.zeros_like(transfer)
    return lambda_transfer * transfer + lambda_consistency * consistency, transfer, consistency
