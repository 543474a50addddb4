"""The e4e encoder against the reference implementation's outputs (tests/fixtures/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from essencekit.errors import EssencekitError
from essencekit.models.e4e import (
    E4E,
    Encoder4Editing,
    e4e_from_state_dict,
    infer_encoder_config,
    load_encoder_checkpoint,
)

FIXTURES = Path(__file__).parent / "fixtures"
TINY_E4E = FIXTURES / "tiny-e4e.pt"


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().item()
    error = (actual - expected).abs().max().item()
    assert error < 1e-4 * max(scale, 1.0), f"max abs diff {error} (scale {scale})"


@pytest.fixture(scope="module")
def checkpoint() -> dict:
    return torch.load(TINY_E4E, weights_only=True)


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(FIXTURES / "tiny-golden.pt", weights_only=True)


@pytest.fixture(scope="module")
def model() -> E4E:
    return load_encoder_checkpoint(TINY_E4E)


def encoder_part(state_dict: dict) -> dict:
    return {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}


# --------------------------------------------------------------------------- golden outputs


def test_codes_match_reference(model, golden):
    codes = model.invert(golden["e4e.x"])
    assert codes.shape == (2, 10, 64)
    assert not codes.requires_grad
    assert_close_to_scale(codes, golden["e4e.codes"])


def test_image_matches_reference(model, golden):
    with torch.no_grad():
        image = model.generator.synthesis(model.invert(golden["e4e.x"]), noise="const")
    assert_close_to_scale(image, golden["e4e.image"])


def test_official_names_load_strictly_into_a_plain_module(checkpoint, golden):
    encoder_sd = encoder_part(checkpoint["state_dict"])
    config = infer_encoder_config(encoder_sd)
    assert config.stage_widths == (16, 32, 48, 64)
    assert config.stage_units == (3, 4, 14, 3)
    assert config.taps == (6, 20, 23)
    assert (config.n_latent, config.style_dim, config.input_size) == (10, 64, 256)
    assert (config.coarse_ind, config.middle_ind) == (3, 7)
    encoder = Encoder4Editing(config)
    encoder.load_state_dict(encoder_sd, strict=True)
    with torch.no_grad():
        codes = encoder.eval()(golden["e4e.x"]) + checkpoint["latent_avg"]
    assert_close_to_scale(codes, golden["e4e.codes"])


def test_loaded_model_is_frozen_eval_and_shares_the_checkpoint_tensors(checkpoint, model):
    assert not model.training and not model.encoder.training and not model.generator.training
    assert not any(p.requires_grad for p in model.parameters())
    assert (model.n_latent, model.style_dim) == (10, 64)
    state_dict = checkpoint["state_dict"]
    built = e4e_from_state_dict(state_dict, checkpoint["latent_avg"])
    # The encoder adopts the checkpoint's storage instead of copying ~1 GB at full size.
    assert built.encoder.styles[9].linear.weight.data_ptr() == (
        state_dict["encoder.styles.9.linear.weight"].data_ptr()
    )


def test_invert_can_keep_the_graph(model, golden):
    images = golden["e4e.x"][:1].clone().requires_grad_(True)
    codes = model.invert(images, requires_grad=True)
    codes.sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0


# --------------------------------------------------------------------------- latent_avg


def test_latent_avg_is_added_per_row(checkpoint, model, golden):
    latent_avg = checkpoint["latent_avg"]
    assert torch.equal(model.latent_avg, latent_avg)
    # The fixture's rows differ, so using one row for all would be caught here.
    assert not torch.equal(latent_avg, latent_avg[:1].expand_as(latent_avg))
    with torch.no_grad():
        raw = model.encoder(golden["e4e.x"])
    assert_close_to_scale(model.invert(golden["e4e.x"]) - raw, latent_avg.expand(2, -1, -1))
    assert (raw + latent_avg[0] - golden["e4e.codes"]).abs().max() > 1e-2


def test_generator_latent_avg_from_the_rows(checkpoint, model):
    latent_avg = checkpoint["latent_avg"]
    assert model.generator.latent_avg.shape == (64,)
    assert torch.allclose(model.generator.latent_avg, latent_avg.mean(0), atol=1e-6)

    # Published checkpoints repeat one mean w on every row: that row is used exactly.
    row = latent_avg[3] + 1 / 3
    repeated = e4e_from_state_dict(checkpoint["state_dict"], row.repeat(10, 1))
    assert torch.equal(repeated.generator.latent_avg, row)
    assert torch.equal(repeated.latent_avg, row.repeat(10, 1))

    # A single [style_dim] latent_avg is broadcast to every row, as e4e's repeat does.
    single = e4e_from_state_dict(checkpoint["state_dict"], row)
    assert torch.equal(single.latent_avg, row.repeat(10, 1))


def test_latent_avg_wrong_shape_or_missing(checkpoint):
    with pytest.raises(EssencekitError, match="latent_avg"):
        e4e_from_state_dict(checkpoint["state_dict"], torch.zeros(9, 64))
    with pytest.raises(EssencekitError, match="latent_avg"):
        e4e_from_state_dict(checkpoint["state_dict"], None, opts=checkpoint["opts"])


# --------------------------------------------------------------------------- input validation


@pytest.mark.parametrize(
    "images",
    [
        torch.zeros(3, 256, 256),
        torch.zeros(1, 3, 128, 128),
        torch.zeros(1, 3, 256, 255),
        torch.zeros(1, 1, 256, 256),
        torch.zeros(1, 4, 256, 256),
        torch.zeros(0, 3, 256, 256),
        torch.zeros(1, 3, 256, 256, dtype=torch.uint8),
        torch.full((1, 3, 256, 256), 255.0),
        torch.full((1, 3, 256, 256), float("nan")),
    ],
    ids=["no-batch", "128px", "non-square", "gray", "rgba", "empty", "uint8", "0-255", "nan"],
)
def test_wrong_input_raises(model, images):
    with pytest.raises(EssencekitError, match="e4e expects"):
        model.invert(images)


def test_wrong_input_to_the_bare_encoder_raises(model):
    with pytest.raises(EssencekitError, match=r"\[B, 3, 256, 256\]"):
        model.encoder(torch.zeros(1, 3, 512, 512))


# --------------------------------------------------------------------------- bad files


def test_not_an_e4e_checkpoint(tmp_path):
    for name in ("tiny-stylegan2.pt", "tiny-arcface.pth"):
        with pytest.raises(EssencekitError, match="not an e4e checkpoint") as caught:
            load_encoder_checkpoint(FIXTURES / name)
        assert name in str(caught.value)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(EssencekitError, match="notes.pt"):
        load_encoder_checkpoint(text)
    with pytest.raises(EssencekitError, match="not found"):
        load_encoder_checkpoint(tmp_path / "absent.pt")


def test_psp_checkpoint_is_refused(checkpoint, tmp_path):
    # pSp's GradualStyleEncoder has the same keys but computes different codes.
    opts = dict(checkpoint["opts"], encoder_type="GradualStyleEncoder")
    path = tmp_path / "psp.pt"
    torch.save(dict(checkpoint, opts=opts), path)
    with pytest.raises(EssencekitError, match="GradualStyleEncoder"):
        load_encoder_checkpoint(path)


def test_missing_encoder_key(checkpoint, tmp_path):
    state_dict = dict(checkpoint["state_dict"])
    del state_dict["encoder.body.5.res_layer.5.fc2.weight"]
    path = tmp_path / "broken.pt"
    torch.save(dict(checkpoint, state_dict=state_dict), path)
    with pytest.raises(EssencekitError, match=r"broken\.pt.*encoder\.body\.5\.res_layer\.5\.fc2"):
        load_encoder_checkpoint(path)


def test_missing_decoder(checkpoint):
    state_dict = {k: v for k, v in checkpoint["state_dict"].items() if k.startswith("encoder.")}
    with pytest.raises(EssencekitError, match="decoder"):
        e4e_from_state_dict(state_dict, checkpoint["latent_avg"])
    incomplete = dict(checkpoint["state_dict"])
    del incomplete["decoder.conv1.conv.weight"]
    with pytest.raises(EssencekitError, match="decoder"):
        e4e_from_state_dict(incomplete, checkpoint["latent_avg"])


def test_encoder_decoder_mismatch(checkpoint):
    state_dict = {
        k: v for k, v in checkpoint["state_dict"].items() if not k.startswith("encoder.styles.9.")
    }
    with pytest.raises(EssencekitError, match="do not match.*9 codes.*10"):
        e4e_from_state_dict(state_dict, checkpoint["latent_avg"][:9])


# --------------------------------------------------------------------------- the real layout


def test_real_ffhq_layout_builds():
    """e4e_ffhq_encode.pt's key shapes give the ir_se-50 / 18 x 512 architecture."""
    shapes = json.loads((FIXTURES / "e4e-ffhq-1024.keys.json").read_text())

    def placeholder(key, shape, device):
        dtype = torch.int64 if key.endswith("num_batches_tracked") else torch.float32
        return torch.zeros(shape, dtype=dtype, device=device)

    # Encoder weights on the meta device: shapes only, so the 267 M parameters cost nothing,
    # and a meta forward still checks every tap, upsampling and flatten at full size.
    state_dict = {
        k: placeholder(k, s, "meta" if k.startswith("encoder.") else "cpu") for k, s in shapes.items()
    }
    model = e4e_from_state_dict(state_dict, torch.zeros(18, 512))
    config = model.encoder.config
    assert config.stage_widths == (64, 128, 256, 512)
    assert config.stage_units == (3, 4, 14, 3)
    assert config.taps == (6, 20, 23)
    assert config.style_convs == (4,) * 3 + (5,) * 4 + (6,) * 11
    assert (model.n_latent, model.style_dim, config.input_size) == (18, 512, 256)
    assert (model.generator.size, model.generator.n_latent) == (1024, 18)
    assert sum(p.numel() for p in model.encoder.parameters()) > 250_000_000
    codes = model.encoder(torch.zeros(2, 3, 256, 256, device="meta"))
    assert codes.shape == (2, 18, 512)
