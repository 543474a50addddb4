"""``--essence NAME_OR_PATH[@WEIGHT]``: which essences a run applies, and how they add up.

A spec names an essence file (``.pt``, ``.safetensors`` or a TargetCLIP ``.npy``) or a
published essence (``joker``: an artifact of kind ``essence`` in the weight cache, see
``essencekit pull-weights essences``); ``@0.5`` scales it. Several essences add up:
``w + s * sum_i(weight_i * d_i)``. Without ``--strength`` each essence is applied at its own
recommended strength, ``w + sum_i(weight_i * r_i * d_i)`` (``r_i`` = 1.0 for the published
essences); ``--strength s`` replaces every ``r_i`` by ``s``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from ..errors import EssencekitError
from ..essence import Essence, load_essence


@dataclass
class EssenceTerm:
    """One ``--essence``: the loaded essence, its ``weight``, its ``label`` in output names
    (artifact name or file stem) and ``source`` (the file or artifact it came from)."""

    essence: Essence
    weight: float
    label: str
    source: str

    @property
    def recommended_strength(self) -> float:
        return self.essence.recommended_strength


def split_spec(spec: str) -> tuple[str, float]:
    """``"joker@0.5"`` -> ``("joker", 0.5)``; ``"a@b.pt"`` stays a name (``@`` is only a weight
    when a number follows the last one)."""
    name, sep, tail = spec.rpartition("@")
    if sep and name:
        try:
            weight = float(tail)
        except ValueError:
            return spec, 1.0
        if not math.isfinite(weight):
            raise EssencekitError(f"--essence {spec}: the weight after '@' must be a finite number")
        return name, weight
    return spec, 1.0


def published_essences() -> list[str]:
    from ..plugins import registered

    return sorted(name for name, artifact in registered("weights").items() if artifact.kind == "essence")


def load_term(spec) -> EssenceTerm:
    """Resolve one spec (a string, a path, an :class:`Essence` or an ``(essence, weight)`` pair)."""
    if isinstance(spec, tuple) and len(spec) == 2:
        term = load_term(spec[0])
        term.weight *= float(spec[1])
        return term
    if isinstance(spec, Essence):
        return EssenceTerm(spec, 1.0, spec.name or "essence", "in-memory essence")
    text = os.fspath(spec)
    if isinstance(spec, os.PathLike):
        name, weight = text, 1.0
    else:
        name, weight = split_spec(text)
    path = Path(name)
    if path.is_file():
        return EssenceTerm(load_essence(path), weight, path.stem, str(path))
    published = published_essences()
    if name in published:
        from ..cache import resolve_artifact

        return EssenceTerm(load_essence(resolve_artifact(name)), weight, name, f"published essence {name}")
    if path.suffix or "/" in name or os.sep in name:
        raise EssencekitError(f"--essence {text}: essence file not found: {path}")
    listing = ", ".join(published) or "none registered"
    raise EssencekitError(
        f"--essence {text}: no such essence file, and no published essence of that name (published: {listing}; "
        "download them with `essencekit pull-weights essences`)"
    )


class EssenceMix:
    """The essences of a run: their sum, its label (``joker+keanu``) and the edit per strength."""

    def __init__(self, specs):
        if isinstance(specs, (str, os.PathLike, Essence, tuple)):
            specs = [specs]
        self.terms = [load_term(spec) for spec in specs]
        if not self.terms:
            raise EssencekitError("give at least one essence (--essence NAME_OR_PATH)")
        self.label = "+".join(term.label for term in self.terms)

    def check(self, n_latent: int, style_dim: int, generator: str) -> None:
        """Refuse essences that were not made for a generator with this W+ shape."""
        for term in self.terms:
            meta = term.essence.metadata
            space = meta.get("latent_space", "w+")
            if space.lower() != "w+":
                raise EssencekitError(f"essence {term.label} ({term.source}) is a {space} direction; transfer edits W+")
            shape = tuple(term.essence.direction.shape)
            if shape != (n_latent, style_dim):
                made = f" (made with {meta['generator']})" if meta.get("generator") else ""
                raise EssencekitError(
                    f"essence {term.label} ({term.source}) is a W+ direction of shape {list(shape)}{made}, but the "
                    f"generator ({generator}) takes [{n_latent}, {style_dim}]: it belongs to another generator; use "
                    "an essence extracted with this generator, or pass --encoder/--generator for the one it was "
                    "made with"
                )

    def describe(self) -> list[dict]:
        return [{"name": t.label, "weight": t.weight, "source": t.source,
                 "recommended_strength": t.recommended_strength} for t in self.terms]

    def delta(self, strength: float | None, mask: Tensor | None = None) -> Tensor:
        """The W+ offset [n_latent, style_dim] added to every face at ``strength`` (``None``:
        each essence at its recommended strength), restricted to the rows of ``mask``."""
        total = torch.zeros_like(self.terms[0].essence.direction)
        for term in self.terms:
            scale = term.recommended_strength if strength is None else float(strength)
            total += (term.weight * scale) * term.essence.direction
        return total if mask is None else total * mask

    def effective(self, strength: float | None) -> list[float]:
        """Each essence's effective strength (weight x strength) for the metadata."""
        return [t.weight * (t.recommended_strength if strength is None else float(strength)) for t in self.terms]


def parse_strengths(text: str | Sequence[float] | float | None) -> list[float] | None:
    """``"0.5,1,1.5"`` -> ``[0.5, 1.0, 1.5]`` (a sweep); ``None`` -> ``None`` (recommended).
    Raises ``ValueError`` for anything else, repeated values included."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        values = [float(text)]
    elif isinstance(text, str):
        try:
            values = [float(part) for part in text.split(",") if part.strip()]
        except ValueError:
            raise ValueError(f"--strength takes a number or a comma list such as 0.5,1,1.5; got {text!r}") from None
    else:
        values = [float(v) for v in text]
    if not values:
        raise ValueError("--strength needs at least one number")
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"--strength values must be finite numbers, got {text!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"--strength lists a value twice: {text!r}")
    return values
