"""The paper's measures of an edit, as plain functions of embeddings.

All embeddings are ``[N, D]`` rows (one per source); cosines are computed on L2-normalised
rows, so un-normalised CLIP features and normalised ArcFace features are treated alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Summary:
    """Mean and (population) standard deviation of one measure over ``n`` values; ``None``
    when there is nothing to measure (no values, or a measure that needs two sources)."""

    mean: float | None
    std: float | None
    n: int

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std, "n": self.n}

    def format(self, digits: int = 3) -> str:
        if self.mean is None:
            return "n/a"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


EMPTY = Summary(None, None, 0)


def summarize(values: Tensor | list[float]) -> Summary:
    values = torch.as_tensor(values, dtype=torch.float64).reshape(-1)
    if values.numel() == 0:
        return EMPTY
    # population std: the spread of these sources, not an estimate for others (n may be 1)
    return Summary(float(values.mean()), float(values.std(unbiased=False)), int(values.numel()))


def paired_cosine(a: Tensor, b: Tensor) -> Tensor:
    """Cosine of each row of ``a`` with the same row of ``b`` (or with ``b``'s single row)."""
    a, b = a.double(), b.double()
    if b.shape[0] == 1:
        b = b.expand_as(a)
    # rounding can put the cosine of near-parallel rows a hair outside [-1, 1] (1.0000000000000002
    # on some CPUs), which no reader of a cosine should ever see
    return F.cosine_similarity(a, b, dim=1).clamp(-1.0, 1.0)


def mean_pairwise_cosine(changes: Tensor) -> float | None:
    """Mean cosine over all pairs ``i < j`` of the rows of ``changes``: the paper's consistency
    (the same edit moves every source the same way in CLIP space). ``None`` with fewer than two
    rows or when a change is zero (strength 0: there is no direction to compare)."""
    if changes.shape[0] < 2:
        return None
    changes = changes.double()
    norms = changes.norm(dim=1)
    if bool((norms <= 1e-12 * max(1.0, float(norms.max()))).any()):
        return None
    unit = changes / norms[:, None]
    gram = (unit @ unit.T).clamp(-1.0, 1.0)  # see paired_cosine: rounding must not leave [-1, 1]
    n = changes.shape[0]
    pairs = gram[torch.triu_indices(n, n, offset=1).unbind()]
    value = float(pairs.mean())
    return value if math.isfinite(value) else None


def clip_changes(edited: Tensor, sources: Tensor) -> Tensor:
    """The CLIP-space change of each source: normalised edit minus normalised source."""
    return F.normalize(edited.double(), dim=1) - F.normalize(sources.double(), dim=1)
