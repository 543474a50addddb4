"""The IR-SE building blocks shared by the e4e encoder and the ArcFace identity model.

``bottleneck_IR_SE`` units in the official module and parameter names (``res_layer.*``,
``shortcut_layer.*``, SE ``fc1``/``fc2``), the inference of a backbone body from a state dict,
and the strict adoption of a checkpoint's tensors into modules built on the ``meta`` device.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import EssencekitError

__all__ = ["BottleneckIRSE", "SEModule", "UnitSpec", "adopt_state_dict", "infer_body"]


@dataclass(frozen=True)
class UnitSpec:
    """One bottleneck_IR_SE unit: ``in_channels -> depth`` with ``stride``; SE hidden width."""

    in_channels: int
    depth: int
    stride: int
    se_channels: int


class SEModule(nn.Module):
    """Squeeze-and-excitation gate (official names ``fc1``/``fc2``, no biases)."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, kernel_size=1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, kernel_size=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = F.adaptive_avg_pool2d(x, 1)
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(gate))))
        return x * gate


class BottleneckIRSE(nn.Module):
    """bottleneck_IR_SE: BN, conv3x3, PReLU, conv3x3 (strided), BN, SE, plus the shortcut."""

    def __init__(self, spec: UnitSpec):
        super().__init__()
        cin, depth, stride = spec.in_channels, spec.depth, spec.stride
        if cin == depth:
            # A 1x1 max-pool is plain subsampling; kept as a module to mirror the original.
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(cin, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.Conv2d(cin, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SEModule(depth, spec.se_channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def tensor_shape(state_dict: Mapping[str, Any], key: str, source: str, *, shown: str, model: str,
                 fix: str) -> tuple[int, ...]:
    """The shape of ``state_dict[key]``; a missing or non-tensor entry is a one-line error that
    names ``source``, the key as the file spells it (``shown``), the ``model`` expected and the
    ``fix``."""
    tensor = state_dict.get(key)
    if tensor is None:
        raise EssencekitError(
            f"{source} is missing weight '{shown}'; the file is incomplete or not {model}: {fix}"
        )
    if not isinstance(tensor, torch.Tensor):
        raise EssencekitError(f"{source}: '{shown}' is not a tensor; {fix}")
    return tuple(tensor.shape)


def infer_body(
    state_dict: Mapping[str, Any],
    stem_width: int,
    *,
    shape: Callable[[str], tuple[int, ...]],
    bad: Callable[[str], EssencekitError],
) -> tuple[tuple[UnitSpec, ...], tuple[int, ...], tuple[int, ...]]:
    """The ``body.*`` units of an IR-SE backbone: (units, stage widths, units per stage).

    ``shape(key)`` returns a tensor's shape or raises the caller's missing-key error;
    ``bad(detail)`` builds the caller's unsupported-layout error. A stage is a run of units of
    the same width; its first unit has stride 2 (as in every ir/ir_se configuration).
    """
    n_units = 0
    while f"body.{n_units}.res_layer.1.weight" in state_dict:
        n_units += 1
    if n_units == 0:
        shape("body.0.res_layer.1.weight")  # raises the missing-key error
        raise bad("no backbone units ('body.*')")

    stage_widths: list[int] = []
    stage_units: list[int] = []
    units: list[UnitSpec] = []
    previous = stem_width
    for n in range(n_units):
        conv = shape(f"body.{n}.res_layer.1.weight")
        if len(conv) != 4:
            raise bad(f"body.{n}.res_layer.1.weight has shape {list(conv)}")
        depth, unit_in = conv[:2]
        se_hidden = shape(f"body.{n}.res_layer.5.fc1.weight")[0]
        if unit_in != previous:
            raise bad(f"unit {n} takes {unit_in} channels but receives {previous}")
        starts_stage = not stage_widths or depth != stage_widths[-1]
        if starts_stage:
            stage_widths.append(depth)
            stage_units.append(0)
        stage_units[-1] += 1
        units.append(UnitSpec(unit_in, depth, 2 if starts_stage else 1, se_hidden))
        previous = depth
    return tuple(units), tuple(stage_widths), tuple(stage_units)


def adopt_state_dict(
    module: nn.Module,
    state_dict: Mapping[str, Any],
    *,
    source: str,
    arch: str,
    fix: str,
    prefix: str = "",
) -> None:
    """Adopt ``state_dict``'s tensors as ``module``'s (strict: none missing, none extra) and
    freeze them. ``module`` may live on the ``meta`` device: the tensors are taken as they are
    (``assign=True``), so float32 weights are not copied; half-precision ones are converted.

    Errors name ``source`` and ``arch`` (what the file should hold) and end with ``fix``;
    ``prefix`` is how the keys are spelt in the file (e4e's ``encoder.``).
    """
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise EssencekitError(f"{source}: '{prefix}{key}' is not a tensor; {fix}")
        # Only a half-precision re-save needs a copy; float32 tensors are taken as they are.
        if value.is_floating_point() and value.dtype != torch.float32:
            value = value.float()
        tensors[key] = value
    try:
        result = module.load_state_dict(tensors, strict=False, assign=True)
    except RuntimeError as error:
        first = (str(error).strip().splitlines() or ["shape mismatch"])[-1].strip()
        raise EssencekitError(
            f"{source} does not fit the {arch} architecture inferred from it: {first[:200]}; {fix}"
        ) from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(
                f"missing {len(result.missing_keys)} keys (first '{prefix}{result.missing_keys[0]}')"
            )
        if result.unexpected_keys:
            parts.append(
                f"{len(result.unexpected_keys)} unexpected keys "
                f"(first '{prefix}{result.unexpected_keys[0]}')"
            )
        raise EssencekitError(f"{source} is not a complete {arch}: {', '.join(parts)}; {fix}")
    for parameter in module.parameters():
        parameter.requires_grad_(False)
