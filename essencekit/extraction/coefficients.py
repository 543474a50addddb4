"""Update rules for the per-source coefficients ``c_i`` (edit = ``w_i + c_i * d``).

* ``sign`` (the default, the reference's behaviour): the reference builds a fresh Adam for the
  coefficients at every step. The first step of a fresh Adam, whatever beta1/beta2, is
  ``c -= lr * g / (|g| + eps)`` with ``g = dL/dc + wd * c``, that is a step of exactly ``lr``
  against the sign of ``g``. It is computed in that closed form here.
* ``adam``: one Adam that keeps its moments across steps.
* ``fixed``: every coefficient stays 1.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .settings import COEFFICIENT_RULES as RULES

WEIGHT_DECAY = 0.01
ADAM_EPS = 1e-8


class CoefficientRule:
    """Holds the coefficients [K, N] and applies one update per step."""

    def __init__(self, rule: str, coefficients: Tensor, *, lr: float, weight_decay: float = WEIGHT_DECAY):
        if rule not in RULES:
            raise ValueError(f"coefficient rule must be one of {RULES}, got {rule!r}")
        self.rule = rule
        self.lr = float(lr)
        self.weight_decay = float(weight_decay)
        self.values = coefficients.detach().clone().requires_grad_(rule != "fixed")
        self._adam = (
            torch.optim.Adam([self.values], lr=self.lr, weight_decay=self.weight_decay) if rule == "adam" else None
        )

    def zero_grad(self) -> None:
        self.values.grad = None

    @torch.no_grad()
    def step(self) -> None:
        if self.rule == "fixed":
            return
        if self.rule == "adam":
            self._adam.step()
            return
        grad = self.values.grad
        if grad is None:  # as torch's Adam: a parameter without a gradient is left alone
            return
        grad = grad + self.weight_decay * self.values
        self.values.sub_(self.lr * grad / (grad.abs() + ADAM_EPS))
