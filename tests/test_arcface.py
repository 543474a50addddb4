"""The ArcFace IR-SE identity model against the reference outputs (tests/fixtures/README.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import essencekit
from essencekit.errors import EssencekitError
from essencekit.models.arcface import (
    ArcFaceIRSE,
    arcface_from_state_dict,
    infer_arcface_config,
    load_identity_checkpoint,
    preprocess_faces,
)

FIXTURES = Path(__file__).parent / "fixtures"
TINY_ARCFACE = FIXTURES / "tiny-arcface.pth"


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    assert actual.shape == expected.shape
    return (actual - expected).abs().max().item() / expected.abs().max().item()


@pytest.fixture(scope="module")
def golden() -> dict:
    return torch.load(FIXTURES / "tiny-arcface-golden.pt", weights_only=True)


@pytest.fixture(scope="module")
def state_dict() -> dict:
    return torch.load(TINY_ARCFACE, weights_only=True)


@pytest.fixture(scope="module")
def model() -> ArcFaceIRSE:
    return load_identity_checkpoint(TINY_ARCFACE)


# --------------------------------------------------------------------------- architecture


def test_tiny_architecture_is_inferred(model, state_dict):
    config = model.config
    assert config.stage_widths == (16, 32, 48, 64)
    assert config.stage_units == (3, 4, 14, 3)
    assert [u.stride for u in config.units[:4]] == [2, 1, 1, 2]
    assert [u.se_channels for u in config.units] == [max(1, u.depth // 16) for u in config.units]
    assert (config.feature_size, config.input_size, config.embedding_dim) == (7, 112, 64)
    assert config.affine
    # every tensor of the file is the model's, under the same name
    assert set(model.state_dict()) == set(state_dict)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state_dict[key], rtol=0, atol=0)


def test_model_is_frozen_and_stays_in_eval_mode(model):
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    model.train()
    assert not model.training and not any(m.training for m in model.modules())


def test_real_layout_loads_into_the_inferred_architecture():
    """model_ir_se50.pth's key shapes give ir_se-50: 112x112 faces to 512-d embeddings."""
    shapes = json.loads((FIXTURES / "ir_se50-arcface.keys.json").read_text())
    generator = torch.Generator().manual_seed(0)

    def tensor(key, shape):
        if key.endswith("num_batches_tracked"):
            return torch.zeros(shape, dtype=torch.int64)
        if key.endswith("running_var"):
            return torch.rand(shape, generator=generator) + 0.5
        return torch.randn(shape, generator=generator) * 0.05

    state_dict = {key: tensor(key, shape) for key, shape in shapes.items()}
    model = arcface_from_state_dict(state_dict, source="model_ir_se50.pth")
    config = model.config
    assert config.stage_widths == (64, 128, 256, 512)
    assert config.stage_units == (3, 4, 14, 3)
    assert [u.se_channels for u in config.units] == [u.depth // 16 for u in config.units]
    assert (config.input_size, config.embedding_dim, model.embedding_dim) == (112, 512, 512)
    # strict and by reference: every tensor of the file is the model's own
    adopted = model.state_dict(keep_vars=True)
    assert set(adopted) == set(shapes)
    assert all(adopted[k].data_ptr() == state_dict[k].data_ptr() for k in shapes)
    assert sum(p.numel() for p in model.parameters()) > 40_000_000
    with torch.no_grad():
        embedding = model(torch.rand(1, 3, 112, 112) * 2 - 1)
    assert embedding.shape == (1, 512)
    torch.testing.assert_close(embedding.norm(dim=1), torch.ones(1))


# --------------------------------------------------------------------------- golden outputs


def test_forward_matches_the_reference(model, golden):
    with torch.no_grad():
        feats = model(golden["arcface.x112"])
    assert relative_error(feats, golden["arcface.feats112"]) < 1e-5


def test_embed_matches_the_reference_crop_and_pool(model, golden):
    with torch.no_grad():
        feats = model.embed(golden["arcface.x256"])
    assert relative_error(feats, golden["arcface.feats256"]) < 1e-5
    # the crop matters: the raw model on the whole 256 image resized to 112 differs
    with torch.no_grad():
        uncropped = model(F.adaptive_avg_pool2d(golden["arcface.x256"], 112))
    assert relative_error(uncropped, golden["arcface.feats256"]) > 1e-2


def test_embed_pools_other_sizes_to_256_first(model, golden):
    x256 = golden["arcface.x256"]
    x1024 = x256.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # pools back exactly
    with torch.no_grad():
        feats = model.embed(x1024)
    assert relative_error(feats, golden["arcface.feats256"]) < 1e-5
    assert preprocess_faces(torch.zeros(2, 3, 1024, 1024)).shape == (2, 3, 112, 112)


@pytest.mark.parametrize("size", [64, 1000])
def test_embed_any_square_size_gives_unit_vectors(model, size):
    images = torch.rand(3, 3, size, size, generator=torch.Generator().manual_seed(size)) * 2 - 1
    with torch.no_grad():
        feats = model.embed(images)
    assert feats.shape == (3, 64)
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(3))
    # different faces, different embeddings
    assert (feats[0] - feats[1]).abs().max() > 1e-3


