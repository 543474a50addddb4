"""What one generated image costs in memory: the basis of every automatic batch size.

A pass keeps a number of float32 copies of each feature map the generator renders: about 10.6
for forward + backward (6.7 to 8.4 with activation checkpointing per block), about 3 for a
forward pass without autograd (measured on the CPU at 256 to 1024 px, docs/extract.md). The
cost of an image is that factor times the generator's channel widths up to the rendered size;
the budget it is weighed against is the backend's (:meth:`essencekit.Backend.memory_budget`).
"""

from __future__ import annotations

BACKWARD_FACTOR = 11.0
CHECKPOINTED_FACTOR = 8.5
FORWARD_FACTOR = 3.0


def feature_map_floats(generator, render_size: int) -> int:
    """Floats in one copy of every feature map rendered up to ``render_size`` px, one image."""
    config = getattr(generator, "config", None)
    if config is None:
        return 64 * render_size**2
    return sum(channels * (4 << i) ** 2 for i, channels in enumerate(config.channels) if (4 << i) <= render_size)


def bytes_per_image(generator, render_size: int, *, backward: bool = True, checkpoint: bool = False) -> int:
    """Estimated peak memory of one image rendered up to ``render_size`` px: forward + backward
    (``checkpoint``: with activation checkpointing), or a forward pass alone."""
    factor = (CHECKPOINTED_FACTOR if checkpoint else BACKWARD_FACTOR) if backward else FORWARD_FACTOR
    return int(factor * 4 * feature_map_floats(generator, render_size))
