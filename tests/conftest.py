"""Shared test set-up: every test starts with freshly loaded plugins and its own cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from essencekit import plugins

FIXTURES = Path(__file__).parent / "fixtures"

# Modules whose assertions compare floating-point results (goldens, gradients, cosines). CI runs
# them a second time under another instruction set (.ci/run), because kernels for AVX-512, AVX2
# and plain SSE round differently and a bound tuned on one CPU can fail on a user's.
NUMERIC_MODULES = {
    "test_api", "test_arcface", "test_bench", "test_clip", "test_e4e", "test_e4e_inference", "test_evaluate",
    "test_essence_mix", "test_extract_cli", "test_extract_essence", "test_extract_losses", "test_extract_optimise",
    "test_faces", "test_generator_speed_ops", "test_stylegan2", "test_transfer_parts", "test_train_loss",
    "test_train_encoder", "test_evaluate_fid", "test_extract_targets",
}


def pytest_configure(config):
    config.addinivalue_line("markers", "numerics: compares floats; CI reruns it under other CPU instruction sets")


def pytest_collection_modifyitems(items):
    for item in items:
        if item.module is not None and item.module.__name__.rsplit(".", 1)[-1] in NUMERIC_MODULES:
            item.add_marker(pytest.mark.numerics)


def pytest_report_header():
    import torch

    return f"torch {torch.__version__}, CPU kernels: {torch.backends.cpu.get_cpu_capability()}"


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path_factory):
    home = tmp_path_factory.mktemp("essencekit-home")
    monkeypatch.setenv("ESSENCEKIT_HOME", str(home))
    # a developer's own settings (say HF_HUB_OFFLINE=1, set globally) must not change the tests
    for name in (
        "ESSENCEKIT_BACKEND", "ESSENCEKIT_LOAD_PLUGINS", "ESSENCEKIT_OFFLINE", "ESSENCEKIT_MIRROR",
        "ESSENCEKIT_CONNECT_TIMEOUT", "ESSENCEKIT_READ_TIMEOUT", "ESSENCEKIT_MAX_DOWNLOAD", "HF_HUB_OFFLINE",
    ):
        monkeypatch.delenv(name, raising=False)
    plugins.reset()
    yield
    plugins.reset()


@pytest.fixture
def cli(capsys):
    """Run the essencekit command line in this process: ``cli(args)`` gives ``(exit status,
    stdout, stderr)``; arguments may be paths or numbers."""
    from essencekit.cli import main

    def run(args):
        with pytest.raises(SystemExit) as exit_:
            main([str(a) for a in args])
        captured = capsys.readouterr()
        return exit_.value.code, captured.out, captured.err

    return run


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def register_plugin():
    """Register a plugin object (a module or class with hookimpls) for one test."""

    def register(plugin, name: str):
        plugins.register_plugin(plugin, name)
        return plugin

    return register


@pytest.fixture
def register_aligner(register_plugin):
    """Register an :class:`essencekit.Aligner` instance as a plugin's, for one test."""
    import essencekit

    def register(aligner, plugin_name: str | None = None):
        class Plugin:
            @staticmethod
            @essencekit.hookimpl
            def register_aligners(register):
                register(aligner)

        return register_plugin(Plugin, plugin_name or f"aligner-{aligner.name}")

    return register


# --------------------------------------------------------------------------- tiny models
# Shared by the tests of commands that need a generator and a CLIP model: the tiny generator
# fixture and a tiny random open_clip ViT registered under its own name.

TINY_CLIP_NAME = "test-tiny-vit"
TINY_CLIP_WEIGHTS = "clip-test-tiny-vit"


def tiny_clip_variant():
    from essencekit.clip import OPENAI_MEAN, OPENAI_STD, ClipVariant

    return ClipVariant(
        name=TINY_CLIP_NAME,
        open_clip_config={
            "embed_dim": 32,
            "quick_gelu": True,
            "vision_cfg": {"image_size": 224, "layers": 2, "width": 64, "patch_size": 32, "head_width": 32},
            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
        },
        weights=TINY_CLIP_WEIGHTS,
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
    )


def tiny_rn_variant(name: str = "test-tiny-rn", weights: str = "clip-test-tiny-rn"):
    """A tiny random open_clip ModifiedResNet (the RN50 family: BatchNorm, attention pooling)."""
    from essencekit.clip import OPENAI_MEAN, OPENAI_STD, ClipVariant

    return ClipVariant(
        name=name,
        open_clip_config={
            "embed_dim": 24,
            "quick_gelu": True,
            "vision_cfg": {"image_size": 224, "layers": [1, 1, 1, 1], "width": 8, "patch_size": None,
                           "head_width": 64},
            "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 32, "heads": 2, "layers": 1},
        },
        weights=weights,
        mean=OPENAI_MEAN,
        std=OPENAI_STD,
    )


@pytest.fixture
def tiny_clip_plugin(register_plugin):
    """Registers the tiny random CLIP variant ``test-tiny-vit`` for one test."""
    import essencekit

    variant = tiny_clip_variant()

    class TinyClip:
        @staticmethod
        @essencekit.hookimpl
        def register_clip_models(register):
            register(variant)

    register_plugin(TinyClip, "test-tiny-clip-shared")
    return variant


def save_random_clip_weights(variant, seed: int, path: Path) -> Path:
    """A .safetensors file of ``variant``'s weights drawn from ``seed`` (the global random state
    is left as it was)."""
    import torch
    from safetensors.torch import save_file

    from essencekit.clip import build_clip_model

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    model = build_clip_model(variant)
    torch.random.set_rng_state(generator_state)
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="session")
def tiny_clip_weights(tmp_path_factory) -> Path:
    """A .safetensors file of random weights (seed 0) for ``test-tiny-vit``."""
    return save_random_clip_weights(tiny_clip_variant(), 0, tmp_path_factory.mktemp("tiny-clip") / "tiny-vit.safetensors")


@pytest.fixture
def tiny_clip_encoder(tiny_clip_plugin, tiny_clip_weights):
    """The tiny CLIP as a frozen ClipEncoder (raw input mode) for the 64 px tiny generator."""
    from essencekit.clip import load_clip

    return load_clip(TINY_CLIP_NAME, "cpu", input_mode="raw", generator_size=64, weights=tiny_clip_weights)


@pytest.fixture
def tiny_generator():
    """The tiny StyleGAN2 fixture (64 px, 10 x 64 W+), frozen, on the CPU."""
    from essencekit.models.stylegan2 import load_generator_checkpoint

    return load_generator_checkpoint(FIXTURES / "tiny-stylegan2.pt")
