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
from torch.autograd.function import once_differentiable

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


class _FixedDepthwiseConv(torch.autograd.Function):
    """``F.conv2d(x, weight, padding=padding, groups=C)`` for a constant ``weight``, keeping only
    ``weight`` for backward.

    Autograd of ``F.conv2d`` keeps the input alive until backward even when only the input's
    gradient is wanted, which needs only the weight. For the blur after each up-convolution
    that input is the largest tensor of its resolution: at 1024 px, batch 4 this saves
    about 1 GiB (the [4, 32, 1025, 1025] transposed-convolution output and its smaller
    siblings). The gradient is computed by the same ``convolution_backward`` call as autograd's.
    """

    @staticmethod
    def forward(ctx, x, weight, padding):  # type: ignore[override]
        ctx.save_for_backward(weight)
        ctx.input_shape, ctx.padding = x.shape, padding
        return F.conv2d(x, weight, padding=padding, groups=weight.shape[0])

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (weight,) = ctx.saved_tensors
        grad_x = torch.nn.grad.conv2d_input(
            ctx.input_shape, weight.to(grad.dtype), grad, padding=ctx.padding, groups=weight.shape[0]
        )
        return grad_x, None, None


def blur(x: Tensor, kernel: Tensor, pad: tuple[int, int]) -> Tensor:
    """Filter every channel of ``x`` [B, C, H, W] with ``kernel`` as a depthwise convolution.

    Same result as ``upfirdn2d(x, kernel, up=1, down=1, pad=pad)``: zero padding of ``pad[0]``
    before and ``pad[1]`` after in both spatial dimensions, then a true convolution (the
    kernel flipped, which matters only for asymmetric kernels).
    """
    channels = x.shape[1]
    weight = kernel.flip((0, 1)).to(x.dtype).expand(channels, 1, *kernel.shape)
    pad0, pad1 = pad
    padding = pad0
    if pad0 != pad1:
        x, padding = F.pad(x, (pad0, pad1, pad0, pad1)), 0
    if torch.is_grad_enabled() and x.requires_grad and not weight.requires_grad:
        return _FixedDepthwiseConv.apply(x, weight, padding)
    return F.conv2d(x, weight, padding=padding, groups=channels)


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


def _noise_bias_leaky_relu_inplace(
    out: Tensor, bias: Tensor, noise: Tensor | None, noise_weight: Tensor | None
) -> Tensor:
    # Each step is the unfused op's own kernel, in place: bitwise the same numbers.
    if noise is not None:
        out.add_(noise_weight * noise)
    out.add_(bias.view(1, -1, 1, 1))
    return F.leaky_relu_(out, LEAKY_SLOPE).mul_(LEAKY_GAIN)


class _NoiseBiasLeakyReLU(torch.autograd.Function):
    """Autograd of :func:`noise_bias_leaky_relu_`: in place, saving only the output.

    ``x`` is overwritten with the activation; ``shape`` is the [B, C, H, W] view it is computed
    in (``x`` itself may be the flat [1, B*C, H, W] output of a grouped convolution).
    """

    @staticmethod
    def forward(ctx, x, shape, bias, noise, noise_weight):  # type: ignore[override]
        _noise_bias_leaky_relu_inplace(x.view(shape), bias, noise, noise_weight)
        ctx.mark_dirty(x)
        ctx.save_for_backward(x, noise, noise_weight)
        ctx.shape = shape
        ctx.noise_shape = None if noise is None else torch.broadcast_shapes(noise_weight.shape, noise.shape)
        return x

    @staticmethod
    @once_differentiable  # the in-place backward is not itself differentiable
    def backward(ctx, grad):  # type: ignore[override]
        out, noise, noise_weight = ctx.saved_tensors
        need_x, _, need_bias, need_noise, need_weight = ctx.needs_input_grad
        # The same kernels, in the same order, as autograd of the unfused ops: mul by the gain,
        # leaky_relu_backward (out > 0 exactly where the pre-activation is > 0, the gain and
        # the slope being positive), then the broadcast sums of the two additions.
        grad_pre = grad.reshape(ctx.shape) * LEAKY_GAIN
        torch.ops.aten.leaky_relu_backward.grad_input(
            grad_pre, out.view(ctx.shape), LEAKY_SLOPE, True, grad_input=grad_pre
        )
        grad_bias = grad_noise = grad_weight = None
        if need_bias:
            grad_bias = grad_pre.sum_to_size(1, grad_pre.shape[1], 1, 1).view(-1)
        if need_noise or need_weight:
            grad_term = grad_pre.sum_to_size(ctx.noise_shape)
            if need_noise:
                grad_noise = (grad_term * noise_weight).sum_to_size(noise.shape)
            if need_weight:
                grad_weight = (grad_term * noise).sum_to_size(noise_weight.shape)
        grad_x = grad_pre.reshape(out.shape) if need_x else None
        return grad_x, None, grad_bias, grad_noise, grad_weight


def noise_bias_leaky_relu_(
    x: Tensor, bias: Tensor, noise: Tensor | None = None, noise_weight: Tensor | None = None
) -> Tensor:
    """``leaky_relu(x + noise_weight * noise + bias, 0.2) * sqrt(2)``, computed in ``x``'s memory.

    StyleGAN2's noise injection followed by its fused leaky ReLU (the ops of
    :class:`NoiseInjection <essencekit.models.stylegan2.NoiseInjection>` then
    :func:`fused_leaky_relu`), with identical results and gradients. ``x`` [B, C, H, W] must be
    a fresh intermediate (a convolution's output) that nothing else uses: it is overwritten.

    Why: unfused, every step allocates a full-size tensor and autograd keeps the
    pre-activation alive besides the output. Here no new tensor is made in the forward pass
    and only the output is kept for backward (as the reference's CUDA kernel does): its sign
    is the pre-activation's. Together with the blur's lean backward and the grouped form's
    one-multiplication weights this took forward + backward of the generator at 1024 px,
    batch 4 on a 2-core CPU from 31.2 to 21.2 s and from 7.1 to 4.7 GiB peak (without huge
    pages; docs/performance.md).

    Where the unfused ops would promote to another dtype (``x`` in bf16 under autocast, the
    parameters in fp32) they run unfused, so the result dtype stays what it was.
    """
    operands = [t for t in (bias, noise, noise_weight) if t is not None]
    if any(t.dtype != x.dtype for t in operands):
        if noise is not None:
            x = x + noise_weight * noise
        return fused_leaky_relu(x, bias)
    if not (torch.is_grad_enabled() and (x.requires_grad or any(t.requires_grad for t in operands))):
        return _noise_bias_leaky_relu_inplace(x, bias, noise, noise_weight)
    # A reshaped convolution output is a view: modified in place, autograd would route its
    # gradient through a copy of the whole base tensor (CopySlices). When the view is just
    # the base reshaped, apply to the base instead.
    base = x._base
    if base is not None and base.numel() == x.numel() and _is_reshape_of(x, base):
        return _NoiseBiasLeakyReLU.apply(base, x.shape, bias, noise, noise_weight).view(x.shape)
    return _NoiseBiasLeakyReLU.apply(x, x.shape, bias, noise, noise_weight)


def _is_reshape_of(x: Tensor, base: Tensor) -> bool:
    """Whether ``base.view(x.shape)`` is ``x`` (same memory, same element order)."""
    try:
        again = base.view(x.shape)
    except RuntimeError:
        return False
    return again.data_ptr() == x.data_ptr() and again.stride() == x.stride()


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
