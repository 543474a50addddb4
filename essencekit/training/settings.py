"""The hyper-parameters of encoder training, declared once (defaults: the authors' training
code, TargetCLIP's ``training/coach.py``, except where docs/encoder.md says otherwise).

Imports no torch: the CLI reads its defaults from here to print ``--help``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

from ..errors import OptionError
from ..settings_fields import check_fields, declare, finite_number, one_of, true_or_false, whole_number

OPTIMIZERS = ("ranger", "adamw")
#: ``frozen``: BatchNorm layers normalise with e4e's running statistics (their scale and shift
#: still train); ``train``: with each batch's own statistics, as the reference code did.
BATCHNORM_MODES = ("frozen", "train")
#: Validation costs at most about this share of the training time when ``val_every`` is automatic.
VALIDATION_SHARE = 0.1
#: A validation target costs about this share of a training target (forward only, no backward).
FORWARD_SHARE = 1 / 3


@dataclass
class TrainSettings:
    """Every setting of a training run that changes what is learned (recorded in each
    checkpoint; ``--resume`` refuses a run whose settings differ, except ``steps``)."""

    steps: int = declare(3000, whole_number(1))
    lr: float = declare(1e-4, finite_number(positive=True, high=1))
    batch_size: int = declare(1, whole_number(1))
    optimizer: str = declare("ranger", one_of(OPTIMIZERS))
    lambda_consistency: float = declare(0.5, finite_number())
    lambda_norm: float = declare(3e-3, finite_number())
    flip: bool = declare(True, true_or_false)
    batchnorm: str = declare("frozen", one_of(BATCHNORM_MODES))
    seed: int = declare(0, whole_number(0))

    def __post_init__(self):
        self.validate()

    def validate(self) -> TrainSettings:
        check_fields(self)
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    def differences(self, other: dict) -> list[str]:
        """The fields (other than ``steps``) whose value in ``other`` (a saved run's settings)
        differs from this one's, as ``name: saved -> now``."""
        return [
            f"{spec.name}: {other.get(spec.name)!r} -> {getattr(self, spec.name)!r}"
            for spec in fields(self)
            if spec.name != "steps" and other.get(spec.name) != getattr(self, spec.name)
        ]


@dataclass
class Schedule:
    """When a run validates and saves: not part of what is learned, so a resumed run may
    change them."""

    val_every: int | None = declare(None, whole_number(1, optional=True))  # None: automatic
    checkpoint_every: int = declare(500, whole_number(1))
    samples: int = declare(4, whole_number(0))  # targets in the validation sample grid

    def __post_init__(self):
        check_fields(self)

    def validation_interval(self, steps: int, val_images: int, global_batch: int) -> int:
        """``val_every``, or the interval at which one validation pass over ``val_images``
        targets costs at most :data:`VALIDATION_SHARE` of the training between two passes."""
        if self.val_every is not None:
            return self.val_every
        per_pass = val_images * FORWARD_SHARE
        interval = math.ceil(per_pass / (VALIDATION_SHARE * global_batch))
        if interval > steps:
            return steps  # still one validation, at the end, to choose best.pt
        return max(1, interval)


def check_world(settings: TrainSettings, world_size: int, train_images: int) -> None:
    """Refuse a batch the training folder cannot fill."""
    global_batch = settings.batch_size * world_size
    if train_images < global_batch:
        who = f" ({settings.batch_size} per process x {world_size} processes)" if world_size > 1 else ""
        raise OptionError(
            f"batch_size {global_batch}{who} needs at least {global_batch} training images, the folder has "
            f"{train_images}",
            parameter="batch_size",
        )


#: The defaults, for readers of them (the CLI's options).
DEFAULTS = TrainSettings()
SCHEDULE_DEFAULTS = Schedule()
