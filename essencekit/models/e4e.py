"""The e4e encoder (Encoder4Editing, ir_se backbone) and its official checkpoints.

Inverts a 256x256 face image in [-1, 1] into StyleGAN2 W+ codes, computing exactly what the
encoder4editing repository computes, and loads ``e4e_ffhq_encode.pt`` unchanged: module and
parameter names follow the official ones, so the ``encoder.*`` part of a checkpoint loads with
``load_state_dict(strict=True)``.

Every size (stage widths, units per stage, feature taps, number of styles, convolutions per
style block, input size) is read from the state dict rather than assumed to be ir_se-50's.

Loading builds the modules on the ``meta`` device and adopts the checkpoint's tensors
(``load_state_dict(assign=True)``): no random initialisation, no second copy of the ~1 GB of
encoder weights.
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

# The ir_se units live in irse.py (shared with the ArcFace identity model); re-exported here.
from .irse import BottleneckIRSE, SEModule, UnitSpec, adopt_state_dict, infer_body, tensor_shape

__all__ = [
    "BottleneckIRSE",
    "E4E",
    "Encoder4Editing",
    "EncoderConfig",
    "SEModule",
    "UnitSpec",
    "e4e_from_state_dict",
    "infer_encoder_config",
    "load_encoder_checkpoint",
]

_WHAT = "e4e encoder checkpoint"
_FIX = "use e4e_ffhq_encode.pt from the encoder4editing project (`essencekit pull-weights`)"


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class EncoderConfig:
    """Architecture of an :class:`Encoder4Editing`, as inferred by :func:`infer_encoder_config`.

    ``stage_widths``/``stage_units`` describe the four backbone stages (ir_se-50: widths
    (64, 128, 256, 512), units (3, 4, 14, 3)); ``taps`` are the body indices whose outputs are
    the FPN features c1, c2, c3 (the last unit of stages 2, 3, 4). ``style_convs[i]`` is the
    number of stride-2 convolutions of style block ``i``: blocks with the fewest read c3, one
    more read p2, two more read p1.
    """

    in_channels: int
    stem_width: int
    units: tuple[UnitSpec, ...]
    stage_widths: tuple[int, ...]
    stage_units: tuple[int, ...]
    taps: tuple[int, int, int]
    style_dim: int
    style_convs: tuple[int, ...]

    @property
    def n_latent(self) -> int:
        return len(self.style_convs)

    @property
    def input_size(self) -> int:
        # Each stage halves the resolution once; a coarse block must then bring c3 to 1x1.
        return 2 ** (self.style_convs[0] + len(self.stage_widths))

    @property
    def coarse_ind(self) -> int:
        """First style index that reads p2 (3 for the official encoder)."""
        return sum(1 for k in self.style_convs if k == self.style_convs[0])

    @property
    def middle_ind(self) -> int:
        """First style index that reads p1 (7 for the official encoder)."""
        return sum(1 for k in self.style_convs if k <= self.style_convs[0] + 1)


def _shape(state_dict: Mapping[str, Any], key: str, source: str) -> tuple[int, ...]:
    return tensor_shape(state_dict, key, source, shown=f"encoder.{key}", model="an e4e checkpoint", fix=_FIX)


def infer_encoder_config(
    state_dict: Mapping[str, Any], *, source: str = "the e4e state dict"
) -> EncoderConfig:
    """Infer the architecture from an encoder state dict (keys without the ``encoder.`` prefix).

    Raises :class:`EssencekitError` for missing keys or a layout Encoder4Editing cannot have.
    """

    def bad(detail: str) -> EssencekitError:
        return EssencekitError(f"{source} has an unsupported e4e encoder layout: {detail}; {_FIX}")

    stem = _shape(state_dict, "input_layer.0.weight", source)
    if len(stem) != 4:
        raise bad(f"input_layer.0.weight has shape {list(stem)}")
    stem_width, in_channels = stem[0], stem[1]

    units, stage_widths, stage_units = infer_body(
        state_dict, stem_width, shape=lambda key: _shape(state_dict, key, source), bad=bad
    )
    if len(stage_widths) != 4:
        raise bad(f"{len(stage_widths)} backbone stages (widths {list(stage_widths)}), expected 4")
    ends = [sum(stage_units[: i + 1]) - 1 for i in range(4)]
    taps = (ends[1], ends[2], ends[3])

    n_styles = 0
    while f"styles.{n_styles}.linear.weight" in state_dict:
        n_styles += 1
    if n_styles == 0:
        _shape(state_dict, "styles.0.linear.weight", source)
    style_dim = _shape(state_dict, "styles.0.linear.weight", source)[0]
    if stage_widths[3] != style_dim:
        raise bad(f"last stage width {stage_widths[3]} differs from style width {style_dim}")

    style_convs: list[int] = []
    for i in range(n_styles):
        k = 0
        while f"styles.{i}.convs.{2 * k}.weight" in state_dict:
            k += 1
        if k == 0:
            _shape(state_dict, f"styles.{i}.convs.0.weight", source)
        style_convs.append(k)
    k0 = style_convs[0]
    if any(k not in (k0, k0 + 1, k0 + 2) for k in style_convs) or style_convs != sorted(style_convs):
        raise bad(f"style blocks with {style_convs} convolutions")

    lat1 = _shape(state_dict, "latlayer1.weight", source)
    lat2 = _shape(state_dict, "latlayer2.weight", source)
    if lat1[:2] != (style_dim, stage_widths[2]) or lat2[:2] != (style_dim, stage_widths[1]):
        raise bad(f"lateral layers of shapes {list(lat1)} and {list(lat2)}")

    return EncoderConfig(
        in_channels=in_channels,
        stem_width=stem_width,
        units=tuple(units),
        stage_widths=tuple(stage_widths),
        stage_units=tuple(stage_units),
        taps=taps,
        style_dim=style_dim,
        style_convs=tuple(style_convs),
    )


# --------------------------------------------------------------------------- modules


class EqualLinear(nn.Module):
    """rosinality's EqualLinear with lr_mul 1 and no activation (runtime weight scaling)."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim))
        self.bias = nn.Parameter(torch.zeros(out_dim))
        self.scale = 1 / math.sqrt(in_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.scale, self.bias)


