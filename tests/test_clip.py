"""CLIP variants: the resize, the input modes, weight loading and the built-in plugin.

Tiny open_clip configs with random weights stand in for OpenAI's models; nothing is
downloaded.
"""

from __future__ import annotations

import zipfile
from fractions import Fraction

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_rn_variant
from PIL import Image
from safetensors.torch import save_file

import essencekit
from essencekit.clip import (
    OPENAI_MEAN,
    OPENAI_STD,
    ClipEncoder,
    ClipVariant,
    area_resize_matrix,
    build_clip_model,
    build_clip_visual,
    clip_resize,
    load_clip,
)
from essencekit.errors import EssencekitError
from essencekit.plugins import registered

_TINY_TEXT = {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1}

TINY_VIT = ClipVariant(
    name="tiny-vit",
    open_clip_config={
        "embed_dim": 32,
        "quick_gelu": True,
        "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
        "text_cfg": _TINY_TEXT,
    },
    weights="clip-tiny-vit",
    mean=OPENAI_MEAN,
    std=OPENAI_STD,
)

TINY_RN = tiny_rn_variant("tiny-rn", "clip-tiny-rn")

VARIANTS = {"tiny-vit": TINY_VIT, "tiny-rn": TINY_RN}


class TinyClipPlugin:
    @staticmethod
    @essencekit.hookimpl
    def register_clip_models(register):
        register(TINY_VIT)
        register(TINY_RN)


@pytest.fixture
def tiny_plugin(register_plugin):
    return register_plugin(TinyClipPlugin, "test-tiny-clip")


@pytest.fixture(scope="module")
def state_dicts() -> dict[str, dict[str, torch.Tensor]]:
    torch.manual_seed(0)
    result = {}
    for name, variant in VARIANTS.items():
        model = build_clip_model(variant)
        if name == "tiny-rn":  # non-trivial BatchNorm statistics, so eval mode matters
            for module in model.visual.modules():
                if isinstance(module, torch.nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.5, 1.5)
        result[name] = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    return result


def _visual(variant, state):
    return build_clip_visual(variant, state)


@pytest.fixture(scope="module")
def encoders(state_dicts) -> dict[tuple[str, str], ClipEncoder]:
    return {
        (name, mode): ClipEncoder(_visual(VARIANTS[name], state_dicts[name]), VARIANTS[name], input_mode=mode, generator_size=64)
        for name in VARIANTS
        for mode in ("raw", "standard")
    }


def assert_close_to_scale(actual, expected, tol=1e-5):
    assert actual.shape == expected.shape
    scale = max(expected.abs().max().item(), 1.0)
    error = (actual - expected).abs().max().item()
    assert error < tol * scale, f"max abs diff {error} (scale {scale})"


