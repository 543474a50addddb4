"""How many images go through the generator at once in extraction (``batch_size`` when not
given): the cost of an image (:mod:`essencekit.memory`) against the backend's budget
(:meth:`essencekit.Backend.memory_budget`).
"""

from __future__ import annotations

import torch

from ..memory import bytes_per_image


def plan_chunks(generator, backend, render_size: int, total: int, batch_size: int | None = None) -> tuple[int, bool]:
    """``(images per chunk, checkpoint blocks?)`` for ``total`` edited images.

    Per image, one graph costs a forward and a backward pass (F + B); the two-pass form over
    several chunks costs F + F + B; checkpointing costs one more F, in the backward pass. So:
    one chunk without checkpointing when everything fits the budget; otherwise chunks as large
    as fit without checkpointing (F + F + B, the same as one checkpointed graph but with less
    memory); checkpointing only when not even one image fits without it. A given
    ``batch_size`` is kept, checkpointed when it does not fit otherwise.
    """
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

