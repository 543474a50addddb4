"""How many images go through the generator at once (``--batch-size`` when not given).

The peak of a forward + backward pass is the activations the backward pass keeps: about 10.6
float32 tensors the size of each rendered feature map, 6.7 to 8.4 with activation
checkpointing per block (measured on the CPU at 256 to 1024 px, docs/extract.md), so the cost
of one image is estimated from the generator's channel widths up to the rendered size. The
budget is a share of the free memory, capped so that a run stays within the goals of
docs/extract.md (8 GiB on the CPU, 20 GiB on a GPU).
"""

from __future__ import annotations

from pathlib import Path

import torch

GIB = 2**30
ACTIVATION_FACTOR = 11.0
CHECKPOINTED_FACTOR = 8.5
CPU_CAP = 5 * GIB
GPU_CAP = 16 * GIB
FALLBACK = 4 * GIB


def bytes_per_image(generator, render_size: int, checkpoint: bool = False) -> int:
    """Estimated forward + backward memory of one image rendered up to ``render_size`` px."""
    factor = CHECKPOINTED_FACTOR if checkpoint else ACTIVATION_FACTOR
    config = getattr(generator, "config", None)
    if config is None:
        return int(factor * 4 * 64 * render_size**2)
    floats = sum(
        channels * (4 << i) ** 2 for i, channels in enumerate(config.channels) if (4 << i) <= render_size
    )
    return int(factor * 4 * floats)


def _available_cpu_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def memory_budget(device: torch.device) -> int:
    """Bytes the images of one chunk may take on ``device``."""
    if device.type == "cuda":
        try:
            free, _ = torch.cuda.mem_get_info(device)
            return int(min(free * 0.6, GPU_CAP))
        except RuntimeError:
            return FALLBACK
    if device.type == "mps":
        try:
            return int(min(torch.mps.recommended_max_memory() * 0.4, GPU_CAP))
        except (AttributeError, RuntimeError):
            return FALLBACK
    available = _available_cpu_bytes()
    return int(min(available * 0.5, CPU_CAP)) if available else FALLBACK


def plan_chunks(generator, backend, render_size: int, total: int, batch_size: int | None = None) -> tuple[int, bool]:
    """``(images per chunk, checkpoint blocks?)`` for ``total`` edited images.

    Per image, one graph costs a forward and a backward pass (F + B); the two-pass form over
    several chunks costs F + F + B; checkpointing costs one more F, in the backward pass. So:
    one chunk without checkpointing when everything fits the budget; otherwise chunks as large
    as fit without checkpointing (F + F + B, the same as one checkpointed graph but with less
    memory); checkpointing only when not even one image fits without it. A given
    ``batch_size`` is kept, checkpointed when it does not fit otherwise.
    """
    budget = memory_budget(backend.device)
    scale = 2 if backend.autocast_dtype in (torch.float16, torch.bfloat16) else 1
    plain = max(1, bytes_per_image(generator, render_size, False) // scale)
    if batch_size is not None:
        return batch_size, batch_size * plain > budget
    if total * plain <= budget:
        return total, False
    if plain <= budget:
        return max(1, budget // plain), False
    checkpointed = max(1, bytes_per_image(generator, render_size, True) // scale)
    return max(1, min(total, budget // checkpointed)), True


def auto_batch_size(generator, backend, render_size: int, total: int) -> int:
    """Images per chunk for ``total`` edited images (see :func:`plan_chunks`)."""
    return plan_chunks(generator, backend, render_size, total)[0]