def naive_reference_resize(images: torch.Tensor) -> torch.Tensor:
    """The reference: nearest upsampling by 7, average pooling with kernel size/32."""
    size = images.shape[-1]
    return F.avg_pool2d(F.interpolate(images, scale_factor=7, mode="nearest"), kernel_size=size // 32)


# --------------------------------------------------------------------------- the resize


def test_resize_matches_golden(fixtures):
    golden = torch.load(fixtures / "tiny-golden.pt", weights_only=True)
    assert_close_to_scale(clip_resize(golden["clip_resize.in"]), golden["clip_resize.out"])


@pytest.mark.parametrize("size", [64, 256])
def test_resize_matches_naive_reference(size):
    images = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    assert_close_to_scale(clip_resize(images), naive_reference_resize(images))


def _exact_area_1d(src: int, dst: int) -> list[list[Fraction]]:
    rows = []
    for i in range(dst):
        low, high = Fraction(i * src, dst), Fraction((i + 1) * src, dst)
        rows.append([max(Fraction(0), min(high, j + 1) - max(low, j)) / (high - low) for j in range(src)])
    return rows


@pytest.mark.parametrize("size", [48, 100, 300])
def test_resize_non_multiple_uses_exact_area_weights(size):
    matrix = area_resize_matrix(size, 224, dtype=torch.float64)
    exact = torch.tensor([[float(w) for w in row] for row in _exact_area_1d(size, 224)], dtype=torch.float64)
    assert torch.allclose(matrix, exact, atol=1e-15, rtol=0)
    assert torch.allclose(matrix.sum(1), torch.ones(224, dtype=torch.float64))
    # the separable 2-D result equals upsampling by 224 (nearest) then pooling by `size`,
    # done one axis at a time (the 2-D intermediate would be huge)
    images = torch.randn(1, 2, size, size, dtype=torch.float64)
    rows = images.repeat_interleave(224, dim=-2).reshape(1, 2, 224, size, size).mean(3)
    both = rows.repeat_interleave(224, dim=-1).reshape(1, 2, 224, 224, size).mean(4)
    assert_close_to_scale(clip_resize(images), both, tol=1e-12)


def test_resize_is_cached_differentiable_and_keeps_224():
    assert area_resize_matrix(64, 224) is area_resize_matrix(64, 224)
    assert area_resize_matrix(64, 224, dtype=torch.float64).dtype == torch.float64
    images = torch.randn(1, 1, 40, 40, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: clip_resize(x, size=12), (images,))
    same = torch.randn(1, 3, 224, 224)
    assert torch.equal(clip_resize(same), same)


# --------------------------------------------------------------------------- the encoder


@pytest.mark.parametrize("name", list(VARIANTS))
def test_gradient_reaches_input_not_clip(encoders, name):
    encoder = encoders[(name, "raw")]
    encoder.train()  # must not switch BatchNorm statistics on
    assert not encoder.training and not encoder.visual.training
    images = torch.randn(2, 3, 64, 64, requires_grad=True)
    embeddings = encoder.encode_generated(images)
    assert embeddings.shape == (2, VARIANTS[name].embed_dim) == (2, encoder.embed_dim)
    assert embeddings.dtype == torch.float32
    embeddings.square().sum().backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(not p.requires_grad and p.grad is None for p in encoder.parameters())


@pytest.mark.parametrize("name", list(VARIANTS))
def test_generated_preprocessing_per_mode(encoders, state_dicts, name):
    reference = build_clip_model(VARIANTS[name])
    reference.load_state_dict(state_dicts[name])
    reference.eval()
    images = torch.rand(2, 3, 64, 64) * 2.2 - 1.1
    resized = naive_reference_resize(images)
    mean = torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        raw = encoders[(name, "raw")].encode_generated(images)
        standard = encoders[(name, "standard")].encode_generated(images)
        expected_raw = reference.encode_image(resized)
        expected_standard = reference.encode_image(((resized + 1) / 2 - mean) / std)
    assert_close_to_scale(raw, expected_raw, tol=1e-4)
    assert_close_to_scale(standard, expected_standard, tol=1e-4)
    assert not torch.allclose(raw, standard, atol=1e-3)


def _photo(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_raw_target_preprocessing(encoders):
    encoder = encoders[("tiny-vit", "raw")]
    photo = _photo(300, 200)
    square = photo.crop((50, 0, 250, 200)).resize((64, 64), Image.Resampling.LANCZOS)
    pixels = torch.from_numpy(np.asarray(square, dtype=np.float32)).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        expected = encoder.visual(naive_reference_resize(pixels))
    target = encoder.encode_target(photo)
    assert target.shape == (1, 32) and not target.requires_grad
    assert_close_to_scale(target, expected, tol=1e-4)


def test_standard_target_preprocessing(encoders):
    encoder = encoders[("tiny-rn", "standard")]
    photo = _photo(173, 311, seed=1)
    # by hand: bicubic resize of the short side to 224, center crop, mean/std
    resized = photo.resize((224, int(224 * 311 / 173)), Image.Resampling.BICUBIC)
    top = int(round((resized.height - 224) / 2))
    cropped = resized.crop((0, top, 224, top + 224))
    pixels = torch.from_numpy(np.asarray(cropped, dtype=np.float32)).permute(2, 0, 1)[None] / 255
    pixels = (pixels - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = encoder.visual(pixels)
    assert_close_to_scale(encoder.encode_target(photo), expected, tol=1e-4)


@pytest.mark.parametrize("mode", ["raw", "standard"])
def test_targets_of_any_mode_and_aspect(encoders, mode, tmp_path):
    encoder = encoders[("tiny-vit", mode)]
    rgb = _photo(97, 151, seed=2)
    for image in (rgb.convert("RGBA"), rgb.convert("L"), rgb.convert("P"), rgb.convert("LA"), rgb.convert("CMYK")):
        assert encoder.encode_target(image).shape == (1, 32)
    # transparency is composited on white
    clear = Image.new("RGBA", (120, 80), (0, 0, 0, 0))
    white = Image.new("RGB", (120, 80), (255, 255, 255))
    assert torch.equal(encoder.encode_target(clear), encoder.encode_target(white))
    # grey stays grey; a path works like the image
    path = tmp_path / "grey.png"
    rgb.convert("L").save(path)
    assert torch.equal(encoder.encode_target(path), encoder.encode_target(rgb.convert("L").convert("RGB")))
    with pytest.raises(EssencekitError, match="missing.png"):
        encoder.encode_target(tmp_path / "missing.png")


# --------------------------------------------------------------------------- loading


@pytest.mark.parametrize("name", list(VARIANTS))
def test_safetensors_round_trip_is_bit_exact(tiny_plugin, state_dicts, tmp_path, name):
    path = tmp_path / f"{name}.safetensors"
    save_file(state_dicts[name], str(path))
    loaded = load_clip(name, "cpu", input_mode="standard", generator_size=128, weights=path)
    in_memory = ClipEncoder(_visual(VARIANTS[name], state_dicts[name]), VARIANTS[name], input_mode="standard")
    assert (loaded.variant, loaded.input_mode, loaded.generator_size) == (VARIANTS[name], "standard", 128)
    assert loaded.device == torch.device("cpu")
    images = torch.rand(3, 3, 128, 128, dtype=torch.float64) * 2 - 1  # cast to float32 inside
    with torch.no_grad():
        assert torch.equal(loaded.encode_generated(images), in_memory.encode_generated(images))


def test_pt_state_dict_and_half_precision_and_openai_metadata(tiny_plugin, state_dicts, tmp_path):
    state = {k: (v.half() if v.is_floating_point() else v) for k, v in state_dicts["tiny-vit"].items()}
    state["input_resolution"] = torch.tensor(224)  # OpenAI archives carry these
    path = tmp_path / "tiny.pt"
    torch.save(state, path)
    encoder = essencekit.load_clip("tiny-vit", torch.device("cpu"), weights=path)
    assert all(p.dtype == torch.float32 for p in encoder.parameters())
    assert encoder.encode_generated(torch.zeros(1, 3, 32, 32)).dtype == torch.float32


def test_default_weights_come_from_the_cache(tiny_plugin, state_dicts, tmp_path, monkeypatch):
    import sys
    import types

    path = tmp_path / "cached.safetensors"
    save_file(state_dicts["tiny-rn"], str(path))
    asked = []

    def resolve_artifact(name):
        asked.append(name)
        if name != "clip-tiny-rn":
            raise EssencekitError(f"{name} is not downloaded: run `essencekit pull-weights {name}`")
        return path

    monkeypatch.setitem(sys.modules, "essencekit.cache", types.SimpleNamespace(resolve_artifact=resolve_artifact))
    assert load_clip("tiny-rn", "cpu").embed_dim == 24
    with pytest.raises(EssencekitError, match="pull-weights clip-tiny-vit"):
        load_clip("tiny-vit", "cpu")
    assert asked == ["clip-tiny-rn", "clip-tiny-vit"]


def _one_line_error(call) -> str:
    with pytest.raises(EssencekitError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_mismatching_state_dicts_are_refused(tiny_plugin, state_dicts, tmp_path):
    def attempt(state, name="tiny-vit", filename="bad.safetensors"):
        path = tmp_path / filename
        save_file(state, str(path))
        message = _one_line_error(lambda: load_clip(name, "cpu", weights=path))
        assert str(path) in message and "pull-weights" in message
        return message

    vit = state_dicts["tiny-vit"]
    assert "missing keys" in attempt(state_dicts["tiny-rn"])  # another architecture
    assert "missing keys" in attempt({k: v for k, v in vit.items() if k != "ln_final.weight"})  # text tower checked
    assert "unexpected keys" in attempt({**vit, "visual.extra": torch.zeros(1)})
    wrong = {**vit, "visual.proj": torch.zeros(64, 16)}
    assert "visual.proj: file [64, 16], expected [64, 32]" in attempt(wrong)
    # the RN50 text projection of a ViT file: same keys, other widths
    other = ClipVariant(
        name="other", open_clip_config={**TINY_VIT.open_clip_config, "embed_dim": 16},
        weights="x", mean=OPENAI_MEAN, std=OPENAI_STD,
    )
    with pytest.raises(EssencekitError, match="shape mismatches"):
        build_clip_visual(other, vit)


def test_unreadable_weights_files(tiny_plugin, tmp_path):
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    assert str(garbage) in _one_line_error(lambda: load_clip("tiny-vit", "cpu", weights=garbage))
    missing = tmp_path / "missing.safetensors"
    assert "not found" in _one_line_error(lambda: load_clip("tiny-vit", "cpu", weights=missing))
    not_tensors = tmp_path / "strings.pt"
    torch.save({"visual.proj": "text"}, not_tensors)
    assert "not tensors" in _one_line_error(lambda: load_clip("tiny-vit", "cpu", weights=not_tensors))
    scripted = tmp_path / "ViT-B-32.pt"  # the layout of OpenAI's TorchScript download
    with zipfile.ZipFile(scripted, "w") as archive:
        archive.writestr("ViT-B-32/code/__torch__/model.py", "")
        archive.writestr("ViT-B-32/constants.pkl", b"")
    assert "TorchScript" in _one_line_error(lambda: load_clip("tiny-vit", "cpu", weights=scripted))


def test_unknown_names_modes_and_sizes(tiny_plugin, tmp_path):
    message = _one_line_error(lambda: load_clip("ViT-H/14", "cpu", weights=tmp_path / "x.safetensors"))
    assert "ViT-H/14" in message and "ViT-B/32" in message and "tiny-vit" in message
    assert "raw, standard" in _one_line_error(lambda: load_clip("tiny-vit", "cpu", input_mode="clip"))
    _one_line_error(lambda: load_clip("tiny-vit", "cpu", generator_size=0))
    with pytest.raises(EssencekitError, match="input mode"):
        ClipEncoder(torch.nn.Identity(), TINY_VIT, input_mode="normalized")
    with pytest.raises(EssencekitError, match="invalid CLIP variant"):
        ClipVariant(name="bad", open_clip_config={"embed_dim": 8}, weights="w", mean=(0.5,), std=(0.5,))


# --------------------------------------------------------------------------- built-in variants


def test_builtin_plugin_registers_vit_b_32_and_rn50():
    import open_clip

    from essencekit_builtins import clip_models

    variants = []
    clip_models.register_clip_models(register=variants.append)
    assert {v.name: v.weights for v in variants} == {"ViT-B/32": "clip-vit-b-32", "RN50": "clip-rn50"}
    assert registered("clip_models")["ViT-B/32"] is clip_models.VIT_B_32
    expected_sizes = {"ViT-B/32": 512, "RN50": 1024}
    for variant, open_clip_name in zip(variants, ("ViT-B-32-quickgelu", "RN50-quickgelu")):
        assert variant.open_clip_config["quick_gelu"] is True  # OpenAI weights need QuickGELU
        assert variant.open_clip_config == open_clip.get_model_config(open_clip_name)
        assert variant.embed_dim == expected_sizes[variant.name]
        assert (variant.mean, variant.std, variant.image_size) == (
            tuple(open_clip.OPENAI_DATASET_MEAN), tuple(open_clip.OPENAI_DATASET_STD), 224,
        )
        ours = build_clip_model(variant, device="meta")
        with torch.device("meta"):
            theirs = open_clip.create_model(open_clip_name, pretrained=None, device="meta")
        assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {
            k: tuple(v.shape) for k, v in theirs.state_dict().items()
        }
        activations = {type(m).__name__ for m in ours.modules()}
        assert "QuickGELU" in activations and "GELU" not in activations


def test_builtin_variants_are_found_by_folded_names():
    from essencekit.clip import get_variant

    assert get_variant("vit-b-32").name == "ViT-B/32"
    assert get_variant("rn50").name == "RN50"


def test_the_default_clip_model_is_the_registered_one_with_the_highest_priority(register_plugin, tiny_clip_weights):
    import dataclasses
    from pathlib import Path

    from conftest import tiny_clip_variant

    from essencekit.clip import get_variant
    from essencekit.clip_variant import default_clip_name
    from essencekit.extraction.api import Extractor

    assert default_clip_name() == "ViT-B/32" and get_variant().name == "ViT-B/32"  # the built-ins' priorities
    preferred = dataclasses.replace(tiny_clip_variant(), name="preferred", priority=11)

    class Plugin:
        @staticmethod
        @essencekit.hookimpl
        def register_clip_models(register):
            register(preferred)

    register_plugin(Plugin, "preferred-clip")
    assert default_clip_name() == "preferred"
    encoder = essencekit.load_clip(device="cpu", weights=tiny_clip_weights, generator_size=64)
    assert encoder.variant.name == "preferred"
    generator = Path(__file__).parent / "fixtures" / "tiny-stylegan2.pt"
    extractor = Extractor(generator=generator, clip_weights=tiny_clip_weights, device="cpu")
    assert extractor.clip.variant.name == "preferred" and extractor.info["clip_model"] == "preferred"
