"""The StyleGAN2 generator against golden tensors from the reference implementation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from essencekit.errors import EssencekitError
from essencekit.models.ops import blur, make_blur_kernel, upsample2x
from essencekit.models.stylegan2 import (
    Generator,
    GeneratorConfig,
    generator_from_state_dict,
    infer_generator_config,
    load_generator_checkpoint,
)

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "tiny-stylegan2.pt"
PUBLISHED = FIXTURES / "tiny-stylegan2-as-published.pt"
FORMS = ("grouped", "shared")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    assert actual.shape == expected.shape
    scale = expected.abs().max().clamp_min(1e-12)
    error = (actual - expected).abs().max() / scale
    assert error < rel, f"max abs difference {error:.3g} x scale"


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return torch.load(FIXTURES / "tiny-golden.pt", weights_only=True)


@pytest.fixture(scope="module")
def tiny_checkpoint() -> dict:
    return torch.load(TINY, weights_only=True)


@pytest.fixture
def generator() -> Generator:
    return load_generator_checkpoint(TINY)


def explicit_noise(golden: dict) -> list[torch.Tensor]:
    return [golden[f"g.noise.{i}"] for i in range(9)]


def image_and_grad(g: Generator, golden: dict) -> tuple[torch.Tensor, torch.Tensor]:
    w_plus = golden["g.w_plus"].clone().requires_grad_(True)
    image = g.synthesis(w_plus)
    (image * golden["g.grad.R"]).sum().backward()
    return image.detach(), w_plus.grad


# -- architecture ----------------------------------------------------------------------------


def test_inferred_tiny_architecture(tiny_checkpoint):
    expected = json.loads((FIXTURES / "tiny-config.json").read_text())
    config = infer_generator_config(tiny_checkpoint["g_ema"])
    assert (config.size, config.style_dim, config.n_mlp) == (64, 64, 2)
    assert config.channels == (64,) * 5
    assert config.n_latent == expected["n_latent"] == 10
    assert config.num_noise_layers == expected["num_noise_layers"] == 9
    assert sum(p.numel() for p in Generator(config).parameters()) == expected["g_params"]


def test_real_ffhq_1024_layout_loads():
    shapes = json.loads((FIXTURES / "stylegan2-ffhq-1024.keys.json").read_text())
    torch.manual_seed(0)
    state = {key: torch.randn(shape) for key, shape in shapes.items()}
    config = infer_generator_config(state)
    assert (config.size, config.style_dim, config.n_mlp) == (1024, 512, 8)
    assert config.n_latent == 18 and config.num_noise_layers == 17
    assert config.channels == (512, 512, 512, 512, 512, 256, 128, 64, 32)
    g = generator_from_state_dict(state, latent_avg=torch.zeros(512))
    assert g.n_latent == 18 and g.size == 1024
    loaded = g.state_dict()
    assert set(loaded) == set(shapes)
    assert torch.equal(loaded["convs.15.conv.weight"], state["convs.15.conv.weight"])
    assert torch.equal(loaded["noises.noise_16"], state["noises.noise_16"])


def test_ffhq_config_is_the_real_layout():
    shapes = json.loads((FIXTURES / "stylegan2-ffhq-1024.keys.json").read_text())
    state = {key: torch.empty(shape) for key, shape in shapes.items()}
    assert GeneratorConfig.ffhq() == GeneratorConfig.ffhq(1024) == infer_generator_config(state)
    assert GeneratorConfig.ffhq(256).channels == (512, 512, 512, 512, 512, 256, 128)
    assert GeneratorConfig.ffhq(64, max_channels=32).channels == (32,) * 5


# -- goldens ---------------------------------------------------------------------------------


def test_mapping_matches_reference(generator, golden):
    with torch.no_grad():
        assert_close(generator.mapping(golden["g.z"]), golden["g.w_from_z"])


@pytest.mark.parametrize("form", FORMS)
def test_truncated_constant_noise_image(generator, golden, form):
    generator.set_modulated_conv(form)
    with torch.no_grad():
        image = generator.synthesis(generator.mapping(golden["g.z"], truncation=0.7), noise="const")
    assert_close(image, golden["g.z_trunc0.7.image"])


@pytest.mark.parametrize("form", FORMS)
def test_w_plus_images(generator, golden, form):
    generator.set_modulated_conv(form)
    assert generator.modulated_conv == form
    with torch.no_grad():
        assert_close(generator.synthesis(golden["g.w_plus"]), golden["g.w_plus.image"])
        image = generator.synthesis(golden["g.w_plus"], noise=explicit_noise(golden))
    assert_close(image, golden["g.w_plus.explicit_noise.image"])


@pytest.mark.parametrize("form", FORMS)
def test_gradient_wrt_w_plus(generator, golden, form):
    generator.set_modulated_conv(form)
    image, grad = image_and_grad(generator, golden)
    assert_close(image, golden["g.w_plus.image"])
    assert_close(grad, golden["g.grad.w_plus"])


@pytest.mark.parametrize("form", FORMS)
def test_checkpointed_blocks_are_identical(generator, golden, form):
    generator.set_modulated_conv(form)
    plain = image_and_grad(generator, golden)
    generator.checkpoint_blocks = True
    checkpointed = image_and_grad(generator, golden)
    for a, b in zip(plain, checkpointed):
        assert torch.equal(a, b)
    assert_close(checkpointed[1], golden["g.grad.w_plus"])


def test_checkpointed_blocks_with_random_noise(generator, golden):
    # Random noise is drawn before the blocks, so the recomputation sees the same maps.
    results = []
    for flag in (False, True):
        generator.checkpoint_blocks = flag
        torch.manual_seed(3)
        w_plus = golden["g.w_plus"].clone().requires_grad_(True)
        image = generator.synthesis(w_plus, noise="random")
        image.square().sum().backward()
        results.append((image.detach(), w_plus.grad))
    assert all(torch.equal(a, b) for a, b in zip(*results))


def test_w_is_broadcast_to_every_row(generator, golden):
    w = golden["g.w_from_z"]
    with torch.no_grad():
        expanded = generator.synthesis(w.unsqueeze(1).repeat(1, 10, 1))
        assert torch.equal(generator.synthesis(w), expanded)
        assert torch.equal(generator(w), expanded)


def test_random_noise_differs_from_constant(generator, golden):
    with torch.no_grad():
        const = generator.synthesis(golden["g.w_plus"], noise="const")
        torch.manual_seed(1)
        first = generator.synthesis(golden["g.w_plus"], noise="random")
        second = generator.synthesis(golden["g.w_plus"], noise="random")
        torch.manual_seed(1)
        again = generator.synthesis(golden["g.w_plus"], noise="random")
    assert (first - const).abs().max() > 1e-3
    assert (first - second).abs().max() > 1e-3
    assert torch.equal(first, again)
    with pytest.raises(ValueError):
        generator.synthesis(golden["g.w_plus"], noise="fixed")
    with pytest.raises(ValueError):
        generator.synthesis(golden["g.w_plus"], noise=explicit_noise(golden)[:-1])


# -- the resampling ops against a direct transcription of upfirdn2d ---------------------------


def upfirdn2d_oracle(x, kernel, up, pad):
    b, c, h, w = x.shape
    z = torch.zeros(b, c, h * up, w * up, dtype=x.dtype)
    z[:, :, ::up, ::up] = x
    z = F.pad(z, (pad[0], pad[1], pad[0], pad[1]))
    k = kernel.flip((0, 1)).expand(c, 1, *kernel.shape)
    return F.conv2d(z, k, groups=c)


def test_ops_equal_upfirdn2d():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 7, 6, dtype=torch.float64)
    kernel = make_blur_kernel((1, 3, 3, 1), gain=4.0).double()
    asymmetric = torch.rand(4, 4, dtype=torch.float64)
    for k in (kernel, asymmetric):
        assert torch.allclose(upsample2x(x, k), upfirdn2d_oracle(x, k, 2, (2, 1)), atol=1e-12)
        for pad in ((1, 1), (2, 1), (0, 2)):
            assert torch.allclose(blur(x, k, pad), upfirdn2d_oracle(x, k, 1, pad), atol=1e-12)
    assert torch.allclose(kernel.sum(), torch.tensor(4.0, dtype=torch.float64))


# -- loading ---------------------------------------------------------------------------------


def test_as_published_file_gives_the_same_results(generator, golden):
    published = load_generator_checkpoint(PUBLISHED)
    assert all(not p.requires_grad for p in published.parameters()) and not published.training
    assert torch.equal(published.latent_avg, generator.latent_avg)
    reference, rebuilt = generator.state_dict(), published.state_dict()
    assert all(torch.equal(reference[k], rebuilt[k]) for k in reference)
    with torch.no_grad():
        for noise in ("const", explicit_noise(golden)):
            assert torch.equal(published.synthesis(golden["g.w_plus"], noise), generator.synthesis(golden["g.w_plus"], noise))
        z = golden["g.z"]
        assert torch.equal(published.synthesis(published.mapping(z, 0.7)), generator.synthesis(generator.mapping(z, 0.7)))


def test_missing_noise_buffer_is_an_error(tiny_checkpoint):
    state = dict(tiny_checkpoint["g_ema"])
    del state["noises.noise_4"]
    with pytest.raises(EssencekitError, match="noise_4"):
        generator_from_state_dict(state, tiny_checkpoint["latent_avg"])


def test_missing_weight_is_an_error(tiny_checkpoint):
    state = dict(tiny_checkpoint["g_ema"])
    del state["convs.3.noise.weight"]
    with pytest.raises(EssencekitError, match=r"convs\.3\.noise\.weight"):
        generator_from_state_dict(state, tiny_checkpoint["latent_avg"])


def test_unknown_key_is_an_error(tiny_checkpoint, tmp_path):
    state = dict(tiny_checkpoint["g_ema"], **{"convs.1.conv.extra": torch.zeros(3)})
    with pytest.raises(EssencekitError, match="convs.1.conv.extra"):
        generator_from_state_dict(state)
    path = tmp_path / "extra.pt"
    torch.save({"g_ema": state, "latent_avg": tiny_checkpoint["latent_avg"]}, path)
    with pytest.raises(EssencekitError, match="extra.pt"):
        load_generator_checkpoint(path)


def test_not_a_checkpoint_is_an_error(tmp_path, tiny_checkpoint):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint")
    no_g_ema = tmp_path / "plain.pt"
    torch.save(tiny_checkpoint["g_ema"], no_g_ema)
    wrong = tmp_path / "wrong.pt"
    torch.save({"g_ema": {"weight": torch.zeros(3)}}, wrong)
    for path in (text, no_g_ema, wrong, tmp_path / "absent.pt"):
        with pytest.raises(EssencekitError, match=path.name):
            load_generator_checkpoint(path)


def test_latent_avg_fallback_is_deterministic(tiny_checkpoint, generator):
    g = generator_from_state_dict(tiny_checkpoint["g_ema"])
    z = torch.randn(10_000, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(g.latent_avg, g.style(z).mean(0), atol=1e-6)
    assert torch.equal(generator_from_state_dict(tiny_checkpoint["g_ema"]).latent_avg, g.latent_avg)
    assert torch.equal(generator.latent_avg, tiny_checkpoint["latent_avg"])


def test_config_validation():
    with pytest.raises(ValueError):
        GeneratorConfig(size=48, style_dim=8, n_mlp=1, channels=(8, 8))
    with pytest.raises(ValueError):
        GeneratorConfig(size=16, style_dim=8, n_mlp=1, channels=(8, 8))
    with pytest.raises(ValueError):
        Generator(GeneratorConfig(16, 8, 1, (8, 8, 8))).set_modulated_conv("fused")
