"""Small numerical building blocks of the StyleGAN2 generator.

The reference implementation runs every resampling step through ``upfirdn2d``, which on the
CPU reshapes the feature map into ``B*C`` single-channel images and copies it between layouts
several times. What StyleGAN2 actually needs is much simpler:

* the blur after a strided transposed convolution is a *depthwise* 2-D convolution with a
  fixed FIR kernel, and
* the 2x upsampling of the RGB skip branch (zero insertion, padding, FIR filtering) is a
  *depthwise transposed* convolution with stride 2.

Both are expressed as exactly that here (``groups=C``), which gives the same numbers with far
less time and memory. Everything is device- and dtype-agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

LEAKY_SLOPE = 0.2
LEAKY_GAIN = math.sqrt(2.0)


def make_blur_kernel(taps: Sequence[float] = (1, 3, 3, 1), gain: float = 1.0) -> Tensor:
    """The separable 2-D FIR kernel ``outer(taps, taps)``, normalised to sum ``gain``.

    ``gain=4`` is used wherever the filter follows a 2x zero-insertion upsampling, so that the
    average signal level is kept (3 of every 4 upsampled pixels are zeros).
    """
    k = torch.as_tensor(taps, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum() * gain


def blur(x: Tensor, kernel: Tensor, pad: tuple[int, int]) -> Tensor:
    """Filter every channel of ``x`` [B, C, H, W] with ``kernel`` as a depthwise convolution.

    Same result as ``upfirdn2d(x, kernel, up=1, down=1, pad=pad)``: zero padding of ``pad[0]``
    before and ``pad[1]`` after in both spatial dimensions, then a true convolution (the
    kernel flipped, which matters only for asymmetric kernels).
    """
    channels = x.shape[1]
    weight = kernel.flip((0, 1)).to(x.dtype).expand(channels, 1, *kernel.shape)
    pad0, pad1 = pad
    if pad0 == pad1:
        return F.conv2d(x, weight, padding=pad0, groups=channels)
    return F.conv2d(F.pad(x, (pad0, pad1, pad0, pad1)), weight, groups=channels)


def upsample2x(x: Tensor, kernel: Tensor) -> Tensor:
    """Upsample ``x`` [B, C, H, W] to [B, C, 2H, 2W] as a depthwise transposed convolution.

    Same result as StyleGAN2's ``Upsample``: ``upfirdn2d(x, kernel, up=2, pad=(p0, p1))`` with
    ``p0 = (K - 1) // 2 + 1`` and ``p1 = (K - 2) // 2`` for a K x K kernel (``(2, 1)`` for the
    usual 4 taps). A stride-2 transposed convolution scatters each input pixel through the
    (unflipped) kernel, which is zero insertion followed by FIR filtering; padding
    ``K - 1 - p0`` crops it to exactly that output window.
    """
    size = kernel.shape[0]
    if size % 2 or kernel.shape[1] != size:
        raise ValueError(f"upsample2x needs a square kernel of even size, got {tuple(kernel.shape)}")
    pad0 = (size - 1) // 2 + 1
    channels = x.shape[1]
    weight = kernel.to(x.dtype).expand(channels, 1, size, size)
    return F.conv_transpose2d(x, weight, stride=2, padding=size - 1 - pad0, groups=channels)


def upconv_blur_pad(blur_taps: int, conv_kernel_size: int) -> tuple[int, int]:
    """Padding of the blur that follows a stride-2 transposed convolution: output = 2 x input."""
    p = (blur_taps - 2) - (conv_kernel_size - 1)
    return (p + 1) // 2 + 1, p // 2 + 1


def pixel_norm(x: Tensor, eps: float = 1e-8) -> Tensor:
    """Normalise each row of ``x`` [B, D] to unit root-mean-square."""
    return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + eps)


def fused_leaky_relu(x: Tensor, bias: Tensor | None = None) -> Tensor:
    """``leaky_relu(x + bias, 0.2) * sqrt(2)`` with ``bias`` per channel (dimension 1).

    The gain keeps the activations' second moment roughly unchanged.
    """
    if bias is not None:
        x = x + bias.view((1, -1) + (1,) * (x.ndim - 2))
    return F.leaky_relu(x, LEAKY_SLOPE) * LEAKY_GAIN


def equal_linear(
    x: Tensor, weight: Tensor, bias: Tensor | None, lr_mul: float = 1.0, activate: bool = False
) -> Tensor:
    """Equalised-learning-rate linear layer: weights scaled by ``lr_mul / sqrt(fan_in)`` at run time.

    The stored bias is scaled by ``lr_mul`` too. With ``activate`` the bias is added before the
    fused leaky ReLU, as in the mapping network.
    """
    scale = lr_mul / math.sqrt(weight.shape[1])
    bias = None if bias is None else bias * lr_mul
    if activate:
        return fused_leaky_relu(F.linear(x, weight * scale), bias)
    return F.linear(x, weight * scale, bias)
