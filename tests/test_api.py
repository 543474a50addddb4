"""The public loaders: paths, artifact names, devices, and frozen models."""

from __future__ import annotations

import shutil

import pytest
import torch

import essencekit
from essencekit import EssencekitError


@pytest.fixture(scope="module")
def golden(request):
    from pathlib import Path

    return torch.load(Path(request.fspath).parent / "fixtures" / "tiny-golden.pt", weights_only=True)


def test_load_generator_from_a_path_on_the_cpu_backend(fixtures, golden):
    generator = essencekit.load_generator(fixtures / "tiny-stylegan2.pt", device="cpu")
    assert (generator.size, generator.style_dim, generator.n_latent) == (64, 64, 10)
    assert generator.latent_avg.shape == (64,)
    assert generator.modulated_conv == "grouped"  # the cpu backend's grouped convolutions are fast
    assert not any(p.requires_grad for p in generator.parameters())
    with torch.no_grad():
        image = generator.synthesis(golden["g.w_plus"], noise="const")
    assert image.shape == (2, 3, 64, 64)
    torch.testing.assert_close(image, golden["g.w_plus.image"], atol=1e-4, rtol=0)


def test_load_generator_accepts_a_torch_device(fixtures):
    generator = essencekit.load_generator(fixtures / "tiny-stylegan2.pt", device=torch.device("cpu"))
    assert generator.latent_avg.device.type == "cpu"


def test_load_encoder_inverts_and_embeds_its_generator(fixtures, golden):
    e4e = essencekit.load_encoder(fixtures / "tiny-e4e.pt", device="cpu")
    codes = e4e.invert(golden["e4e.x"])
    torch.testing.assert_close(codes, golden["e4e.codes"], atol=1e-4, rtol=0)
    assert e4e.latent_avg.shape == (10, 64) and e4e.generator.n_latent == 10
    assert e4e.generator.modulated_conv == "grouped"


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(EssencekitError, match="not found: .*nope.pt"):
        essencekit.load_generator(tmp_path / "nope.pt", device="cpu")


def test_a_hostile_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self):
            return (shutil.copy, (__file__, str(marker)))

    path = tmp_path / "evil.pt"
    torch.save({"g_ema": Exploit()}, path)
    with pytest.raises(EssencekitError, match="will not unpickle"):
        essencekit.load_generator(path, device="cpu")
    assert not marker.exists()


def test_unavailable_device_is_refused_before_loading(fixtures, mocker):
    mocker.patch("torch.version.cuda", None)
    with pytest.raises(EssencekitError, match="backend 'cuda'.*not available"):
        essencekit.load_generator(fixtures / "tiny-stylegan2.pt", device="cuda")