@pytest.mark.parametrize(
    "images",
    [
        torch.zeros(3, 112, 112),
        torch.zeros(1, 3, 112, 100),
        torch.zeros(1, 1, 112, 112),
        torch.zeros(0, 3, 112, 112),
        torch.zeros(1, 3, 112, 112, dtype=torch.uint8),
        torch.full((1, 3, 112, 112), 255.0),
        torch.full((1, 3, 112, 112), float("nan")),
    ],
    ids=["no-batch", "non-square", "gray", "empty", "uint8", "0-255", "nan"],
)
def test_embed_refuses_wrong_input(model, images):
    with pytest.raises(EssencekitError, match="ArcFace model expects"):
        model.embed(images)


def test_forward_needs_the_input_size(model):
    with pytest.raises(EssencekitError, match=r"\[B, 3, 112, 112\]"):
        model(torch.zeros(1, 3, 256, 256))


def test_gradients_reach_the_images_not_the_weights(model, golden):
    images = golden["arcface.x256"].clone().requires_grad_()
    for _ in range(2):
        model.embed(images).sum().backward()
    assert images.grad is not None and images.grad.abs().max() > 0
    assert all(p.grad is None for p in model.parameters())
    # the BatchNorm statistics did not move either
    reference = torch.load(TINY_ARCFACE, weights_only=True)
    torch.testing.assert_close(
        model.output_layer[4].running_mean, reference["output_layer.4.running_mean"], rtol=0, atol=0
    )


# --------------------------------------------------------------------------- bad files


def test_not_an_arcface_file(tmp_path):
    for name, hint in (("tiny-stylegan2.pt", "StyleGAN2"), ("tiny-e4e.pt", "e4e")):
        with pytest.raises(EssencekitError, match=f"not an ArcFace IR-SE state dict.*{hint}") as caught:
            load_identity_checkpoint(FIXTURES / name)
        assert name in str(caught.value)
        assert "\n" not in str(caught.value)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00\x01 not a checkpoint " * 20)
    with pytest.raises(EssencekitError, match="garbage.pth"):
        load_identity_checkpoint(garbage)
    with pytest.raises(EssencekitError, match="not found"):
        load_identity_checkpoint(tmp_path / "absent.pth")
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(EssencekitError, match="tensor.pth"):
        load_identity_checkpoint(tensor)


def test_missing_key_is_named(state_dict, tmp_path):
    broken = dict(state_dict)
    del broken["body.5.res_layer.5.fc2.weight"]
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    with pytest.raises(EssencekitError, match=r"broken\.pth.*missing.*body\.5\.res_layer\.5\.fc2"):
        load_identity_checkpoint(path)
    del broken["output_layer.3.weight"]
    torch.save(broken, path)
    with pytest.raises(EssencekitError, match=r"broken\.pth.*output_layer\.3\.weight"):
        load_identity_checkpoint(path)


def test_wrong_shape_and_extra_keys_are_refused(state_dict, tmp_path):
    path = tmp_path / "reshaped.pth"
    torch.save(dict(state_dict, **{"body.2.res_layer.2.weight": torch.zeros(17)}), path)
    with pytest.raises(EssencekitError, match=r"reshaped\.pth does not fit"):
        load_identity_checkpoint(path)
    torch.save(dict(state_dict, **{"head.kernel": torch.zeros(64, 10)}), path)
    with pytest.raises(EssencekitError, match=r"reshaped\.pth.*unexpected.*head\.kernel"):
        load_identity_checkpoint(path)
    torch.save(dict(state_dict, **{"output_layer.3.weight": torch.zeros(64, 3000)}), path)
    with pytest.raises(EssencekitError, match=r"reshaped\.pth.*unsupported.*3000"):
        load_identity_checkpoint(path)


def test_wrapped_and_data_parallel_files_load(state_dict, golden, tmp_path):
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state_dict.items()}}, path)
    model = load_identity_checkpoint(path)
    with torch.no_grad():
        feats = model(golden["arcface.x112"])
    assert relative_error(feats, golden["arcface.feats112"]) < 1e-5


def test_infer_config_refuses_an_encoder_state_dict():
    e4e = torch.load(FIXTURES / "tiny-e4e.pt", weights_only=True)["state_dict"]
    encoder = {k[8:]: v for k, v in e4e.items() if k.startswith("encoder.")}
    with pytest.raises(EssencekitError, match="output_layer"):
        infer_arcface_config(encoder, source="e4e encoder")


# --------------------------------------------------------------------------- public API


def test_load_identity_model_from_a_path(golden):
    arcface = essencekit.load_identity_model(TINY_ARCFACE, device="cpu")
    assert isinstance(arcface, ArcFaceIRSE)
    assert not any(p.requires_grad for p in arcface.parameters())
    with torch.no_grad():
        feats = arcface.embed(golden["arcface.x256"])
    assert relative_error(feats, golden["arcface.feats256"]) < 1e-5


def test_load_identity_model_default_artifact_is_arcface(monkeypatch, tmp_path):
    from essencekit import api

    asked = []

    def resolve(path, default):
        asked.append((path, default))
        return TINY_ARCFACE

    monkeypatch.setattr(api, "resolve_weights", resolve)
    arcface = essencekit.load_identity_model(device="cpu")
    assert asked == [(None, "arcface-ir-se50")]
    assert arcface.embedding_dim == 64


def test_load_identity_model_missing_artifact_names_pull_weights():
    with pytest.raises(EssencekitError, match="pull-weights"):
        essencekit.load_identity_model(device="cpu")