class GradualStyleBlock(nn.Module):
    """``n_convs`` stride-2 3x3 convs with LeakyReLU(0.01) down to 1x1, then EqualLinear."""

    def __init__(self, in_channels: int, out_channels: int, n_convs: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i in range(n_convs):
            layers += [
                nn.Conv2d(in_channels if i == 0 else out_channels, out_channels, 3, 2, 1),
                nn.LeakyReLU(0.01),
            ]
        self.convs = nn.Sequential(*layers)
        self.linear = EqualLinear(out_channels, out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convs(x).flatten(1))


def _upsample_add(x: torch.Tensor, lateral: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=lateral.shape[-2:], mode="bilinear", align_corners=True) + lateral


class Encoder4Editing(nn.Module):
    """e4e's encoder: ir_se backbone, FPN features, one base W code plus per-row deltas.

    ``forward`` returns the codes *without* ``latent_avg`` ([B, n_latent, style_dim]), in the
    official inference stage (every delta applied). Use :meth:`from_state_dict` to build one
    straight from official weights.
    """

    def __init__(self, config: EncoderConfig):
        super().__init__()
        self.config = config
        self.input_layer = nn.Sequential(
            nn.Conv2d(config.in_channels, config.stem_width, 3, 1, 1, bias=False),
            nn.BatchNorm2d(config.stem_width),
            nn.PReLU(config.stem_width),
        )
        self.body = nn.Sequential(*(BottleneckIRSE(spec) for spec in config.units))
        c3_width = config.stage_widths[3]
        k0 = config.style_convs[0]
        self.styles = nn.ModuleList(
            GradualStyleBlock(c3_width if k == k0 else config.style_dim, config.style_dim, k)
            for k in config.style_convs
        )
        self.latlayer1 = nn.Conv2d(config.stage_widths[2], config.style_dim, 1)
        self.latlayer2 = nn.Conv2d(config.stage_widths[1], config.style_dim, 1)

    @property
    def n_latent(self) -> int:
        return self.config.n_latent

    @property
    def style_dim(self) -> int:
        return self.config.style_dim

    @classmethod
    def from_state_dict(
        cls, state_dict: Mapping[str, torch.Tensor], *, source: str = "the e4e state dict"
    ) -> Encoder4Editing:
        """Build the inferred architecture around ``state_dict``'s own tensors (no copies)."""
        config = infer_encoder_config(state_dict, source=source)
        with torch.device("meta"):
            encoder = cls(config)
        _assign(encoder, state_dict, source, prefix="encoder.")
        return encoder.eval()

    def check_input(self, images: torch.Tensor) -> None:
        """Raise :class:`EssencekitError` unless ``images`` is [B, C, S, S] at the input size."""
        size, channels = self.config.input_size, self.config.in_channels
        if not isinstance(images, torch.Tensor):
            raise EssencekitError(
                f"e4e expects a tensor of images, got {type(images).__name__}"
            )
        if (
            images.dim() != 4
            or images.shape[0] == 0
            or images.shape[1] != channels
            or tuple(images.shape[-2:]) != (size, size)
        ):
            raise EssencekitError(
                f"e4e expects images of shape [B, {channels}, {size}, {size}], got "
                f"{list(images.shape)}; resize the aligned faces to {size}x{size} first"
            )
        if not images.is_floating_point():
            raise EssencekitError(
                f"e4e expects floating-point images in [-1, 1], got dtype {images.dtype}"
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.check_input(images)
        x = self.input_layer(images)
        tap1, tap2, tap3 = self.config.taps
        c1 = c2 = x
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i == tap1:
                c1 = x
            elif i == tap2:
                c2 = x
            if i == tap3:
                break
        c3 = x

        k0 = self.config.style_convs[0]
        p2 = p1 = None
        w0 = self.styles[0](c3)
        rows = [w0]
        for block, k in zip(self.styles[1:], self.config.style_convs[1:]):
            if k == k0:
                features = c3
            else:
                if p2 is None:
                    p2 = _upsample_add(c3, self.latlayer1(c2))
                if k == k0 + 1:
                    features = p2
                else:
                    if p1 is None:
                        p1 = _upsample_add(p2, self.latlayer2(c1))
                    features = p1
            rows.append(w0 + block(features))
        return torch.stack(rows, dim=1)


def _assign(module: nn.Module, state_dict: Mapping[str, torch.Tensor], source: str, prefix: str):
    """Adopt ``state_dict``'s tensors as ``module``'s (strict), freezing them."""
    adopt_state_dict(module, state_dict, source=source, arch="e4e encoder", fix=_FIX, prefix=prefix)


# --------------------------------------------------------------------------- encoder + decoder


class E4E(nn.Module):
    """An e4e checkpoint: the encoder, its embedded StyleGAN2 decoder and ``latent_avg``.

    ``latent_avg`` [n_latent, style_dim] is the checkpoint's per-row offset that e4e adds to
    the encoder output (``start_from_latent_avg``); :meth:`invert` returns codes including it,
    ready for ``generator.synthesis``.

    ``generator.latent_avg`` [style_dim] (the truncation centre of the embedded decoder) is
    taken from the same tensor: the published checkpoints store the decoder's mean W repeated
    on every row (e4e builds it with ``latent_avg.repeat(n_styles, 1)`` and never trains it),
    so when all rows are equal it is that row, exactly. When rows differ (the tiny test
    fixture has rows that differ by ~0.1, i.e. noise around the decoder's own mean W) the
    encoder still uses every row as stored, and the generator gets the mean of the rows.
    """

    def __init__(self, encoder: Encoder4Editing, generator: nn.Module, latent_avg: torch.Tensor):
        super().__init__()
        self.encoder = encoder
        self.generator = generator
        self.register_buffer("latent_avg", latent_avg)
        self.n_latent = encoder.n_latent
        self.style_dim = encoder.style_dim

    @property
    def input_size(self) -> int:
        return self.encoder.config.input_size

    def set_modulated_conv(self, form: str) -> E4E:
        """Choose the embedded generator's modulated-convolution form."""
        self.generator.set_modulated_conv(form)
        return self

    def configure_for(self, backend) -> E4E:
        """Adapt the embedded generator to ``backend`` (``Backend.prepare`` calls this)."""
        self.generator.configure_for(backend)
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """W+ codes with ``latent_avg``, differentiable (parameters stay frozen)."""
        return self.encoder(images) + self.latent_avg

    def invert(self, images: torch.Tensor, *, requires_grad: bool = False) -> torch.Tensor:
        """Encode [B, 3, 256, 256] images in [-1, 1] into W+ codes [B, n_latent, style_dim].

        The codes include ``latent_avg``. Without ``requires_grad`` no autograd graph is kept.
        Raises :class:`EssencekitError` for a wrong shape, size, dtype or value range.
        """
        self.encoder.check_input(images)
        images = images.to(device=self.latent_avg.device, dtype=self.latent_avg.dtype)
        low, high = torch.aminmax(images.detach())
        # Loose bounds: resampling may overshoot [-1, 1] a little, but [0, 255] or
        # ImageNet-normalised input would silently give a wrong face.
        if not (low.item() >= -1.5 and high.item() <= 1.5):
            raise EssencekitError(
                f"e4e expects images scaled to [-1, 1], got values in [{low.item():.3g}, "
                f"{high.item():.3g}]; map pixels p in [0, 255] to p / 127.5 - 1"
            )
        with torch.set_grad_enabled(requires_grad and torch.is_grad_enabled()):
            return self(images)


def _row_centre(latent_avg: torch.Tensor) -> torch.Tensor:
    if torch.equal(latent_avg, latent_avg[:1].expand_as(latent_avg)):
        return latent_avg[0].clone()
    return latent_avg.mean(dim=0)


def e4e_from_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    latent_avg: torch.Tensor | None,
    *,
    opts: Mapping[str, Any] | None = None,
    source: str = "the e4e checkpoint",
) -> E4E:
    """Build an :class:`E4E` from a checkpoint's ``state_dict`` (``encoder.*``/``decoder.*``).

    ``latent_avg`` is the checkpoint's [n_latent, style_dim] (or [style_dim]) offset; ``None``
    is accepted only when ``opts['start_from_latent_avg']`` is false (then codes get no
    offset). Tensors are adopted, not copied.
    """
    encoder_sd, decoder_sd = {}, {}
    for key, value in state_dict.items():
        if isinstance(key, str) and key.startswith("encoder."):
            encoder_sd[key[8:]] = value
        elif isinstance(key, str) and key.startswith("decoder."):
            decoder_sd[key[8:]] = value
    if not encoder_sd:
        hint = ""
        if "style.1.weight" in state_dict or "g_ema" in state_dict:
            hint = " (it looks like a StyleGAN2 generator)"
        raise EssencekitError(
            f"{source} is not an e4e checkpoint: it has no 'encoder.*' weights{hint}; {_FIX}"
        )
    if not decoder_sd:
        raise EssencekitError(
            f"{source} has no embedded StyleGAN2 decoder ('decoder.*' weights); {_FIX}"
        )
    encoder_type = (opts or {}).get("encoder_type", "Encoder4Editing")
    if encoder_type != "Encoder4Editing":
        raise EssencekitError(
            f"{source} holds a {encoder_type!r} encoder (opts['encoder_type']), not e4e's "
            f"Encoder4Editing; {_FIX}"
        )

    encoder = Encoder4Editing.from_state_dict(encoder_sd, source=source)
    n_latent, style_dim = encoder.n_latent, encoder.style_dim

    if latent_avg is None:
        if (opts or {}).get("start_from_latent_avg", True):
            raise EssencekitError(
                f"{source} has no 'latent_avg', which e4e adds to every code; {_FIX}"
            )
        offset = torch.zeros(n_latent, style_dim)
        centre = None
    else:
        if not isinstance(latent_avg, torch.Tensor) or tuple(latent_avg.shape) not in (
            (n_latent, style_dim),
            (style_dim,),
        ):
            shape = list(latent_avg.shape) if isinstance(latent_avg, torch.Tensor) else "?"
            raise EssencekitError(
                f"{source}: 'latent_avg' has shape {shape}, expected [{n_latent}, {style_dim}] "
                f"for this encoder; {_FIX}"
            )
        offset = latent_avg.float().expand(n_latent, style_dim).contiguous()
        centre = _row_centre(offset)
        if not (opts or {}).get("start_from_latent_avg", True):
            offset = torch.zeros_like(offset)

    from .stylegan2 import generator_from_state_dict

    try:
        generator = generator_from_state_dict(decoder_sd, latent_avg=centre)
    except EssencekitError as error:
        raise EssencekitError(f"{source}: embedded decoder: {error}") from None
    except (KeyError, RuntimeError, ValueError) as error:
        raise EssencekitError(
            f"{source}: the embedded decoder ('decoder.*') is not a StyleGAN2 generator "
            f"({type(error).__name__}: {str(error)[:160]}); {_FIX}"
        ) from None
    if generator.n_latent != n_latent or generator.style_dim != style_dim:
        raise EssencekitError(
            f"{source}: encoder and decoder do not match: the encoder gives {n_latent} codes of "
            f"width {style_dim} but the decoder takes {generator.n_latent} of width "
            f"{generator.style_dim}; {_FIX}"
        )
    generator.eval()
    for parameter in generator.parameters():
        parameter.requires_grad_(False)
    return E4E(encoder, generator, offset).eval()


def load_encoder_checkpoint(path: str | os.PathLike) -> E4E:
    """Load an official e4e checkpoint (e.g. ``e4e_ffhq_encode.pt``) on the CPU, in eval mode.

    Accepts ``{"state_dict", "opts", "latent_avg"}`` as saved by encoder4editing. Raises
    :class:`EssencekitError` for a file that is not an e4e checkpoint, missing keys, or an
    encoder whose number of codes does not match its decoder.
    """
    return e4e_from_checkpoint(load_checkpoint(path, what=_WHAT), path)


def e4e_from_checkpoint(loaded: Any, path: str | os.PathLike) -> E4E:
    """:func:`load_encoder_checkpoint` for a checkpoint already read from ``path``."""
    checkpoint = require_mapping(loaded, path, _WHAT)
    if "state_dict" in checkpoint:
        state_dict = require_mapping(checkpoint["state_dict"], path, _WHAT)
    elif any(isinstance(k, str) and k.startswith("encoder.") for k in checkpoint):
        state_dict = checkpoint
    else:
        hint = " (it is a StyleGAN2 generator checkpoint)" if "g_ema" in checkpoint else ""
        raise EssencekitError(
            f"{path} is not an e4e checkpoint: no 'state_dict' with 'encoder.*' weights{hint}; "
            f"{_FIX}"
        )
    opts = checkpoint.get("opts")
    return e4e_from_state_dict(
        state_dict,
        checkpoint.get("latent_avg"),
        opts=opts if isinstance(opts, dict) else None,
        source=str(path),
    )
