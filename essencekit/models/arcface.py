"""The ArcFace IR-SE identity model (``model_ir_se50.pth``) of the paper's evaluation.

Identity preservation is measured as the cosine between ArcFace embeddings of two faces. This
is the IR-SE backbone of the e4e/pSp repositories (``model_irse.Backbone``, mode ``ir_se``,
input 112): ``input_layer`` (conv3x3, BN, PReLU), a ``body`` of bottleneck_IR_SE units (shared
with the e4e encoder, :mod:`essencekit.models.irse`) and ``output_layer`` (BN, dropout,
flatten, linear, BatchNorm1d), then L2 normalisation. Module and parameter names are the
official ones, so the published file, a plain state dict, loads strictly and unchanged.

Every size (stage widths, units per stage, strides, SE widths, embedding size, input size) is
read from the state dict: ir_se-50 has widths (64, 128, 256, 512), units (3, 4, 14, 3), SE
width depth/16, 512-d embeddings from 112x112 faces.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checkpoints import load_checkpoint, require_mapping
from ..errors import EssencekitError
from .irse import BottleneckIRSE, UnitSpec, adopt_state_dict, infer_body, tensor_shape

__all__ = [
    "ArcFaceConfig",
    "ArcFaceIRSE",
    "CROP_COLUMNS",
    "CROP_ROWS",
    "arcface_from_state_dict",
    "infer_arcface_config",
    "load_identity_checkpoint",
    "preprocess_faces",
]

_WHAT = "ArcFace identity model"
_ARCH = "ArcFace IR-SE model"
_FIX = (
    "use model_ir_se50.pth, the ArcFace IR-SE50 state dict "
    "(`essencekit pull-weights arcface-ir-se50`)"
)

# The evaluation's face crop of a 256x256 aligned FFHQ-style image (rows, then columns).
CROP_ROWS = (35, 223)
CROP_COLUMNS = (32, 220)
_CROP_FRAME = 256


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ArcFaceConfig:
    """Architecture of an :class:`ArcFaceIRSE`, as inferred by :func:`infer_arcface_config`.

    ``feature_size`` is the side of the last stage's map that ``output_layer`` flattens (7 for
    112x112 inputs); ``affine`` tells whether the final BatchNorm1d has a weight and bias.
    """

    in_channels: int
    stem_width: int
    units: tuple[UnitSpec, ...]
    stage_widths: tuple[int, ...]
    stage_units: tuple[int, ...]
    feature_size: int
    embedding_dim: int
    affine: bool = True

    @property
    def input_size(self) -> int:
        # Each stage halves the resolution once (its first unit has stride 2).
        return self.feature_size * 2 ** len(self.stage_widths)


def _shape(state_dict: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    return tensor_shape(state_dict, key, source, shown=key, model="an ArcFace IR-SE state dict", fix=_FIX)


def infer_arcface_config(
    state_dict: Mapping[str, Any], *, source: str = "the ArcFace state dict"
) -> ArcFaceConfig:
    """Infer the architecture from an ArcFace IR-SE state dict (``model_ir_se50.pth``'s keys).

    Raises :class:`EssencekitError` for missing keys or a layout the backbone cannot have.
    """

    def shape(key: str) -> tuple[int, ...]:
        return _shape(state_dict, key, source)

    def bad(detail: str) -> EssencekitError:
        return EssencekitError(f"{source} has an unsupported ArcFace IR-SE layout: {detail}; {_FIX}")

    stem = shape("input_layer.0.weight")
    if len(stem) != 4:
        raise bad(f"input_layer.0.weight has shape {list(stem)}")
    stem_width, in_channels = stem[0], stem[1]

    units, stage_widths, stage_units = infer_body(state_dict, stem_width, shape=shape, bad=bad)
    width = stage_widths[-1]

    norm = shape("output_layer.0.weight")
    if norm != (width,):
        raise bad(f"output_layer.0.weight has shape {list(norm)}, expected [{width}]")
    linear = shape("output_layer.3.weight")
    if len(linear) != 2:
        raise bad(f"output_layer.3.weight has shape {list(linear)}")
    embedding_dim, flat = linear
    feature_size = math.isqrt(flat // width) if flat % width == 0 else 0
    if feature_size == 0 or width * feature_size**2 != flat:
        raise bad(
            f"the embedding layer takes {flat} features, not {width} channels x a square map"
        )
    shape("output_layer.4.running_mean")  # the final BatchNorm1d must be there
    return ArcFaceConfig(
        in_channels=in_channels,
        stem_width=stem_width,
        units=units,
        stage_widths=stage_widths,
        stage_units=stage_units,
        feature_size=feature_size,
        embedding_dim=embedding_dim,
        affine="output_layer.4.weight" in state_dict,
    )


# --------------------------------------------------------------------------- preprocessing


def preprocess_faces(images: torch.Tensor, size: int = 112) -> torch.Tensor:
    """The evaluation's face crop: [B, C, S, S] aligned faces to [B, C, size, size].

    An image that is not 256x256 is first average-pooled to 256 (adaptive pooling, so a
    1024x1024 generator output is averaged 4x4 and a small one is repeated), then rows 35:223
    and columns 32:220 are cut out and adaptive-average-pooled to ``size``. Values are passed
    through unchanged: give [-1, 1] images.
    """
    if images.shape[-1] != _CROP_FRAME or images.shape[-2] != _CROP_FRAME:
        images = F.adaptive_avg_pool2d(images, _CROP_FRAME)
    images = images[..., CROP_ROWS[0] : CROP_ROWS[1], CROP_COLUMNS[0] : CROP_COLUMNS[1]]
    return F.adaptive_avg_pool2d(images, size)


# --------------------------------------------------------------------------- the model


class ArcFaceIRSE(nn.Module):
    """The ArcFace IR-SE backbone; ``forward`` maps [B, 3, 112, 112] faces in [-1, 1] to
    L2-normalised embeddings [B, E] (the raw model), :meth:`embed` takes aligned faces of any
    square size through the evaluation's crop first.

    The model stays in eval mode (``train()`` is ignored, so a parent module switching to
    training cannot update the BatchNorm statistics or enable the dropout) and, when built by
    :meth:`from_state_dict`, its parameters are frozen. It is differentiable with respect to
    its input, so it can also serve as an identity loss.
    """

    def __init__(self, config: ArcFaceConfig, drop_ratio: float = 0.6):
        super().__init__()
        self.config = config
        width, size = config.stage_widths[-1], config.feature_size
        self.input_layer = nn.Sequential(
            nn.Conv2d(config.in_channels, config.stem_width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(config.stem_width),
            nn.PReLU(config.stem_width),
        )
        self.body = nn.Sequential(*(BottleneckIRSE(spec) for spec in config.units))
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(width),
            nn.Dropout(drop_ratio),  # the published model was trained with 0.6; inactive in eval
            nn.Flatten(),
            nn.Linear(width * size * size, config.embedding_dim),
            nn.BatchNorm1d(config.embedding_dim, affine=config.affine),
        )
        self.eval()

    @property
    def input_size(self) -> int:
        return self.config.input_size

    @property
    def embedding_dim(self) -> int:
        return self.config.embedding_dim

    def train(self, mode: bool = True) -> ArcFaceIRSE:
        """Always eval mode: the identity model is a fixed measurement."""
        return super().train(False)

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, source: str = "the ArcFace state dict"
    ) -> ArcFaceIRSE:
        """Build the inferred architecture around ``state_dict``'s own tensors (strict, no
        copies of float32 weights), frozen and in eval mode."""
        config = infer_arcface_config(state_dict, source=source)
        with torch.device("meta"):
            model = cls(config)
        adopt_state_dict(model, state_dict, source=source, arch=_ARCH, fix=_FIX)
        return model.eval()

    def _check(self, images: Any, size: int | None) -> None:
        channels = self.config.in_channels
        if not isinstance(images, torch.Tensor):
            raise EssencekitError(
                f"the ArcFace model expects a tensor of images, got {type(images).__name__}"
            )
        expected = f"[B, {channels}, {size}, {size}]" if size else f"[B, {channels}, S, S]"
        if (
            images.dim() != 4
            or images.shape[0] == 0
            or images.shape[1] != channels
            or images.shape[-1] != images.shape[-2]
            or (size is not None and images.shape[-1] != size)
        ):
            raise EssencekitError(
                f"the ArcFace model expects images of shape {expected}, got {list(images.shape)}"
            )
        if not images.is_floating_point():
            raise EssencekitError(
                f"the ArcFace model expects floating-point images in [-1, 1], got dtype "
                f"{images.dtype}"
            )

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        """[B, 3, 112, 112] faces in [-1, 1] (already cropped) to unit vectors [B, E]."""
        self._check(faces, self.config.input_size)
        x = self.output_layer(self.body(self.input_layer(faces)))
        return F.normalize(x, dim=1)

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Aligned faces [B, 3, S, S] in [-1, 1], any S (1024 generator outputs, 256 crops),
        to L2-normalised embeddings [B, E], as the paper's evaluation computes them.

        The images go through :func:`preprocess_faces` (average-pool to 256 unless S is 256,
        crop rows 35:223 and columns 32:220, average-pool to 112), then :meth:`forward`.
        Every input must be in [-1, 1]: the reference evaluation feeds some images in [0, 1]
        and others in [-1, 1] to the same model, a bug not copied here. Values far outside
        [-1, 1] (e.g. [0, 255]) raise :class:`EssencekitError`; [0, 1] cannot be told apart,
        so map such images with ``2 * x - 1`` first. Gradients flow to ``images`` when
        autograd is on; wrap the call in ``torch.no_grad()`` for plain measurement.
        """
        self._check(images, None)
        reference = self.input_layer[0].weight
        images = images.to(device=reference.device, dtype=reference.dtype)
        if images.device.type != "meta":
            low, high = torch.aminmax(images.detach())
            # Loose bounds: resampling may overshoot [-1, 1] a little.
            if not (low.item() >= -1.5 and high.item() <= 1.5):
                raise EssencekitError(
                    f"the ArcFace model expects images scaled to [-1, 1], got values in "
                    f"[{low.item():.3g}, {high.item():.3g}]; map pixels p in [0, 255] to "
                    "p / 127.5 - 1"
                )
        return self(preprocess_faces(images, self.config.input_size))


