"""The learning-rate schedule of the reference optimisation.

``lr(t) = lr * min(1, t / rampup) * (0.5 - 0.5 cos(pi * min(1, (1 - t) / rampdown)))`` with
``t = step / steps``: zero at the first step, full after 0.5 % of the run, flat until 25 %,
then a half cosine down to about zero at the end.
"""

from __future__ import annotations

import math

RAMPUP = 0.005
RAMPDOWN = 0.75


def schedule_factor(t: float, rampup: float = RAMPUP, rampdown: float = RAMPDOWN) -> float:
    """The multiplier of the base learning rate at progress ``t`` in [0, 1]."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return ramp * min(1.0, t / rampup)


def learning_rate(step: int, steps: int, lr: float) -> float:
    """The direction's learning rate at ``step`` (0-based) of ``steps``."""
    return lr * schedule_factor(step / steps)
