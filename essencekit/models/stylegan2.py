"""The StyleGAN2 generator, compatible with the widely used PyTorch checkpoint format.

Loads the ``g_ema`` state dicts that TargetCLIP, e4e and most StyleGAN2 tooling use (the
format of rosinality's stylegan2-pytorch, e.g. ``stylegan2-ffhq-config-f.pt``) and computes
the same images, in plain PyTorch on any device. Module and parameter names equal the
checkpoint's key names, so ``load_state_dict(strict=True)`` maps every tensor.

W+ layout (``n_latent = 2 * log2(size) - 2`` rows, 18 at 1024 px): row 0 styles the 4x4
convolution, row 1 its toRGB; then for each resolution r = 8, 16, ... with k = 2 * log2(r) - 5,
row k styles the upsampling convolution, row k + 1 the second convolution and row k + 2 the
toRGB. Noise map j (``noises.noise_j``) feeds convolution j in that order.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from os import PathLike
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..checkpoints import load_checkpoint, require_mapping
from ..errors import EssencekitError
from .ops import (
    blur,
    equal_linear,
    fused_leaky_relu,
    make_blur_kernel,
    noise_bias_leaky_relu_,
    pixel_norm,
    upconv_blur_pad,
    upsample2x,
)

MAPPING_LR_MUL = 0.01
MODULATED_CONV_FORMS = ("grouped", "shared")
LATENT_AVG_SAMPLES = 10_000
LATENT_AVG_SEED = 0


@dataclass(frozen=True)
class GeneratorConfig:
    """Architecture of a StyleGAN2 generator.

    ``channels`` lists the feature width at each resolution 4, 8, ..., ``size``.
    """

    size: int
    style_dim: int
    n_mlp: int
    channels: tuple[int, ...]
    blur_kernel: tuple[int, ...] = (1, 3, 3, 1)

    @classmethod
    def ffhq(cls, size: int = 1024, *, channel_multiplier: int = 2, max_channels: int | None = None) -> GeneratorConfig:
        """The FFHQ ("config-f") architecture at ``size`` px, the one TargetCLIP's checkpoints use.

        Widths 512 up to 32 px, then 256, 128, 64, 32, 16 (times ``channel_multiplier``) at 64,
        128, ..., 1024 px: at 1024 and multiplier 2 (512, 512, 512, 512, 512, 256, 128, 64, 32).
        ``max_channels`` caps every width (smaller models for smoke tests).
        """
        widths = []
        resolution = 4
        while resolution <= size:
            width = 512 if resolution <= 32 else min(512, 16 * channel_multiplier * 1024 // resolution)
            widths.append(width if max_channels is None else min(width, max_channels))
            resolution *= 2
        return cls(size=size, style_dim=512, n_mlp=8, channels=tuple(widths))

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "blur_kernel", tuple(self.blur_kernel))
        if self.size < 4 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 4, got {self.size}")
        if len(self.channels) != self.log_size - 1:
            raise ValueError(
                f"channels needs one width per resolution 4..{self.size} "
                f"({self.log_size - 1} values), got {len(self.channels)}"
            )

    @property
    def log_size(self) -> int:
        return self.size.bit_length() - 1

    @property
    def n_latent(self) -> int:
        """Rows of a W+ code."""
        return 2 * self.log_size - 2

    @property
    def num_noise_layers(self) -> int:
        """Convolutions (and noise maps): one at 4x4, two at every higher resolution."""
        return 2 * self.log_size - 3

    def resolution(self, noise_index: int) -> int:
        """Side length of the feature map of convolution / noise map ``noise_index``."""
        return 2 ** ((noise_index + 5) // 2)


# --------------------------------------------------------------------------------------------
# Layers (names of modules and parameters follow the checkpoint format)


class PixelNorm(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return pixel_norm(x)


class EqualLinear(nn.Module):
    def __init__(
        self, in_dim: int, out_dim: int, bias_init: float = 0.0, lr_mul: float = 1.0,
        activate: bool = False,
    ) -> None:
        super().__init__()
        # Stored weights are divided by lr_mul so that the run-time scale restores them.
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: Tensor) -> Tensor:
        return equal_linear(x, self.weight, self.bias, self.lr_mul, self.activate)


class Blur(nn.Module):
    def __init__(self, taps: Sequence[int], pad: tuple[int, int], gain: float = 1.0) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, gain))
        self.pad = pad

    def forward(self, x: Tensor) -> Tensor:
        return blur(x, self.kernel, self.pad)


class Upsample(nn.Module):
    def __init__(self, taps: Sequence[int]) -> None:
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps, gain=4.0))

    def forward(self, x: Tensor) -> Tensor:
        return upsample2x(x, self.kernel)


class ModulatedConv2d(nn.Module):
    """Style-modulated convolution, optionally (de)modulated and upsampling by 2.

    Two forms with the same mathematics, chosen by ``form``:

    * ``"grouped"`` (the reference's): each sample's weights are scaled by its style and
      demodulated, then all samples run as one grouped convolution (``groups=B``).
    * ``"shared"``: the input is scaled by the style, one convolution with the shared weights
      runs over the batch, and the output is multiplied by the demodulation coefficients.
      No per-sample weight tensor is built, which saves memory at large batch sizes.
    """

    def __init__(
        self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int,
        demodulate: bool = True, upsample: bool = False, blur_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.in_channel, self.out_channel, self.kernel_size = in_channel, out_channel, kernel_size
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1.0)
        if upsample:
            pad = upconv_blur_pad(len(blur_kernel), kernel_size)
            self.blur = Blur(blur_kernel, pad, gain=4.0)
        self.scale = 1.0 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.demodulate = demodulate
        self.upsample = upsample
        self.form = "grouped"

    def forward(self, x: Tensor, style: Tensor) -> Tensor:
        style = self.modulation(style)
        if self.form == "shared":
            return self._forward_shared(x, style)
        return self._forward_grouped(x, style)

    def _forward_grouped(self, x: Tensor, style: Tensor) -> Tensor:
        batch, _, height, width = x.shape
        k = self.kernel_size
        x = x.reshape(1, batch * self.in_channel, height, width)
        if self.upsample:
            # conv_transpose2d wants [in, out / groups, k, k] per group.
            weight = self._grouped_weight(style, transposed=True)
            weight = weight.reshape(batch * self.in_channel, self.out_channel, k, k)
            out = F.conv_transpose2d(x, weight, stride=2, padding=0, groups=batch)
            return self.blur(out.view(batch, self.out_channel, *out.shape[2:]))
        weight = self._grouped_weight(style).reshape(batch * self.out_channel, self.in_channel, k, k)
        out = F.conv2d(x, weight, padding=self.padding, groups=batch)
        return out.view(batch, self.out_channel, *out.shape[2:])

    def _grouped_weight(self, style: Tensor, transposed: bool = False) -> Tensor:
        """Per-sample weights [B, out, in, k, k] ([B, in, out, k, k] if ``transposed``), made
        by one multiplication of the shared weights.

        The style, the scale and the demodulation are folded into one small [B, out, in]
        factor, the demodulation sums coming from the style and the shared weights (as in the
        shared form). The reference's sequence instead makes five tensors of the per-sample
        size forward, one more to transpose them for the up-convolution, and about as many
        in backward (37.7 MB each at 512 channels, batch 4), which matters most at small
        image sizes, where these tensors dominate. Same mathematics, rounding aside.
        """
        batch = style.shape[0]
        style = style * self.scale
        demod = None
        if self.demodulate:
            demod = _demodulation(style, self.weight[0])
        if transposed:
            weight = self.weight[0].transpose(0, 1).contiguous()
            coef = style.view(batch, self.in_channel, 1)
            if demod is not None:
                coef = coef * demod.view(batch, 1, self.out_channel)
        else:
            weight = self.weight[0]
            coef = style.view(batch, 1, self.in_channel)
            if demod is not None:
                coef = coef * demod.view(batch, self.out_channel, 1)
        return weight * coef[..., None, None]

    def _forward_shared(self, x: Tensor, style: Tensor) -> Tensor:
        weight = self.scale * self.weight[0]
        x = x * style[:, :, None, None]
        if self.upsample:
            out = self.blur(F.conv_transpose2d(x, weight.transpose(0, 1), stride=2, padding=0))
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            out = out * _demodulation(style, weight)[:, :, None, None]
        return out


def _demodulation(style: Tensor, weight: Tensor) -> Tensor:
    """StyleGAN2's demodulation factors [B, out] for ``style`` [B, in] and the shared ``weight``
    [out, in, k, k], without building the per-sample weights.

    sum over (in, ky, kx) of (w * s_in)^2 = s^2 @ (sum over ky, kx of w^2)^T.
    """
    return torch.rsqrt(style.square() @ weight.square().sum((2, 3)).t() + 1e-8)


class NoiseInjection(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: Tensor, noise: Tensor) -> Tensor:
        return x + self.weight * noise


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: Tensor) -> Tensor:
        return fused_leaky_relu(x, self.bias)


class ConstantInput(nn.Module):
    def __init__(self, channels: int, size: int = 4) -> None:
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch: int) -> Tensor:
        return self.input.expand(batch, -1, -1, -1)


class StyledConv(nn.Module):
    """Modulated convolution, noise injection, bias and leaky ReLU.

    The last three run in place on the convolution's output as one autograd node that keeps
    only its output (:func:`~essencekit.models.ops.noise_bias_leaky_relu_`), instead of the
    reference's four ops that each allocate a full-size tensor and keep the pre-activation
    alive until backward: identical numbers, and at 1024 px, batch 4 on the CPU about a
    third less peak memory for forward + backward. ``NoiseInjection`` and ``FusedLeakyReLU``
    hold the parameters (the checkpoint's names); the benchmarks' reference form runs them.
    """

    def __init__(
        self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, 3, style_dim, upsample=upsample, blur_kernel=blur_kernel
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        return noise_bias_leaky_relu_(self.conv(x, style), self.activate.bias, noise, self.noise.weight)


class ToRGB(nn.Module):
    def __init__(
        self, in_channel: int, style_dim: int, upsample: bool = True,
        blur_kernel: Sequence[int] = (1, 3, 3, 1),
    ) -> None:
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, x: Tensor, style: Tensor, skip: Tensor | None = None) -> Tensor:
        out = self.conv(x, style) + self.bias
        return out if skip is None else out + self.upsample(skip)


# --------------------------------------------------------------------------------------------
# The generator


class Generator(nn.Module):
    """StyleGAN2 generator: ``mapping`` (z -> w) and ``synthesis`` (W+ -> image in [-1, 1]).

    Randomly initialised; use :func:`load_generator_checkpoint` or
    :func:`generator_from_state_dict` for trained weights. ``latent_avg`` (a non-persistent
    buffer, not part of ``state_dict()``) is the truncation centre.

    Run-time switches, none of which changes the results beyond float rounding:

    * :meth:`set_modulated_conv` picks the modulated-convolution form (see
      :class:`ModulatedConv2d`); :meth:`configure_for` picks it for a backend.
    * ``checkpoint_blocks = True`` recomputes each resolution block during the backward pass
      instead of keeping its activations (``torch.utils.checkpoint``), to save memory in
      forward + backward.
    """

    def __init__(self, config: GeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.size, self.style_dim, self.n_latent = config.size, config.style_dim, config.n_latent
        taps, ch = config.blur_kernel, config.channels

        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualLinear(self.style_dim, self.style_dim, lr_mul=MAPPING_LR_MUL, activate=True)
              for _ in range(config.n_mlp)),
        )
        self.input = ConstantInput(ch[0])
        self.conv1 = StyledConv(ch[0], ch[0], self.style_dim, blur_kernel=taps)
        self.to_rgb1 = ToRGB(ch[0], self.style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        for in_ch, out_ch in zip(ch[:-1], ch[1:]):
            self.convs.append(StyledConv(in_ch, out_ch, self.style_dim, upsample=True, blur_kernel=taps))
            self.convs.append(StyledConv(out_ch, out_ch, self.style_dim, blur_kernel=taps))
            self.to_rgbs.append(ToRGB(out_ch, self.style_dim, blur_kernel=taps))
        self.noises = nn.Module()
        for i in range(config.num_noise_layers):
            res = config.resolution(i)
            self.noises.register_buffer(f"noise_{i}", torch.randn(1, 1, res, res))
        self.register_buffer("latent_avg", torch.zeros(self.style_dim), persistent=False)
        self.checkpoint_blocks = False

    # -- switches ----------------------------------------------------------------------------

    def set_modulated_conv(self, form: str) -> Generator:
        """Select ``"grouped"`` (reference) or ``"shared"`` modulated convolutions."""
        if form not in MODULATED_CONV_FORMS:
            raise ValueError(f"modulated conv form must be one of {MODULATED_CONV_FORMS}, got {form!r}")
        for module in self.modules():
            if isinstance(module, ModulatedConv2d):
                module.form = form
        return self

    @property
    def modulated_conv(self) -> str:
        return self.conv1.conv.form

    def configure_for(self, backend) -> Generator:
        """Pick the modulated-convolution form for ``backend`` (``Backend.prepare`` calls this):
        grouped where its grouped convolutions are fast (``backend.fast_grouped_conv``), else
        shared, which runs one ordinary convolution per layer."""
        return self.set_modulated_conv("grouped" if backend.fast_grouped_conv else "shared")

    # -- mapping -----------------------------------------------------------------------------

    def mapping(self, z: Tensor, truncation: float = 1.0) -> Tensor:
        """Map z [B, style_dim] to w [B, style_dim]; ``truncation < 1`` pulls w towards ``latent_avg``."""
        if z.ndim != 2 or z.shape[1] != self.style_dim:
            raise ValueError(f"z must be [batch, {self.style_dim}], got {list(z.shape)}")
        w = self.style(z)
        if truncation != 1:
            w = self.latent_avg + truncation * (w - self.latent_avg)
        return w

    @torch.no_grad()
    def mean_latent(self, n: int = LATENT_AVG_SAMPLES, seed: int = LATENT_AVG_SEED) -> Tensor:
        """Mean of ``mapping(z)`` over ``n`` standard-normal z drawn on the CPU from ``seed``."""
        z = torch.randn(n, self.style_dim, generator=torch.Generator().manual_seed(seed))
        param = self.input.input
        return self.style(z.to(param.device, param.dtype)).mean(0)

    # -- synthesis ---------------------------------------------------------------------------

    def make_noise(self, batch: int = 1, generator: torch.Generator | None = None) -> list[Tensor]:
        """Fresh standard-normal noise maps [batch, 1, r, r], one per convolution."""
        param = self.input.input
        return [
            torch.randn(batch, 1, r, r, generator=generator).to(param.device, param.dtype)
            if generator is not None
            else torch.randn(batch, 1, r, r, device=param.device, dtype=param.dtype)
            for r in map(self.config.resolution, range(self.config.num_noise_layers))
        ]

    def forward(self, w_plus: Tensor, noise: str | Sequence[Tensor | None] = "const") -> Tensor:
        return self.synthesis(w_plus, noise)

    def synthesis(
        self, w_plus: Tensor, noise: str | Sequence[Tensor | None] = "const", max_size: int | None = None
    ) -> Tensor:
        """Images [B, 3, size, size] (range about [-1, 1]) from W+ [B, n_latent, style_dim].

        A plain w [B, style_dim] is used for every row. ``noise``: ``"const"`` the model's
        fixed noise maps (``noises.noise_j``), ``"random"`` fresh standard-normal maps per
        sample, or a list of ``num_noise_layers`` tensors broadcastable to [B, 1, r, r]
        (``None`` entries are drawn at random).

        ``max_size`` (a power of two from 4 to ``size``) stops after that resolution and
        returns the RGB skip image there, [B, 3, max_size, max_size]: a cheap preview of the
        full image whose W+ rows beyond ``2 * log2(max_size) - 2`` have no effect.
        """
        if w_plus.ndim == 2:
            w_plus = w_plus.unsqueeze(1).expand(-1, self.n_latent, -1)
        if w_plus.ndim != 3 or w_plus.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(
                f"w_plus must be [batch, {self.n_latent}, {self.style_dim}] or "
                f"[batch, {self.style_dim}], got {list(w_plus.shape)}"
            )
        blocks = self.config.log_size - 1
        if max_size is not None:
            if isinstance(max_size, bool) or not isinstance(max_size, int) or not (
                4 <= max_size <= self.size and max_size & (max_size - 1) == 0
            ):
                raise ValueError(f"max_size must be a power of two from 4 to {self.size}, got {max_size!r}")
            blocks = max_size.bit_length() - 2
        noises = self._resolve_noise(noise, w_plus.shape[0])
        # Random noise is drawn up front, so a checkpointed block recomputes with the same maps.
        use_checkpoint = self.checkpoint_blocks and torch.is_grad_enabled()
        out = skip = None
        for block in range(blocks):
            args = (block, out, skip, w_plus, *noises[max(0, 2 * block - 1) : 2 * block + 1])
            if use_checkpoint:
                out, skip = checkpoint(self._block, *args, use_reentrant=False)
            else:
                out, skip = self._block(*args)
        return skip

    def _block(
        self, block: int, x: Tensor | None, skip: Tensor | None, w_plus: Tensor, *noise: Tensor
    ) -> tuple[Tensor, Tensor]:
        """One resolution: 4x4 (constant, conv, toRGB) or up-conv, conv, toRGB + upsampled skip."""
        if block == 0:
            x = self.conv1(self.input(w_plus.shape[0]), w_plus[:, 0], noise[0])
            return x, self.to_rgb1(x, w_plus[:, 1])
        row = 2 * block - 1
        x = self.convs[2 * block - 2](x, w_plus[:, row], noise[0])
        x = self.convs[2 * block - 1](x, w_plus[:, row + 1], noise[1])
        return x, self.to_rgbs[block - 1](x, w_plus[:, row + 2], skip)

    def _resolve_noise(self, noise: str | Sequence[Tensor | None], batch: int) -> list[Tensor]:
        count = self.config.num_noise_layers
        if isinstance(noise, str):
            if noise == "const":
                return [getattr(self.noises, f"noise_{i}") for i in range(count)]
            if noise == "random":
                return self.make_noise(batch)
            raise ValueError(f"noise must be 'const', 'random' or a list of tensors, got {noise!r}")
        noise = list(noise)
        if len(noise) != count:
            raise ValueError(f"expected {count} noise maps, got {len(noise)}")
        fresh = self.make_noise(batch) if any(n is None for n in noise) else None
        for i, n in enumerate(noise):
            res = self.config.resolution(i)
            if n is not None and tuple(n.shape[-2:]) != (res, res):
                raise ValueError(f"noise map {i} must be {res}x{res}, got {list(n.shape)}")
        return [fresh[i] if n is None else n for i, n in enumerate(noise)]


# --------------------------------------------------------------------------------------------
# Loading


def _index_set(keys: Sequence[str], pattern: str) -> list[int]:
    regex = re.compile(pattern)
    return sorted(int(m.group(1)) for k in keys if (m := regex.fullmatch(k)))


def infer_generator_config(state_dict: Mapping[str, Any]) -> GeneratorConfig:
    """Architecture of a ``g_ema`` state dict, from its key names and shapes only."""
    if not isinstance(state_dict, Mapping):
        raise EssencekitError(
            f"not a StyleGAN2 generator state dict: expected a dictionary of tensors, "
            f"found {type(state_dict).__name__}"
        )
    keys = list(state_dict)

    def tensor(key: str) -> Tensor:
        value = state_dict.get(key)
        if not isinstance(value, Tensor):
            found = "missing" if value is None else f"a {type(value).__name__}"
            raise EssencekitError(
                f"not a StyleGAN2 generator (g_ema) state dict: {key!r} is {found}; "
                "expected the 'g_ema' entry of a rosinality-format checkpoint"
            )
        return value

    mlp = _index_set(keys, r"style\.(\d+)\.weight")
    convs = _index_set(keys, r"convs\.(\d+)\.conv\.weight")
    constant = tensor("input.input")
    style = tensor("style.1.weight")
    if mlp != list(range(1, len(mlp) + 1)) or convs != list(range(len(convs))) or len(convs) % 2:
        raise EssencekitError(
            "not a StyleGAN2 generator (g_ema) state dict: the mapping layers "
            f"(style.{mlp}) or the convolutions (convs.{convs}) are not numbered consecutively"
        )
    if constant.ndim != 4 or tuple(constant.shape[2:]) != (4, 4) or style.ndim != 2:
        raise EssencekitError(
            "not a StyleGAN2 generator (g_ema) state dict: unexpected shapes of "
            f"input.input {list(constant.shape)} / style.1.weight {list(style.shape)}"
        )
    widths = [constant.shape[1]]
    for i in range(0, len(convs), 2):
        weight = tensor(f"convs.{i}.conv.weight")
        if weight.ndim != 5:
            raise EssencekitError(
                f"not a StyleGAN2 generator (g_ema) state dict: convs.{i}.conv.weight has "
                f"shape {list(weight.shape)}, expected [1, out, in, 3, 3]"
            )
        widths.append(weight.shape[1])
    return GeneratorConfig(
        size=2 ** (len(convs) // 2 + 2), style_dim=style.shape[0], n_mlp=len(mlp), channels=tuple(widths)
    )


def _check_keys(generator: Generator, state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The state dict completed with rebuilt blur kernels, or a one-line error on anything else."""
    expected = generator.state_dict()
    full = dict(state_dict)
    missing = [k for k in expected if k not in full]
    for key in [k for k in missing if k.endswith(".kernel")]:
        # Blur kernels are fixed by the architecture; some public re-saves drop them.
        full[key] = expected[key]
        missing.remove(key)

    def listed(names: list[str]) -> str:
        return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")

    noise = [k for k in missing if k.startswith("noises.")]
    if noise:
        raise EssencekitError(
            f"the generator's constant noise maps are missing ({listed(noise)}); they belong to "
            "the trained model: use the complete 'g_ema' from the original checkpoint"
        )
    if missing:
        raise EssencekitError(f"incomplete StyleGAN2 generator: missing {listed(missing)}")
    unexpected = [k for k in full if k not in expected]
    if unexpected:
        raise EssencekitError(
            f"unknown entries in the StyleGAN2 generator state dict: {listed(unexpected)} "
            f"(architecture inferred as size {generator.size}, style_dim {generator.style_dim})"
        )
    for key, value in full.items():
        if not isinstance(value, Tensor) or value.shape != expected[key].shape:
            found = list(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise EssencekitError(
                f"StyleGAN2 generator entry {key} is {found}, expected {list(expected[key].shape)} "
                f"for the inferred architecture (size {generator.size})"
            )
    return full


def generator_from_state_dict(
    state_dict: Mapping[str, Tensor], latent_avg: Tensor | None = None
) -> Generator:
    """A generator (CPU, eval mode, frozen) with the weights of a ``g_ema`` state dict.

    The architecture is inferred from the keys. Missing ``*.kernel`` blur buffers are rebuilt;
    any other missing key, an unknown key or a wrong shape raises :class:`EssencekitError`.
    ``latent_avg`` [style_dim] becomes the truncation centre; when it is ``None`` it is
    estimated as the mean of ``mapping(z)`` over 10,000 z drawn from the CPU generator seeded
    with 0 (deterministic, but not the value a published checkpoint stores).
    """
    config = infer_generator_config(state_dict)
    generator = Generator(config)
    generator.load_state_dict(_check_keys(generator, state_dict), strict=True)
    generator.eval().requires_grad_(False)
    if latent_avg is None:
        latent_avg = generator.mean_latent()
    elif not isinstance(latent_avg, Tensor) or latent_avg.numel() != config.style_dim:
        shape = list(latent_avg.shape) if isinstance(latent_avg, Tensor) else type(latent_avg).__name__
        raise EssencekitError(
            f"latent_avg must hold {config.style_dim} values (the mean w), got {shape}"
        )
    generator.latent_avg.copy_(latent_avg.detach().reshape(-1))
    return generator


def load_generator_checkpoint(path: str | PathLike) -> Generator:
    """Load a rosinality-format StyleGAN2 checkpoint (e.g. ``stylegan2-ffhq-config-f.pt``).

    The file is a dict with ``g_ema`` (required) and usually ``latent_avg``; ``g``, ``d``,
    ``args`` and optimiser states are ignored. Without ``latent_avg`` the truncation centre is
    estimated as in :func:`generator_from_state_dict`. Returns a frozen CPU generator in eval
    mode; any problem raises :class:`EssencekitError` naming the file.
    """
    what = "StyleGAN2 generator checkpoint"
    checkpoint_dict = require_mapping(load_checkpoint(path, what=what), path, what)
    if "g_ema" not in checkpoint_dict:
        found = ", ".join(map(str, list(checkpoint_dict)[:6])) or "nothing"
        hint = (
            " (an e4e checkpoint: its generator is the 'decoder.*' part of its state_dict)"
            if "state_dict" in checkpoint_dict
            else ""
        )
        raise EssencekitError(
            f"{path} is not a {what}: it has no 'g_ema' entry (found {found}){hint}; use a "
            "rosinality-format file such as stylegan2-ffhq-config-f.pt"
        )
    g_ema = require_mapping(checkpoint_dict["g_ema"], f"{path} ['g_ema']", "generator state dict")
    try:
        return generator_from_state_dict(g_ema, checkpoint_dict.get("latent_avg"))
    except EssencekitError as error:
        raise EssencekitError(f"{path}: {error}") from None
