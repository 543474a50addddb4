"""The encoder variant's loss against the reference training code's formula (the golden
``tiny-encoder-loss-golden.pt``), and the optimiser and step order it trains with."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import FIXTURES

from essencekit.clip import clip_resize
from essencekit.distributed import Launch
from essencekit.training.loss import EssenceLoss
from essencekit.training.ranger import Ranger, make_optimizer
from essencekit.training.sampling import StepSampler

#: below this distance from zero a stand-in ReLU unit is "at its kink": float32 rounding in the
#: reference's forward may have put it on either side
KINK = 1e-5


@pytest.fixture(scope="module")
def golden():
    return {k: v.double() for k, v in torch.load(FIXTURES / "tiny-encoder-loss-golden.pt", weights_only=True).items()}


@pytest.fixture(scope="module")
def generator():
    from essencekit.models.stylegan2 import load_generator_checkpoint

    return load_generator_checkpoint(FIXTURES / "tiny-stylegan2.pt").double()


class StandIn:
    """The golden's fixed stand-in CLIP. ``flip_kinks`` takes the other side of every unit
    within :data:`KINK` of zero; ``inputs`` records what it was given."""

    def __init__(self, golden, flip_kinks: bool = False):
        self.kernel, self.weight, self.flip_kinks = golden["enc.K"], golden["enc.W"], flip_kinks
        self.inputs, self.kinks = [], 0

    def __call__(self, images):
        self.inputs.append(images.detach())
        pre = F.conv2d(clip_resize(images), self.kernel, stride=8)
        mask = pre > 0
        near = pre.detach().abs() < KINK
        self.kinks += int(near.sum())
        if self.flip_kinks:
            mask = mask ^ near
        return (pre * mask).mean((2, 3)) @ self.weight.T


def _loss_and_gradient(golden, generator, flip_kinks=False, chunk=None):
    clip = StandIn(golden, flip_kinks)
    loss = EssenceLoss(generator, clip, golden["enc.sources"], lambda_consistency=0.5, lambda_norm=3e-3, chunk=chunk)
    targets = loss.target_embeddings(golden["enc.x"])
    clip.kinks = 0
    directions = golden["enc.essence"].clone().requires_grad_(True)
    terms = loss.backward(directions, targets)
    return terms, directions.grad, clip


def _relative(actual, expected):
    return float((actual - expected).abs().max() / expected.abs().max())


def test_the_loss_terms_match_the_reference_formula(golden, generator):
    terms, _, clip = _loss_and_gradient(golden, generator)
    # the target's CLIP input: bilinear to the generator's size, no antialiasing
    assert torch.allclose(clip.inputs[1], golden["enc.target_resized"], rtol=0, atol=1e-6)
    for ours, key in ((terms.similarity, "enc.similarity"), (terms.consistency, "enc.consistency"),
                      (terms.norm, "enc.l2_per_target"), (terms.loss, "enc.loss")):
        assert abs(ours - float(golden[key])) <= 1e-4 * abs(float(golden[key])), key
    # each target's own norm, not the batch's (the reference's form, wrong above batch 1)
    assert abs(terms.norm - float(golden["enc.l2_reference"])) > 0.1


def test_the_gradient_matches_the_reference(golden, generator):
    """The gradient with respect to the directions, in float64. For each target one ReLU unit
    of the stand-in CLIP sits within 1e-5 of its kink (none within 1e-6). For target 2 the
    reference's float32 forward put it on the other side, which moves that target's gradient
    by 4e-4 (relative); target 1 matches as computed, and the whole gradient matches once the
    units at their kinks take the other side."""
    _, exact, clip = _loss_and_gradient(golden, generator)
    expected = golden["enc.grad_essence"]
    assert clip.kinks == 2
    assert _relative(exact[0], expected[0]) < 1e-4
    assert _relative(exact, expected) > 1e-4  # the one unit matters...
    _, reference_side, _ = _loss_and_gradient(golden, generator, flip_kinks=True)
    assert _relative(reference_side, expected) < 1e-4  # ...and is all that differs


def test_sources_in_chunks_give_the_same_loss_and_gradient(golden, generator):
    """Sources that do not fit in memory together go through in two passes, a chunk at a time."""
    terms, gradient, _ = _loss_and_gradient(golden, generator)
    chunked_terms, chunked_gradient, _ = _loss_and_gradient(golden, generator, chunk=2)
    assert chunked_terms.loss == pytest.approx(terms.loss, rel=1e-12)
    assert _relative(chunked_gradient, gradient) < 1e-10


def test_sources_are_rendered_once(golden, generator):
    clip = StandIn(golden)
    loss = EssenceLoss(generator, clip, golden["enc.sources"])
    targets = loss.target_embeddings(golden["enc.x"])
    before = len(clip.inputs)
    loss.backward(golden["enc.essence"].clone().requires_grad_(True), targets)
    loss.evaluate(golden["enc.essence"], targets)
    # two targets, twice: only the edited sources are rendered, never the sources again
    assert len(clip.inputs) - before == 4
    assert all(batch.shape[0] == 5 for batch in clip.inputs[before:])


# --------------------------------------------------------------------------- the optimiser


def _reference_ranger_steps(param, grads, lr, k=6, alpha=0.5):
    """Ranger's update (RAdam + gradient centralisation + Lookahead) written out from its
    published formulas, one parameter, for comparison."""
    beta1, beta2, eps = 0.95, 0.999, 6.1e-5
    p, slow = param.clone(), param.clone()
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        g = g - g.mean(dim=tuple(range(1, g.dim())), keepdim=True)
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        rho_inf = 2 / (1 - beta2) - 1
        rho = rho_inf - 2 * t * beta2**t / (1 - beta2**t)
        if rho > 5:
            rect = ((1 - beta2**t) * (rho - 4) / (rho_inf - 4) * (rho - 2) / rho * rho_inf / (rho_inf - 2)) ** 0.5
            p = p - lr * rect / (1 - beta1**t) * m / (v.sqrt() + eps)
        else:
            p = p - lr / (1 - beta1**t) * m
        if t % k == 0:
            slow = slow + alpha * (p - slow)
            p = slow.clone()
    return p


def test_ranger_follows_its_published_update():
    torch.manual_seed(0)
    start = torch.randn(4, 3, dtype=torch.float64)
    grads = [torch.randn(4, 3, dtype=torch.float64) for _ in range(14)]
    param = torch.nn.Parameter(start.clone())
    optimizer = Ranger([param], lr=1e-2)
    for g in grads:
        param.grad = g.clone()
        optimizer.step()
        optimizer.zero_grad()
    expected = _reference_ranger_steps(start, grads, 1e-2)
    assert torch.allclose(param.detach(), expected, rtol=0, atol=1e-12)


def test_ranger_state_round_trips_mid_lookahead(tmp_path):
    torch.manual_seed(1)
    grads = [torch.randn(5, 2, dtype=torch.float64) for _ in range(10)]

    def run(split=None):
        param = torch.nn.Parameter(torch.ones(5, 2, dtype=torch.float64))
        optimizer = Ranger([param], lr=1e-2)
        for i, g in enumerate(grads):
            if i == split:
                torch.save({"p": param.detach().clone(), "o": optimizer.state_dict()}, tmp_path / "s.pt")
                saved = torch.load(tmp_path / "s.pt", weights_only=True)
                param = torch.nn.Parameter(saved["p"])
                optimizer = Ranger([param], lr=1e-2)
                optimizer.load_state_dict(saved["o"])
            param.grad = g.clone()
            optimizer.step()
        return param.detach()

    assert torch.equal(run(), run(split=4))  # step 4: between two Lookahead syncs


def test_adamw_is_the_alternative():
    param = torch.nn.Parameter(torch.ones(2))
    assert isinstance(make_optimizer("adamw", [param], 1e-3), torch.optim.AdamW)
    with pytest.raises(ValueError):
        make_optimizer("sgd", [param], 1e-3)


# --------------------------------------------------------------------------- the step order


@pytest.mark.parametrize("images", [7, 8])
def test_two_processes_see_the_global_batches_of_one(images):
    one = StepSampler(images, 2, Launch(), seed=3)
    two = [StepSampler(images, 1, Launch(rank, 2, rank, 2), seed=3) for rank in range(2)]
    assert one.steps_per_epoch == two[0].steps_per_epoch == images // 2
    for step in range(3 * one.steps_per_epoch + 1):  # across epochs
        assert one.indices(step) == [two[0].indices(step)[0], two[1].indices(step)[0]]
        assert one.flips(step) == [two[0].flips(step)[0], two[1].flips(step)[0]]


def test_every_epoch_is_a_new_permutation_and_flips_vary():
    sampler = StepSampler(6, 2, Launch(), seed=0)
    epochs = [sorted(sum((sampler.indices(e * 3 + s) for s in range(3)), [])) for e in range(3)]
    assert all(epoch == list(range(6)) for epoch in epochs)
    orders = {tuple(sum((sampler.indices(e * 3 + s) for s in range(3)), [])) for e in range(3)}
    assert len(orders) > 1
    flips = [f for step in range(20) for f in sampler.flips(step)]
    assert 5 < sum(flips) < 35
    assert StepSampler(6, 2, Launch(), seed=0, flip=False).flips(0) == [False, False]


def test_the_inference_form_of_an_essence_encoder_gives_the_same_directions():
    from essencekit.essence_encoder import EssenceEncoder
    from essencekit.models.e4e import load_encoder_checkpoint

    encoder = load_encoder_checkpoint(FIXTURES / "tiny-e4e.pt").encoder.double()
    model = EssenceEncoder(encoder, {"recommended_strength": "1.0"})
    folded = model.for_inference()
    assert folded is not model and folded.recommended_strength == 1.0
    images = torch.rand(2, 3, 256, 256, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        expected, actual = model.eval()(images), folded(images)
    assert _relative(actual, expected) < 1e-10  # float64: only the folding's rounding differs
