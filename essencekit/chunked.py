"""Many generated images through CLIP in chunks that fit the backend's memory, with the
gradient of a loss on all their embeddings: shared by extraction (restarts x sources) and
encoder training (a target's sources).

:func:`plan_chunks` sizes the chunks from what an image costs (:mod:`essencekit.memory`) and
the backend's budget; :func:`backward_in_chunks` back-propagates through them, in one graph
when they fit together, else in two passes with one chunk's graph alive at a time.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .memory import bytes_per_image


def plan_chunks(generator, backend, render_size: int, total: int, batch_size: int | None = None) -> tuple[int, bool]:
    """``(images per chunk, checkpoint blocks?)`` for ``total`` edited images.

    Per image, one graph costs a forward and a backward pass (F + B); the two-pass form over
    several chunks costs F + F + B; checkpointing costs one more F, in the backward pass. So:
    one chunk without checkpointing when everything fits the budget; otherwise chunks as large
    as fit without checkpointing (F + F + B, the same as one checkpointed graph but with less
    memory); checkpointing only when not even one image fits without it. A given
    ``batch_size`` is kept, checkpointed when it does not fit otherwise.
    """
    import torch

    budget = backend.memory_budget()
    scale = 2 if backend.autocast_dtype in (torch.float16, torch.bfloat16) else 1
    plain = max(1, bytes_per_image(generator, render_size) // scale)
    if batch_size is not None:
        return batch_size, batch_size * plain > budget
    if total * plain <= budget:
        return total, False
    if plain <= budget:
        return max(1, budget // plain), False
    checkpointed = max(1, bytes_per_image(generator, render_size, checkpoint=True) // scale)
    return max(1, min(total, budget // checkpointed)), True


def chunk_slices(total: int, batch_size: int | None) -> list[slice]:
    size = total if not batch_size else min(batch_size, total)
    return [slice(start, min(start + size, total)) for start in range(0, total, size)]


def backward_in_chunks(
    embed_chunk: Callable[[slice], Tensor],
    chunks: list[slice],
    shape: tuple[int, int],
    loss_fn: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]],
    *,
    two_pass: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Back-propagate ``loss_fn(E).sum()`` for the embeddings ``E`` [K, N, D] of all chunks
    (``embed_chunk(part)`` renders and encodes one chunk of the K * N images) and return the
    per-restart ``(loss, transfer, consistency)`` measured on them.

    ``two_pass``: first every chunk without a graph, then the loss's gradient with respect to
    the embeddings is pushed back through each chunk in turn (one chunk's graph alive at a
    time); otherwise one graph over all chunks.
    """
    if not two_pass:
        embeddings = torch.cat([embed_chunk(part) for part in chunks]).view(*shape, -1)
        losses = loss_fn(embeddings)
        losses[0].sum().backward()
        return losses
    with torch.no_grad():
        parts = [embed_chunk(part) for part in chunks[:-1]]
    # The last chunk keeps its graph from the first pass, and is back-propagated first: one
    # forward less per step, and still never more than one chunk's graph alive.
    last = embed_chunk(chunks[-1])
    embeddings = torch.cat(parts + [last.detach()]).view(*shape, -1).requires_grad_(True)
    losses = loss_fn(embeddings)
    losses[0].sum().backward()
    grad = embeddings.grad.view(shape[0] * shape[1], -1)
    last.backward(grad[chunks[-1]])
    del last
    for part in chunks[:-1]:
        embed_chunk(part).backward(grad[part])
    return tuple(t.detach() for t in losses)
