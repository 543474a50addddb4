"""An honest remaining-time estimate for the optimisation loop.

The first step pays for warm-up (allocations, kernel selection, lazy loading), so it is left
out once later steps exist; the estimate is the median of the recent steps times the steps
left, which neither a slow first step nor one hiccup can swing.
"""

from __future__ import annotations

import statistics

HOURS_WARNING = 3600.0


class EtaEstimator:
    def __init__(self, steps: int, window: int = 20):
        self.steps = steps
        self.window = window
        self.durations: list[float] = []
        self.warned = False

    def update(self, seconds: float) -> None:
        self.durations.append(float(seconds))

    @property
    def per_step(self) -> float | None:
        if not self.durations:
            return None
        recent = self.durations[1:] if len(self.durations) > 1 else self.durations
        return statistics.median(recent[-self.window :])

    def remaining(self) -> float | None:
        per_step = self.per_step
        return None if per_step is None else per_step * (self.steps - len(self.durations))

    def should_warn(self, threshold: float = HOURS_WARNING, after_steps: int = 3) -> bool:
        """True once, when the first steps show that the run will take over ``threshold`` s."""
        if self.warned or len(self.durations) < min(after_steps, self.steps):
            return False
        remaining = self.remaining()
        if remaining is not None and remaining > threshold:
            self.warned = True
            return True
        return False


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"
