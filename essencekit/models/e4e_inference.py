"""e4e's encoder in an inference-only form: the same function, less work per image.

:func:`inference_form` returns a new :class:`~essencekit.models.e4e.E4E` around a
:class:`FoldedEncoder` built from the original encoder's eval-mode arithmetic; the original
module, its parameters, state dict and training behaviour are left exactly as they are (the
encoder's training needs its BatchNorms and the official key names), and both share the
tensors they have in common (the embedded generator, ``latent_avg``, every convolution that
is not folded, the style blocks).

What changes, each exact up to float rounding:

* a BatchNorm that follows a convolution (the stem's, the second one of each residual branch,
  the projection shortcut's) is folded into that convolution's weights and a bias;
* a BatchNorm that precedes a padded convolution (the first of each residual branch) cannot be
  folded into it (the zero padding would be scaled too): it becomes one fused multiply-add with
  the running statistics baked in;
* the 1x1 max-pool "shortcut" of units that keep their width is a strided view instead of a
  pooling pass.

Measured on a 2-core Xeon (docs/performance.md), the backbone's share of an inversion shrinks by
these; the convolutions themselves, nearly all of the time, are unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from .e4e import E4E, Encoder4Editing
from .irse import BottleneckIRSE


def _bn_scale_shift(bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, shift)`` with ``bn(x) == x * scale + shift`` in eval mode, computed in float64."""
    var = bn.running_var.double()
    scale = torch.rsqrt(var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    return scale, shift


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new convolution computing ``bn(conv(x))`` (``bn`` in eval mode) in one pass."""
    scale, shift = _bn_scale_shift(bn)
    folded = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                       conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
                       device=conv.weight.device, dtype=conv.weight.dtype)
    weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
    bias = shift if conv.bias is None else conv.bias.double() * scale + shift
    # the folded weight keeps the original's memory format (channels-last where the backend chose it)
    folded.weight = nn.Parameter(weight.to(conv.weight.dtype).contiguous(memory_format=_format(conv.weight)),
                                 requires_grad=False)
    folded.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
    return folded


def _format(tensor: torch.Tensor) -> torch.memory_format:
    if tensor.dim() == 4 and not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


class Affine(nn.Module):
    """An eval-mode BatchNorm as one fused multiply-add (``x * scale + shift``)."""

    def __init__(self, bn: nn.BatchNorm2d):
        super().__init__()
        scale, shift = _bn_scale_shift(bn)
        dtype = bn.running_mean.dtype
        self.register_buffer("scale", scale.to(dtype).view(1, -1, 1, 1))
        self.register_buffer("shift", shift.to(dtype).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


class Subsample(nn.Module):
    """``MaxPool2d(1, stride)``: every ``stride``-th pixel, as a view."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.stride == 1 else x[:, :, :: self.stride, :: self.stride]


def _shortcut(layer: nn.Module) -> nn.Module:
    if isinstance(layer, nn.MaxPool2d):
        kernel, stride = layer.kernel_size, layer.stride
        if kernel in (1, (1, 1)) and isinstance(stride, int) and not layer.padding:
            return Subsample(stride)
        return layer
    conv, bn = layer
    return fold_conv_bn(conv, bn)


class FoldedUnit(nn.Module):
    """A :class:`~essencekit.models.irse.BottleneckIRSE` unit in inference form."""

    def __init__(self, unit: BottleneckIRSE):
        super().__init__()
        bn1, conv1, prelu, conv2, bn2, se = unit.res_layer
        self.res_layer = nn.Sequential(Affine(bn1), conv1, prelu, fold_conv_bn(conv2, bn2), se)
        self.shortcut_layer = _shortcut(unit.shortcut_layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class FoldedEncoder(nn.Module):
    """An :class:`~essencekit.models.e4e.Encoder4Editing` in inference form (eval mode only:
    BatchNorms use their running statistics whatever mode the original was in). Its forward is
    the original's (the same feature taps, FPN and style blocks), over the folded modules."""

    def __init__(self, encoder: Encoder4Editing):
        super().__init__()
        self.config = encoder.config
        conv, bn, prelu = encoder.input_layer
        self.input_layer = nn.Sequential(fold_conv_bn(conv, bn), prelu)
        self.body = nn.Sequential(*(FoldedUnit(unit) for unit in encoder.body))
        self.styles = encoder.styles
        self.latlayer1 = encoder.latlayer1
        self.latlayer2 = encoder.latlayer2
        # not eval(): that would recurse into the modules shared with the original, whose
        # mode is its trainer's to set (none of them behaves differently in either mode)
        self.training = False

    n_latent = Encoder4Editing.n_latent
    style_dim = Encoder4Editing.style_dim
    check_input = Encoder4Editing.check_input
    forward = Encoder4Editing.forward


def inference_form(e4e: E4E) -> E4E:
    """A new :class:`E4E` for inference whose encoder is ``e4e.encoder`` folded
    (:class:`FoldedEncoder`), with the same generator and ``latent_avg``; ``e4e`` itself is
    not changed; any other model (not an E4E around an Encoder4Editing) is returned as it is.
    Gradients still flow to the input (``invert(requires_grad=True)``).

    A snapshot: the folded convolutions are copies of the weights as they are now, so build it
    again after training changes them."""
    if not isinstance(e4e, E4E) or type(e4e.encoder) is not Encoder4Editing:
        return e4e  # another encoder (a subclass's forward may differ): used as it is
    with torch.no_grad():
        encoder = FoldedEncoder(e4e.encoder)
    model = E4E(encoder, e4e.generator, e4e.latent_avg)
    model.training = False
    return model
