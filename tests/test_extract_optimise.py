"""The optimisation loop: the reference trace, chunking, restarts, snapshots, --fast, Ctrl-C."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from essencekit.clip import ClipEncoder, build_clip_model, build_clip_visual, clip_resize
from essencekit.extraction.optimise import OptimiseSettings, evaluate_directions, optimise
from essencekit.extraction.schedule import learning_rate
from essencekit.extraction.sources import derive_seed, random_directions, sample_latents
from essencekit.models.stylegan2 import Generator, GeneratorConfig

FIXTURES = Path(__file__).parent / "fixtures"


def assert_close_to_scale(actual, expected, tol=1e-4):
    actual, expected = torch.as_tensor(actual).double(), torch.as_tensor(expected).double()
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    scale = max(expected.abs().max().item(), 1.0)
    error = (actual - expected).abs().max().item()
    assert error < tol * scale, f"max abs diff {error} (scale {scale})"


@pytest.fixture(scope="module")
def trace():
    return torch.load(FIXTURES / "tiny-trace-golden.pt", weights_only=True)


@pytest.fixture(scope="module")
def generator():
    from essencekit.models.stylegan2 import load_generator_checkpoint

    return load_generator_checkpoint(FIXTURES / "tiny-stylegan2.pt")


class StandIn:
    """The fixed stand-in encoder of the trace (fixtures README)."""

    def __init__(self, trace):
        self.kernel, self.weight = trace["trace.K"], trace["trace.W"]

    def __call__(self, images):
        return F.relu(F.conv2d(clip_resize(images), self.kernel, stride=8)).mean((2, 3)) @ self.weight.T


# --------------------------------------------------------------------------- the reference trace


@pytest.mark.parametrize("batch_size", [None, 3], ids=["one-graph", "two-pass-chunks"])
def test_replays_the_reference_trace(trace, generator, batch_size):
    settings = OptimiseSettings(steps=int(trace["trace.steps"]), batch_size=batch_size)
    assert settings.lr == 0.2 and settings.weight_decay == 3e-3 and settings.lambda_consistency == 0.6
    result = optimise(
        generator, StandIn(trace), trace["trace.sources"], trace["trace.target_emb"], trace["trace.init"], settings
    )
    assert result.steps_done == 12 and not result.interrupted
    assert_close_to_scale(result.history["loss"][:, 0], trace["trace.losses"])
    assert_close_to_scale(result.history["transfer"][:, 0], trace["trace.transfer"])
    assert_close_to_scale(result.history["consistency"][:, 0], trace["trace.consistency"])
    assert_close_to_scale(result.final_direction, trace["trace.final_direction"])
    assert_close_to_scale(result.final_coefficients[0], trace["trace.final_coefficients"])
    assert_close_to_scale(result.best_direction, trace["trace.best_direction"])
    assert_close_to_scale(result.best_coefficients[0], trace["trace.best_coefficients"])
    assert int(result.best_step[0]) == int(trace["trace.best_step"])
    assert result.best_loss[0] == result.history["loss"][:, 0].min()


def test_two_pass_gradients_equal_one_graph(trace, generator):
    """The chunked two-pass backward gives the gradients of the single graph."""
    from essencekit.chunked import backward_in_chunks, chunk_slices
    from essencekit.clip_losses import total_loss

    encoder = StandIn(trace)
    sources = trace["trace.sources"]
    target = trace["trace.target_emb"].reshape(-1)
    with torch.no_grad():
        source_embeddings = encoder(generator.synthesis(sources))
    init = trace["trace.init"].expand(2, -1, -1) + torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(1))
    gradients = []
    for batch, two_pass in ((None, False), (8, True), (3, True), (1, True), (3, False)):
        direction = init.clone().requires_grad_(True)
        jitter = torch.rand(2, 4, generator=torch.Generator().manual_seed(2))
        coefficients = (torch.ones(2, 4) + jitter).requires_grad_(True)
        restart_of, source_of = torch.arange(2).repeat_interleave(4), torch.arange(4).repeat(2)

        def embed_chunk(part, restart_of=restart_of, source_of=source_of, coefficients=coefficients,
                        direction=direction):  # this loop's tensors, bound now
            k, n = restart_of[part], source_of[part]
            return encoder(generator.synthesis(sources[n] + coefficients[k, n][:, None, None] * direction[k]))

        loss, _, _ = backward_in_chunks(
            embed_chunk, chunk_slices(8, batch), (2, 4), lambda e: total_loss(e, source_embeddings, target),
            two_pass=two_pass,
        )
        gradients.append((loss, direction.grad, coefficients.grad))
    for loss, direction_grad, coefficient_grad in gradients[1:]:
        assert_close_to_scale(loss, gradients[0][0], 1e-6)
        assert_close_to_scale(direction_grad, gradients[0][1], 1e-5)
        assert_close_to_scale(coefficient_grad, gradients[0][2], 1e-5)


# --------------------------------------------------------------------------- restarts and snapshots


def _encoder():
    from conftest import tiny_clip_variant

    variant = tiny_clip_variant()
    torch.manual_seed(0)
    model = build_clip_model(variant)
    return ClipEncoder(build_clip_visual(variant, model.state_dict()), variant, generator_size=64)


@pytest.fixture(scope="module")
def clip_encoder():
    return _encoder()


def test_restarts_are_independent_of_how_many_run(generator, clip_encoder):
    """Restart k of a K-restart run is the 1-restart run, whatever the chunking. In float32 the
    chunks' different summation orders are amplified by the chaotic tiny model (4.7e-4 apart on
    an AVX2 CPU, 1e-5 on AVX-512), so the invariant is checked in float64, where it is exact to
    rounding on every CPU."""
    sources = sample_latents(generator, 3, seed=7, purpose="source").double()
    target_latent = sample_latents(generator, 1, 7, "target").double()
    init = random_directions(generator, range(3), 7).double()
    assert torch.equal(random_directions(generator, range(3), 7)[:1], random_directions(generator, range(1), 7))
    generator, clip_encoder = copy.deepcopy(generator).double(), copy.deepcopy(clip_encoder).double()
    target = clip_encoder(generator.synthesis(target_latent)).detach()
    settings = OptimiseSettings(steps=4, batch_size=4)  # chunks fall differently for K = 1 and K = 3
    one = optimise(generator, clip_encoder, sources, target, init[:1], settings)
    three = optimise(generator, clip_encoder, sources, target, init, settings)
    assert three.final_direction.dtype == torch.float64 and three.history["loss"].dtype == torch.float64
    assert_close_to_scale(three.final_direction[:1], one.final_direction, 1e-9)
    assert_close_to_scale(three.best_direction[:1], one.best_direction, 1e-9)
    assert_close_to_scale(three.history["loss"][:, :1], one.history["loss"], 1e-9)
    assert torch.equal(three.best_step[:1], one.best_step)
    # the other restarts really are other runs
    assert not torch.allclose(three.final_direction[1], three.final_direction[0])


def test_loss_falls_and_best_snapshot_is_the_measured_one(generator, clip_encoder):
    sources = sample_latents(generator, 4, seed=3, purpose="source")
    target = clip_encoder(generator.synthesis(sample_latents(generator, 1, 3, "target"))).detach()
    init = random_directions(generator, range(2), 3)
    settings = OptimiseSettings(steps=15)
    result = optimise(generator, clip_encoder, sources, target, init, settings)
    history = result.history["loss"]
    # The tiny random model's loss is chaotic late in the run (it jumps between basins, and
    # float rounding decides which), so ask that it fell well below the start, not when.
    assert (history.min(0).values < 0.9 * history[0]).all()
    for k in range(2):
        step = int(result.best_step[k])
        assert result.best_loss[k] == history[:, k].min() == history[step, k]
        # re-measure the snapshot: its loss is the one recorded for it (not the next step's)
        check = optimise(
            generator, clip_encoder, sources, target, result.best_direction[k : k + 1],
            OptimiseSettings(steps=1, coefficients="fixed"),
        )
        edited = sources + result.best_coefficients[k][:, None, None] * result.best_direction[k]
        with torch.no_grad():
            embeddings = clip_encoder(generator.synthesis(edited))
            sources_embedded = clip_encoder(generator.synthesis(sources))
        from essencekit.clip_losses import total_loss

        loss, _, _ = total_loss(embeddings, sources_embedded, target.reshape(-1))
        assert loss.item() == pytest.approx(result.best_loss[k].item(), abs=1e-5)
        assert check.steps_done == 1


def test_held_out_evaluation_matches_a_direct_computation(generator, clip_encoder):
    held = sample_latents(generator, 3, seed=1, purpose="held-out")
    target = torch.randn(1, 32)
    directions = random_directions(generator, range(2), 1)
    strengths = torch.tensor([0.5, 1.5])
    loss, transfer, consistency = evaluate_directions(generator, clip_encoder, held, target, directions, strengths,
                                                      batch_size=2)
    with torch.no_grad():
        base = clip_encoder(generator.synthesis(held))
        for k in range(2):
            edited = clip_encoder(generator.synthesis(held + strengths[k] * directions[k]))
            from essencekit.clip_losses import total_loss

            expected = total_loss(edited, base, target.reshape(-1))
            assert loss[k].item() == pytest.approx(expected[0].item(), abs=1e-5)


def test_ctrl_c_keeps_the_best_so_far(generator, clip_encoder):
    sources = sample_latents(generator, 2, seed=2, purpose="source")
    target = torch.randn(32)
    seen = []

    def callback(report):
        seen.append(report.step)
        assert report.loss.shape == (1,) and report.seconds >= 0
        if report.step == 2:
            raise KeyboardInterrupt

    result = optimise(generator, clip_encoder, sources, target, random_directions(generator, range(1), 2),
                      OptimiseSettings(steps=50), callback=callback)
    assert result.interrupted and result.steps_done == 3 and seen == [0, 1, 2]
    assert 0 <= int(result.best_step[0]) <= 2
    assert torch.isfinite(result.best_loss).all()


def test_frozen_models_get_no_gradients(generator, clip_encoder):
    sources = sample_latents(generator, 2, seed=2, purpose="source")
    optimise(generator, clip_encoder, sources, torch.randn(32), random_directions(generator, range(1), 2),
             OptimiseSettings(steps=2))
    assert all(p.grad is None for p in generator.parameters())
    assert all(p.grad is None for p in clip_encoder.parameters())
    assert generator.checkpoint_blocks is False


def test_seeds_derive_independent_streams():
    assert derive_seed(1, "source") != derive_seed(1, "held-out") != derive_seed(2, "source")
    assert derive_seed(1, "init-0") == derive_seed(1, "init-0")


# --------------------------------------------------------------------------- max_size and --fast


def test_synthesis_max_size(generator):
    w = torch.randn(2, 10, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = generator.synthesis(w)
        assert torch.equal(generator.synthesis(w, max_size=64), full)
        small = generator.synthesis(w, max_size=32)
        assert small.shape == (2, 3, 32, 32)
        out = skip = None
        for block in range(4):  # 4, 8, 16, 32 px
            noises = [getattr(generator.noises, f"noise_{i}") for i in range(9)]
            out, skip = generator._block(block, out, skip, w, *noises[max(0, 2 * block - 1) : 2 * block + 1])
        assert torch.allclose(small, skip)
        # rows past the 32 px toRGB (row 7) have no effect on it
        changed = w.clone()
        changed[:, 8:] += 5
        assert torch.equal(generator.synthesis(changed, max_size=32), small)
        assert not torch.allclose(generator.synthesis(changed), full)
    generator.checkpoint_blocks = True
    try:
        wg = w.clone().requires_grad_(True)
        generator.synthesis(wg, max_size=32).sum().backward()
        assert wg.grad[:, 8:].abs().sum() == 0 and wg.grad[:, :8].abs().sum() > 0
    finally:
        generator.checkpoint_blocks = False
    for bad in (3, 48, 128, 0, True):
        with pytest.raises(ValueError, match="max_size"):
            generator.synthesis(w, max_size=bad)


def test_fast_mode_on_a_512px_generator():
    """--fast renders up to 256 px: the last W+ rows see only the weight decay, the rest follow
    the full run closely (figures in docs/extract.md)."""
    torch.manual_seed(0)
    config = GeneratorConfig(size=512, style_dim=32, n_mlp=2, channels=(32, 32, 32, 32, 16, 16, 8, 8))
    big = Generator(config).eval().requires_grad_(False).set_modulated_conv("shared")
    from conftest import tiny_clip_variant

    variant = tiny_clip_variant()
    torch.manual_seed(1)
    encoder = ClipEncoder(build_clip_visual(variant, build_clip_model(variant).state_dict()), variant,
                          generator_size=512)
    sources = sample_latents(big, 2, 0, "source")
    init = random_directions(big, range(1), 0)
    target = encoder(big.synthesis(sample_latents(big, 1, 5, "target"))).detach()
    steps = 6
    full = optimise(big, encoder, sources, target, init, OptimiseSettings(steps=steps))
    fast = optimise(big, encoder, sources, target, init, OptimiseSettings(steps=steps, render_size=256))

    # rows 14 and 15 (the 512 px layers) get no gradient with --fast: pure weight decay
    rows = init[:, 14:].clone().requires_grad_(True)
    adam = torch.optim.Adam([rows], lr=0.2, weight_decay=3e-3)
    for step in range(steps):
        adam.param_groups[0]["lr"] = learning_rate(step, steps, 0.2)
        rows.grad = torch.zeros_like(rows)
        adam.step()
    assert_close_to_scale(fast.final_direction[:, 14:], rows.detach(), 1e-5)
    assert not torch.allclose(full.final_direction[:, 14:], rows.detach(), atol=1e-4)

    a, b = full.final_direction.flatten(), fast.final_direction.flatten()
    assert F.cosine_similarity(a, b, dim=0) > 0.9
    change = F.cosine_similarity((full.final_direction - init)[:, :14].flatten(),
                                 (fast.final_direction - init)[:, :14].flatten(), dim=0)
    assert change > 0.5


def test_chunk_plan_prefers_one_graph_then_plain_chunks_then_checkpointing(monkeypatch):
    from essencekit import chunked
    from essencekit.backends import select_backend
    from essencekit.memory import bytes_per_image
    from essencekit.models.stylegan2 import GeneratorConfig

    class FFHQ:
        config = GeneratorConfig.ffhq(1024)

    cpu = select_backend("cpu")
    per_image = bytes_per_image(FFHQ, 1024)
    assert 2.5 * 2**30 < per_image < 3.2 * 2**30  # measured: 2.6 GiB at 1024 px
    assert bytes_per_image(FFHQ, 256) < per_image / 4
    assert bytes_per_image(FFHQ, 1024, backward=False) == bytes_per_image(FFHQ, 1024) * 3 // 11  # no autograd
    monkeypatch.setattr(cpu, "memory_budget", lambda: 5 * 2**30)  # the backend's budget
    assert chunked.plan_chunks(FFHQ, cpu, 256, 4) == (4, False)  # all in one graph
    assert chunked.plan_chunks(FFHQ, cpu, 1024, 8) == (1, False)  # two-pass chunks, no recomputation
    assert chunked.plan_chunks(FFHQ, cpu, 1024, 8, batch_size=4) == (4, True)  # too big: checkpointed
    monkeypatch.setattr(cpu, "memory_budget", lambda: 2 * 2**30)
    assert chunked.plan_chunks(FFHQ, cpu, 1024, 8) == (1, True)  # not one image fits without it
