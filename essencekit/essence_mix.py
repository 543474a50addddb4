"""``--essence NAME_OR_PATH[@WEIGHT]``: which essences a run applies, and how they add up.

A spec names an essence file (``.pt``, ``.safetensors`` or a TargetCLIP ``.npy``) or a
published essence (``joker``: an artifact of kind ``essence`` in the weight cache, see
``essencekit pull-weights essences``); ``@0.5`` scales it. Several essences add up:
``w + s * sum_i(weight_i * d_i)``. Without ``--strength`` each essence is applied at its own
recommended strength, ``w + sum_i(weight_i * r_i * d_i)`` (``r_i`` = 1.0 for the published
essences); ``--strength s`` replaces every ``r_i`` by ``s``.

An edit that would move any W+ row by more than :data:`~essencekit.essence.MAX_ROW_NORM` (23
times the largest row of a published essence at strength 1) is refused: it can only saturate
the generator (docs/transfer.md).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import Tensor

from .errors import EssencekitError, OptionError
from .essence import MAX_ROW_NORM, Essence, load_essence


@dataclass
class EssenceTerm:
    """One ``--essence``: the loaded essence, its ``weight``, its ``label`` in output names
    (artifact name or file stem) and ``source`` (the file or artifact it came from, for
    messages); ``path`` and ``sha256``: the file read, if any."""

    essence: Essence
    weight: float
    label: str
    source: str
    path: Path | None = None
    published: bool = False
    sha256: str | None = None

    @property
    def recommended_strength(self) -> float:
        return self.essence.recommended_strength

    @property
    def shared_source(self) -> str:
        """Where the essence came from as outputs and reports say it: the file name or the
        published name, never the folder it lives in (outputs are shared; a local path tells
        strangers about the machine)."""
        return self.path.name if self.path is not None and not self.published else self.source

    def record(self) -> dict:
        """What output files say about this essence: its name, file name and sha256."""
        return {"name": self.label, "weight": self.weight, "source": self.shared_source, "sha256": self.sha256,
                "recommended_strength": self.recommended_strength}


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
            raise OptionError(f"essence {spec}: the weight after '@' must be a finite number", parameter="essence")
        return name, weight
    return spec, 1.0


def published_essences() -> list[str]:
    from .plugins import registered

    return sorted(name for name, artifact in registered("weights").items() if artifact.kind == "essence")


def resolve_essence(name: str, what: str = "") -> tuple[Path, bool]:
    """The file of an essence named by path or by published name (``joker``: the verified file
    in the weight cache), and whether it is a published one. ``what`` starts the messages
    (``"essence joker"``)."""
    lead = f"{what}: " if what else ""
    path = Path(name)
    if path.is_file():
        return path, False
    published = published_essences()
    if name in published:
        from .cache import resolve_artifact

        return resolve_artifact(name), True
    if path.suffix or "/" in name or os.sep in name:
        raise EssencekitError(f"{lead}essence file not found: {path}")
    listing = ", ".join(published) or "none registered"
    raise EssencekitError(
        f"{lead or name + ': '}no such essence file, and no published essence of that name (published: {listing}; "
        "download them with `essencekit pull-weights essences`)"
    )


def load_term(spec) -> EssenceTerm:
    """Resolve one spec (a string, a path, an :class:`Essence`, an already loaded
    :class:`EssenceTerm` or an ``(essence, weight)`` pair)."""
    if isinstance(spec, EssenceTerm):
        return replace(spec)  # as loaded, not read and hashed again; a copy, as a pair scales its weight
    if isinstance(spec, tuple) and len(spec) == 2:
        term = load_term(spec[0])
        term.weight *= float(spec[1])
        return term
    if isinstance(spec, Essence):
        try:
            spec.validate()
        except EssencekitError as error:
            raise EssencekitError(f"essence {spec.name or '(in memory)'}: {error}") from None
        return EssenceTerm(spec, 1.0, spec.name or "essence", "in-memory essence")
    text = os.fspath(spec)
    if isinstance(spec, os.PathLike):
        name, weight = text, 1.0
    else:
        name, weight = split_spec(text)
        head, at, tail = text.rpartition("@")
        if name == text and at and head and not Path(text).is_file() and (
            Path(head).is_file() or head in published_essences()
        ):
            # "joker.pt@abc": the essence exists, so what follows '@' was meant as its weight
            raise OptionError(f"essence {text}: the weight after '@' must be a number, got {tail!r}", parameter="essence")
    path, published = resolve_essence(name, f"essence {text}")
    from .cache import sha256_file

    essence, sha256 = load_essence(path), sha256_file(path)
    if published:
        return EssenceTerm(essence, weight, name, f"published essence {name}", path, True, sha256)
    return EssenceTerm(essence, weight, path.stem, str(path), path, False, sha256)


class EssenceMix:
    """The essences of a run: their sum, its label (``joker+keanu``) and the edit per strength."""

    def __init__(self, specs):
        if isinstance(specs, (str, os.PathLike, Essence, EssenceTerm, tuple)):
            specs = [specs]
        self.terms = [load_term(spec) for spec in specs]
        if not self.terms:
            raise OptionError("give at least one essence (a file or a published name)", parameter="essence")
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
                    "an essence extracted with this generator, or the encoder and generator it was made with"
                )

    def describe(self) -> list[dict]:
        return [term.record() for term in self.terms]

    def check_magnitude(self, strengths: list[float] | None) -> None:
        """Raise :class:`~essencekit.errors.OptionError` (parameter ``strength``) when the edit at any of ``strengths`` (``None``: the recommended
        ones) would move a W+ row by more than :data:`MAX_ROW_NORM`."""
        if len({tuple(t.essence.direction.shape) for t in self.terms}) > 1:
            return  # check() refuses the mix, naming the shapes
        for strength in strengths if strengths is not None else [None]:
            # in float64, so that 1e9 x a direction is a number to report, not inf
            total = torch.zeros(self.terms[0].essence.direction.shape, dtype=torch.float64)
            for term, scale in zip(self.terms, self.effective(strength)):
                total += scale * term.essence.direction.double()
            norms = total.norm(dim=1)
            row = int(norms.nan_to_num(math.inf).argmax())
            worst = float(norms[row])
            if worst <= MAX_ROW_NORM:
                continue
            lead = "" if strength is None else f"strength {float(strength):g}: "
            applied = ", ".join(f"{t.label} x {e:g}" for t, e in zip(self.terms, self.effective(strength)))
            raise OptionError(
                f"{lead}the edit ({applied}) would move W+ row {row} by {worst:.3g}, more than {MAX_ROW_NORM:g}: "
                "far outside any meaningful edit (the published essences move a row by at most 4.4 at strength "
                "1); use a smaller strength or essence weight (@WEIGHT)", parameter="strength",
            )

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


def parse_strengths(text: str | Sequence[float] | float | None, *, parameter: str = "strength") -> list[float] | None:
    """``"0.5,1,1.5"`` -> ``[0.5, 1.0, 1.5]`` (a sweep); ``None`` -> ``None`` (recommended).
    Raises :class:`~essencekit.errors.OptionError` about ``parameter`` (the caller's name for the
    strengths) for anything else, repeated values included."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        values = [float(text)]
    elif isinstance(text, str):
        if any(not part.strip() for part in text.split(",")):
            raise OptionError(f"empty item in {parameter} {text!r}", parameter=parameter)
        try:
            values = [float(part) for part in text.split(",")]
        except ValueError:
            raise OptionError(
                f"{parameter} takes a number or a comma list such as 0.5,1,1.5; got {text!r}", parameter=parameter
            ) from None
    else:
        values = [float(v) for v in text]
    if not values:
        raise OptionError(f"{parameter} needs at least one number", parameter=parameter)
    if not all(math.isfinite(v) for v in values):
        raise OptionError(f"{parameter} values must be finite numbers, got {text!r}", parameter=parameter)
    if len(set(values)) != len(values):
        raise OptionError(f"{parameter} lists a value twice: {text!r}", parameter=parameter)
    return values
