"""e4e's inference form (essencekit.models.e4e_inference): the same codes as the encoder it
was built from, and that encoder left exactly as it was (its training needs it so)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch import nn

from essencekit.models.e4e import E4E, Encoder4Editing, load_encoder_checkpoint
from essencekit.models.e4e_inference import FoldedEncoder, fold_conv_bn, inference_form

TINY_E4E = Path(__file__).parent / "fixtures" / "tiny-e4e.pt"


def randomise_batchnorms(model: nn.Module, seed: int = 0) -> None:
    """BatchNorm statistics and affine parameters far from the identity they start as, so a
    wrong fold cannot pass unnoticed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                n = module.num_features
                module.running_mean.copy_(torch.randn(n, generator=generator))
                module.running_var.copy_(torch.rand(n, generator=generator) * 2 + 0.1)
                module.weight.copy_(torch.randn(n, generator=generator))
                module.bias.copy_(torch.randn(n, generator=generator))


@pytest.fixture
def e4e() -> E4E:
    model = load_encoder_checkpoint(TINY_E4E)
    randomise_batchnorms(model.encoder)
    return model


def images(batch: int = 2, size: int = 64, dtype=torch.float32) -> torch.Tensor:
    return (torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1).to(dtype)


def test_folded_codes_equal_the_encoders_in_float64(e4e):
    # in float64 the only difference is rounding far below float32's: any slip in the folding
    # (a scale on the wrong axis, a shift lost) shows as an error of order one
    plain = copy.deepcopy(e4e).double()
    folded = inference_form(plain)
    x = images(size=plain.input_size, dtype=torch.float64)
    expected, actual = plain.invert(x), folded.invert(x)
    assert (actual - expected).abs().max().item() < 1e-10 * max(1.0, expected.abs().max().item())


def test_folded_codes_match_in_float32(e4e):
    x = images(size=e4e.input_size)
    expected, actual = e4e.invert(x), inference_form(e4e).invert(x)
    assert actual.dtype == torch.float32
    assert (actual - expected).abs().max().item() < 1e-4 * max(1.0, expected.abs().max().item())


def test_the_original_encoder_is_left_as_it_was(e4e):
    encoder = e4e.encoder
    encoder.train()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    modes = [m.training for m in encoder.modules()]
    x = images(size=e4e.input_size)
    twin = copy.deepcopy(encoder)
    folded = inference_form(e4e)

    assert isinstance(folded.encoder, FoldedEncoder) and folded is not e4e and e4e.encoder is encoder
    assert type(encoder) is Encoder4Editing
    after = encoder.state_dict()
    assert list(after) == list(before)  # the official key names, all of them, in order
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert [m.training for m in encoder.modules()] == modes
    # training mode still normalises with the batch's statistics, as before
    with torch.no_grad():
        assert torch.allclose(encoder(x), twin(x))
    assert not folded.training and not folded.encoder.training


def test_the_inference_form_shares_the_generator_and_latent_avg(e4e):
    folded = inference_form(e4e)
    assert folded.generator is e4e.generator
    assert folded.latent_avg.data_ptr() == e4e.latent_avg.data_ptr()
    assert (folded.n_latent, folded.style_dim, folded.input_size) == (e4e.n_latent, e4e.style_dim, e4e.input_size)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.encoder.modules())
    assert not any(isinstance(m, nn.MaxPool2d) for m in folded.encoder.modules())


def test_gradients_reach_the_input_as_through_the_encoder(e4e):
    x1 = images(1, e4e.input_size).requires_grad_(True)
    x2 = x1.detach().clone().requires_grad_(True)
    e4e.invert(x1, requires_grad=True).square().sum().backward()
    inference_form(e4e).invert(x2, requires_grad=True).square().sum().backward()
    scale = x1.grad.abs().max().item()
    assert (x1.grad - x2.grad).abs().max().item() < 1e-4 * max(1.0, scale)


def test_the_input_checks_are_the_encoders(e4e):
    from essencekit.errors import EssencekitError

    with pytest.raises(EssencekitError, match="expects images of shape"):
        inference_form(e4e).invert(torch.zeros(1, 3, 8, 8))


def test_other_models_are_returned_as_they_are(e4e):
    class Custom(Encoder4Editing):
        pass

    custom = E4E(Custom(e4e.encoder.config), e4e.generator, e4e.latent_avg)
    assert inference_form(custom) is custom
    other = nn.Linear(2, 2)
    assert inference_form(other) is other


def test_fold_keeps_the_weights_memory_format():
    conv, bn = nn.Conv2d(4, 6, 3, padding=1, bias=True), nn.BatchNorm2d(6).eval()
    randomise_batchnorms(bn)
    conv.weight.data = conv.weight.data.contiguous(memory_format=torch.channels_last)
    folded = fold_conv_bn(conv, bn)
    assert folded.weight.is_contiguous(memory_format=torch.channels_last)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    with torch.no_grad():
        assert torch.allclose(fold_conv_bn(conv.double(), bn.double())(x), bn(conv(x)), atol=1e-12)


def test_a_transfer_inverts_with_the_inference_form():
    from essencekit.transfers.api import Transferrer

    models = Transferrer(encoder=TINY_E4E, device="cpu")
    assert isinstance(models.encoder.encoder, FoldedEncoder)
    assert models.generator is models.encoder.generator
