"""The optimisers of encoder training: Ranger (the reference's) and AdamW.

Ranger, as the e4e/TargetCLIP training code uses it, is three published pieces together, and
each has a well-kept form in PyTorch or a few lines here:

* RAdam with betas (0.95, 0.999), eps 6.1e-5 and no weight decay: ``torch.optim.RAdam``
  (its rectification threshold, rho_t > 5, is Ranger's ``N_sma_threshhold = 5``, and its
  step equals Ranger's);
* gradient centralisation: every gradient with more than one dimension has its mean over all
  but the first dimension removed before the step;
* Lookahead: every ``k = 6`` steps the slow weights move half-way (alpha 0.5) to the fast
  weights, and the fast weights restart from there.

The slow weights and the step count are part of :meth:`Ranger.state_dict`, so a resumed run
continues exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

BETAS = (0.95, 0.999)
EPS = 6.1e-5
LOOKAHEAD_STEPS = 6
LOOKAHEAD_ALPHA = 0.5


class Ranger:
    """RAdam + gradient centralisation + Lookahead over ``params``."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float, *, k: int = LOOKAHEAD_STEPS,
                 alpha: float = LOOKAHEAD_ALPHA, centralize: bool = True):
        self.params = [p for p in params if p.requires_grad]
        self.inner = torch.optim.RAdam(self.params, lr=lr, betas=BETAS, eps=EPS, weight_decay=0.0)
        self.k, self.alpha, self.centralize = k, alpha, centralize
        self.slow = [p.detach().clone() for p in self.params]
        self.steps = 0

    @property
    def param_groups(self):
        return self.inner.param_groups

    def zero_grad(self) -> None:
        self.inner.zero_grad(set_to_none=True)

    @torch.no_grad()
    def step(self) -> None:
        if self.centralize:
            for p in self.params:
                if p.grad is not None and p.grad.dim() > 1:
                    p.grad.sub_(p.grad.mean(dim=tuple(range(1, p.grad.dim())), keepdim=True))
        self.inner.step()
        self.steps += 1
        if self.steps % self.k == 0:
            for p, slow in zip(self.params, self.slow):
                slow.add_(p - slow, alpha=self.alpha)
                p.copy_(slow)

    def state_dict(self) -> dict:
        return {"radam": self.inner.state_dict(), "slow": [s.clone() for s in self.slow], "steps": self.steps,
                "k": self.k, "alpha": self.alpha, "centralize": self.centralize}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["radam"])
        if len(state["slow"]) != len(self.slow):
            raise ValueError("the saved Lookahead state is for a different set of parameters")
        for slow, saved in zip(self.slow, state["slow"]):
            slow.copy_(saved)
        self.steps = int(state["steps"])
        self.k, self.alpha, self.centralize = int(state["k"]), float(state["alpha"]), bool(state["centralize"])


def make_optimizer(name: str, params: Iterable[torch.nn.Parameter], lr: float):
    """``"ranger"`` (the reference's) or ``"adamw"`` (torch's, default betas and weight decay)."""
    params = [p for p in params if p.requires_grad]
    if name == "ranger":
        return Ranger(params, lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}")
