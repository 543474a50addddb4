"""The hyper-parameters of an extraction, declared once: each field's default (the published
recipe) and its check live side by side here, and every reader takes them from here: the CLI's
option defaults, :func:`essencekit.extract`'s keywords, the optimisation loop's
:class:`~essencekit.extraction.optimise.OptimiseSettings` (a subclass) and the essence's
metadata. A settings object is checked when it is made, before anything is loaded or written;
a bad value raises :class:`~essencekit.errors.OptionError` naming the parameter.

Imports no torch: the CLI reads its defaults from here to print ``--help``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from ..clip_losses import CONSISTENCY_FORMS
from ..errors import OptionError
from ..settings_fields import check_fields, declare, finite_number, one_of, true_or_false, whole_number

#: The mapping network's truncation for sampled sources and random starts (the published recipe).
TRUNCATION = 0.7
#: The size ``fast`` renders at while optimising.
FAST_SIZE = 256
INIT_MODES = ("auto", "inversion", "random")
COEFFICIENT_RULES = ("sign", "adam", "fixed")


@dataclass
class Recipe:
    """What the optimisation minimises and how fast: the hyper-parameters the extraction and
    its loop share."""

    steps: int = declare(1000, whole_number(1))
    lr: float = declare(0.2, finite_number(positive=True, high=100))
    weight_decay: float = declare(3e-3, finite_number(high=10))
    lambda_transfer: float = declare(1.0, finite_number())
    lambda_consistency: float = declare(0.6, finite_number())
    consistency: str = declare("raw", one_of(CONSISTENCY_FORMS))
    coefficients: str = declare("sign", one_of(COEFFICIENT_RULES))
    batch_size: int | None = declare(None, whole_number(1, optional=True))  # None: automatic

    def __post_init__(self):
        self.validate()

    def validate(self):
        """Check every field (in declaration order), then how they combine; returns ``self``.
        Raises :class:`~essencekit.errors.OptionError` for the first value that cannot work."""
        check_fields(self)
        if self.lambda_transfer == 0 and self.lambda_consistency == 0:
            raise OptionError(
                "lambda_transfer and lambda_consistency are both 0: there is nothing to optimise",
                parameter="lambda_transfer",
            )
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    def recipe(self) -> dict:
        """The :class:`Recipe` fields of these settings, to make other settings from."""
        return {spec.name: getattr(self, spec.name) for spec in fields(Recipe)}


@dataclass
class ExtractSettings(Recipe):
    """Every hyper-parameter of an extraction (defaults: the published recipe): the loop's
    :class:`Recipe`, and the sources, restarts and starts it runs on."""

    num_sources: int = declare(8, whole_number(1))
    held_out: int = declare(4, whole_number(0))
    restarts: int = declare(4, whole_number(1))
    init: str = declare("auto", one_of(INIT_MODES))
    fast: bool = declare(False, true_or_false)
    truncation: float = declare(TRUNCATION, finite_number(positive=True, high=1))

    def validate(self) -> ExtractSettings:
        super().validate()
        if self.lambda_consistency > 0 and self.num_sources < 2:
            raise OptionError(
                "the consistency loss compares sources in pairs: use num_sources 2 or more (or lambda_consistency 0)",
                parameter="num_sources",
            )
        return self


#: The published recipe, for readers of the defaults (the CLI's options).
DEFAULTS = ExtractSettings()
