"""The reference implementation's resampling ops, re-implemented for the benchmark.

The published StyleGAN2 code that TargetCLIP and e4e run falls back, on the CPU (and wherever
its compiled CUDA extension is unavailable), to a pure-PyTorch ``upfirdn2d``. That function
treats every channel of every sample as its own single-channel image:

1. ``[B, C, H, W]`` is reshaped to ``[B*C, H, W, 1]`` (channels-last with one channel),
2. zeros are inserted for upsampling by viewing it as ``[N, H, 1, W, 1, 1]`` and padding the
   unit dimensions with ``F.pad`` (this pad runs, and copies, even when nothing is inserted),
3. the border is padded (and cropped for negative pads),
4. the result is permuted to ``[B*C, 1, H', W']`` and filtered with *one* single-channel
   ``F.conv2d`` over a batch of ``B*C`` images, with the flipped FIR kernel,
5. permuted back, subsampled and reshaped to ``[B, C, H'', W'']``.

It computes exactly what :func:`essencekit.models.ops.blur` and
:func:`~essencekit.models.ops.upsample2x` compute, but with ``B*C`` single-channel
convolutions and several layout copies, which on the CPU is slow and keeps a lot of memory
alive for the backward pass.

The reference also runs each layer's noise injection, bias and leaky ReLU as separate ops, and
builds the grouped form's per-sample weights in five steps; essencekit's generator only has
the fused forms of those (:class:`~essencekit.models.stylegan2.StyledConv`,
:meth:`~essencekit.models.stylegan2.ModulatedConv2d._grouped_weight`).
:func:`use_reference_sequence` gives a generator the reference's sequence back, and
:func:`use_reference_ops` swaps in the resampling too (the blur after each transposed
up-convolution and the ToRGB skip upsampling), so that the benchmarks time "the reference" on
the very same weights; with the grouped modulated convolution (the reference's form) that is
the reference generator's arithmetic.

Only for measurement and for the tests that hold the fused forms to the reference's numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from essencekit.models.stylegan2 import (
    Blur,
    Generator,
    GeneratorConfig,
    ModulatedConv2d,
    StyledConv,
    Upsample,
)


def upfirdn2d_reference(
    x: Tensor, kernel: Tensor, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)
) -> Tensor:
    """Upsample (zero insertion), FIR-filter and downsample ``x`` [B, C, H, W], reference form.

    ``pad = (before, after)`` applies to both spatial dimensions after the zero insertion
    (negative values crop). The filter is a true convolution (kernel flipped). See the module
    docstring for the sequence of reshapes, pads and permutes this deliberately keeps.
    """
    batch, channels, height, width = x.shape
    k_h, k_w = kernel.shape
    pad0, pad1 = pad

    # 1. every (sample, channel) pair becomes one image with a trailing unit channel
    out = x.reshape(batch * channels, height, width, 1)

    # 2. zero insertion: [N, H, 1, W, 1, 1] padded to [N, H, up, W, up, 1], then merged
    out = out.view(-1, height, 1, width, 1, 1)
    out = F.pad(out, [0, 0, 0, up - 1, 0, 0, 0, up - 1])
    up_h, up_w = height * up, width * up
    out = out.view(-1, up_h, up_w, 1)

    # 3. border: pad the positive parts, crop the negative parts
    out = F.pad(out, [0, 0, max(pad0, 0), max(pad1, 0), max(pad0, 0), max(pad1, 0)])
    out = out[
        :,
        max(-pad0, 0) : out.shape[1] - max(-pad1, 0),
        max(-pad0, 0) : out.shape[2] - max(-pad1, 0),
        :,
    ]
    padded_h, padded_w = up_h + pad0 + pad1, up_w + pad0 + pad1

    # 4. one single-channel convolution over B*C images
    out = out.permute(0, 3, 1, 2).reshape(-1, 1, padded_h, padded_w)
    weight = kernel.flip((0, 1)).reshape(1, 1, k_h, k_w).to(out.dtype)
    out = F.conv2d(out, weight)

    # 5. back to channels-last, subsample, and back to [B, C, H'', W'']
    conv_h, conv_w = padded_h - k_h + 1, padded_w - k_w + 1
    out = out.reshape(-1, 1, conv_h, conv_w).permute(0, 2, 3, 1)
    out = out[:, ::down, ::down, :]
    out_h, out_w = (conv_h + down - 1) // down, (conv_w + down - 1) // down
    return out.reshape(batch, channels, out_h, out_w)


class ReferenceBlur(nn.Module):
    """:class:`~essencekit.models.stylegan2.Blur` computed with :func:`upfirdn2d_reference`."""

    def __init__(self, kernel: Tensor, pad: tuple[int, int]) -> None:
        super().__init__()
        self.register_buffer("kernel", kernel.detach().clone())
        self.pad = tuple(pad)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d_reference(x, self.kernel, pad=self.pad)


class ReferenceUpsample(nn.Module):
    """:class:`~essencekit.models.stylegan2.Upsample` (2x) computed with :func:`upfirdn2d_reference`."""

    def __init__(self, kernel: Tensor) -> None:
        super().__init__()
        self.register_buffer("kernel", kernel.detach().clone())
        excess = kernel.shape[0] - 2
        self.pad = ((excess + 1) // 2 + 1, excess // 2)

    def forward(self, x: Tensor) -> Tensor:
        return upfirdn2d_reference(x, self.kernel, up=2, pad=self.pad)


class ReferenceModulatedConv2d(ModulatedConv2d):
    """:class:`~essencekit.models.stylegan2.ModulatedConv2d` whose grouped form builds the
    per-sample weights with the reference's op sequence (and transposes them for the
    up-convolution with one more copy)."""

    def _grouped_weight(self, style: Tensor, transposed: bool = False) -> Tensor:
        batch = style.shape[0]
        weight = self.scale * self.weight * style.view(batch, 1, self.in_channel, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt(weight.square().sum((2, 3, 4)) + 1e-8)
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)
        return weight.transpose(1, 2) if transposed else weight


class UnfusedStyledConv(StyledConv):
    """:class:`~essencekit.models.stylegan2.StyledConv` with the reference's separate noise
    injection and biased leaky ReLU, each a new full-size tensor kept for backward."""

    def forward(self, x: Tensor, style: Tensor, noise: Tensor) -> Tensor:
        return self.activate(self.noise(self.conv(x, style), noise))


def use_reference_sequence(model: nn.Module, *, weights: bool = True, activations: bool = True) -> nn.Module:
    """Give ``model``'s layers (in place) the reference's op sequence: the per-sample weights
    (``weights``) and the unfused noise, bias and activation (``activations``); returns it.
    Parameters and results stay the same, to float rounding."""
    swaps = {ModulatedConv2d: ReferenceModulatedConv2d if weights else None,
             StyledConv: UnfusedStyledConv if activations else None}
    for module in model.modules():
        replacement = swaps.get(type(module))
        if replacement is not None:
            module.__class__ = replacement  # the same attributes, another forward
    return model


def use_reference_ops(generator: Generator) -> Generator:
    """Swap the reference resampling ops into ``generator`` (in place), select the grouped
    modulated convolution and the reference's unfused op sequence; returns it.

    Buffer names are unchanged (``*.blur.kernel``, ``*.upsample.kernel``), so state dicts still
    load. The kernels keep their device and dtype.
    """
    swaps: list[tuple[nn.Module, str, nn.Module]] = []
    for parent in generator.modules():
        for name, child in parent.named_children():
            if isinstance(child, Blur):
                swaps.append((parent, name, ReferenceBlur(child.kernel, child.pad)))
            elif isinstance(child, Upsample):
                swaps.append((parent, name, ReferenceUpsample(child.kernel)))
    for parent, name, replacement in swaps:
        setattr(parent, name, replacement)
    return use_reference_sequence(generator.set_modulated_conv("grouped"))


def reference_generator(config: GeneratorConfig) -> Generator:
    """A randomly initialised generator in the reference form (same RNG draws as ``Generator``)."""
    return use_reference_ops(Generator(config))


def uses_reference_ops(generator: nn.Module) -> bool:
    """Whether :func:`use_reference_ops` was applied to ``generator``."""
    return any(isinstance(m, (ReferenceBlur, ReferenceUpsample)) for m in generator.modules())


def uses_reference_sequence(model: nn.Module) -> bool:
    """Whether any layer of ``model`` runs the reference's op sequence (:func:`use_reference_sequence`)."""
    return any(isinstance(m, (ReferenceModulatedConv2d, UnfusedStyledConv)) for m in model.modules())