def arcface_from_state_dict(
    state_dict: Mapping[str, torch.Tensor], *, source: str = "the ArcFace state dict"
) -> ArcFaceIRSE:
    """Build a frozen, eval-mode :class:`ArcFaceIRSE` from a ``model_ir_se50.pth``-style state
    dict (a ``module.`` prefix from a DataParallel re-save is removed)."""
    keys = [k for k in state_dict if isinstance(k, str)]
    if keys and len(keys) == len(state_dict) and all(k.startswith("module.") for k in keys):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return ArcFaceIRSE.from_state_dict(state_dict, source=source)


def _has_stem(state_dict: Mapping[Any, Any]) -> bool:
    return "input_layer.0.weight" in state_dict or "module.input_layer.0.weight" in state_dict


def load_identity_checkpoint(path: str | os.PathLike) -> ArcFaceIRSE:
    """Load an ArcFace IR-SE state dict (e.g. ``model_ir_se50.pth``) on the CPU, frozen and in
    eval mode.

    Raises :class:`EssencekitError` naming the file when it is missing, unreadable, not a
    plain state dict, or not an ArcFace IR-SE model (another checkpoint, missing keys, shapes
    the inferred architecture cannot take).
    """
    loaded = load_checkpoint(path, what=_WHAT)
    state_dict = require_mapping(loaded, path, f"{_WHAT} state dict")
    nested = state_dict.get("state_dict")
    if isinstance(nested, dict) and _has_stem(nested):
        state_dict = nested  # a training checkpoint that wraps the model's state dict
    if not _has_stem(state_dict):
        if "g_ema" in state_dict:
            hint = " (it is a StyleGAN2 generator checkpoint)"
        elif "state_dict" in state_dict or any(
            isinstance(k, str) and k.startswith("encoder.") for k in state_dict
        ):
            hint = " (it looks like an e4e/pSp encoder checkpoint)"
        else:
            found = ", ".join(map(str, list(state_dict)[:4])) or "nothing"
            hint = f" (found {found})"
        raise EssencekitError(
            f"{path} is not an ArcFace IR-SE state dict: it has no 'input_layer.0.weight'"
            f"{hint}; {_FIX}"
        )
    return arcface_from_state_dict(state_dict, source=str(path))
