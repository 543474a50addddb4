"""The hyper-parameters of an extraction, checked before anything is loaded or written."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from ..errors import EssencekitError
from .coefficients import RULES
from .losses import CONSISTENCY_FORMS
from .sources import TRUNCATION

INIT_MODES = ("auto", "inversion", "random")
FAST_SIZE = 256


@dataclass
class ExtractSettings:
    """Every hyper-parameter of ``essencekit extract`` (defaults: the published recipe)."""

    steps: int = 1000
    lr: float = 0.2
    weight_decay: float = 3e-3
    lambda_transfer: float = 1.0
    lambda_consistency: float = 0.6
    consistency: str = "raw"
    num_sources: int = 8
    held_out: int = 4
    restarts: int = 4
    init: str = "auto"
    coefficients: str = "sign"
    fast: bool = False
    batch_size: int | None = None
    truncation: float = TRUNCATION

    def validate(self) -> "ExtractSettings":
        """Raise a one-line :class:`EssencekitError` for the first nonsense value."""

        def whole(name: str, value, low: int, flag: str) -> None:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise EssencekitError(f"{flag} must be a whole number >= {low}, got {value!r}")

        def real(name: str, value, flag: str, *, positive: bool = False, high: float | None = None) -> None:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            ok = ok and (value > 0 if positive else value >= 0) and (high is None or value <= high)
            if not ok:
                bound = "> 0" if positive else ">= 0"
                bound += f" and <= {high}" if high is not None else ""
                raise EssencekitError(f"{flag} must be a finite number {bound}, got {value!r}")

        whole("steps", self.steps, 1, "--steps")
        real("lr", self.lr, "--lr", positive=True, high=100)
        real("weight_decay", self.weight_decay, "--weight-decay", high=10)
        real("lambda_transfer", self.lambda_transfer, "--lambda-transfer")
        real("lambda_consistency", self.lambda_consistency, "--lambda-consistency")
        real("truncation", self.truncation, "truncation", positive=True, high=1)
        if self.lambda_transfer == 0 and self.lambda_consistency == 0:
            raise EssencekitError("--lambda-transfer and --lambda-consistency are both 0: there is nothing to optimise")
        whole("num_sources", self.num_sources, 1, "--num-sources")
        if self.lambda_consistency > 0 and self.num_sources < 2:
            raise EssencekitError("the consistency loss compares sources in pairs: use --num-sources 2 or more "
                                  "(or --lambda-consistency 0)")
        whole("held_out", self.held_out, 0, "--held-out")
        whole("restarts", self.restarts, 1, "--restarts")
        if self.batch_size is not None:
            whole("batch_size", self.batch_size, 1, "--batch-size")
        for flag, value, choices in (
            ("--consistency", self.consistency, CONSISTENCY_FORMS),
            ("--init", self.init, INIT_MODES),
            ("--coefficients", self.coefficients, RULES),
        ):
            if value not in choices:
                raise EssencekitError(f"{flag} must be one of {', '.join(choices)}, got {value!r}")
        return self

    def as_dict(self) -> dict:
        return asdict(self)
