"""The pieces of the extraction recipe: losses (goldens), schedule, coefficient rules."""

from __future__ import annotations

import math

import pytest
import torch

from essencekit.clip_losses import consistency_loss, total_loss, transfer_loss
from essencekit.extraction.coefficients import CoefficientRule
from essencekit.extraction.schedule import learning_rate, schedule_factor


@pytest.fixture(scope="module")
def golden(request):
    from pathlib import Path

    return torch.load(Path(__file__).parent / "fixtures" / "tiny-golden.pt", weights_only=True)


def close(actual, expected, tol=1e-5):
    expected = torch.as_tensor(expected)
    scale = max(expected.abs().max().item(), 1.0)
    return (torch.as_tensor(actual) - expected).abs().max().item() < tol * scale


def test_losses_equal_the_goldens(golden):
    source, edited, target = golden["loss.src_emb"], golden["loss.amp_emb"], golden["loss.target_emb"]
    assert close(transfer_loss(edited, target), golden["loss.transfer"])
    assert close(consistency_loss(edited, source, "raw"), golden["loss.consistency_coach_py"])
    assert close(consistency_loss(edited, source, "normalized"), golden["loss.consistency_optimization_py"])
    # the two forms really differ, so the test tells them apart
    assert not close(golden["loss.consistency_coach_py"], golden["loss.consistency_optimization_py"], 1e-3)
    loss, transfer, consistency = total_loss(edited, source, target, lambda_transfer=1.0, lambda_consistency=0.6)
    assert close(loss, golden["loss.transfer"] + 0.6 * golden["loss.consistency_coach_py"])


def test_losses_batch_over_restarts_independently(golden):
    source, edited, target = golden["loss.src_emb"], golden["loss.amp_emb"], golden["loss.target_emb"]
    other = torch.randn_like(edited)
    batched = torch.stack([edited, other])
    assert close(transfer_loss(batched, target)[0], transfer_loss(edited, target))
    assert close(consistency_loss(batched, source)[0], consistency_loss(edited, source))
    assert consistency_loss(batched, source).shape == (2,)


def test_consistency_is_the_mean_over_ordered_pairs_and_safe():
    deltas = torch.randn(5, 8)
    source = torch.randn(5, 8)
    expected = sum(
        1 - torch.nn.functional.cosine_similarity(deltas[i], deltas[j], dim=0)
        for i in range(5) for j in range(5) if i != j
    ) / 20
    assert close(consistency_loss(source + deltas, source), expected)
    # a zero delta (coefficient 0) gives a finite loss, and one source has no pair
    zero = source.clone()
    zero[0] += deltas[0]
    assert torch.isfinite(consistency_loss(zero, source))
    assert consistency_loss(source[:1] + 1, source[:1]).item() == 0


def reference_lr(t, initial_lr, rampdown=0.75, rampup=0.005):
    # transcription of the reference's get_lr, for comparison
    lr_ramp = min(1, (1 - t) / rampdown)
    lr_ramp = 0.5 - 0.5 * math.cos(lr_ramp * math.pi)
    lr_ramp = lr_ramp * min(1, t / rampup)
    return initial_lr * lr_ramp


@pytest.mark.parametrize("step", [0, 1, 2, 4, 5, 6, 100, 249, 250, 251, 500, 750, 900, 999])
def test_schedule_matches_the_reference(step):
    assert learning_rate(step, 1000, 0.2) == pytest.approx(reference_lr(step / 1000, 0.2), abs=1e-12)


def test_schedule_shape():
    assert schedule_factor(0.0) == 0
    assert schedule_factor(0.005) == pytest.approx(1.0)
    assert schedule_factor(0.25) == pytest.approx(1.0)
    assert schedule_factor(0.5) == pytest.approx(0.75)
    assert schedule_factor(1.0) == pytest.approx(0.0, abs=1e-12)


def test_sign_rule_equals_a_fresh_adam_every_step():
    torch.manual_seed(0)
    start = torch.randn(3, 5) * 0.5 + 1
    rule = CoefficientRule("sign", start, lr=0.2)
    reference = start.clone().requires_grad_(True)
    for _ in range(4):
        grad = torch.randn(3, 5)
        rule.zero_grad()
        rule.values.grad = grad.clone()
        rule.step()
        adam = torch.optim.Adam([reference], lr=0.2, weight_decay=0.01)  # re-created, as the reference
        reference.grad = grad.clone()
        adam.step()
        assert torch.allclose(rule.values, reference, atol=1e-6)
        # ... which is a step of exactly lr against the sign of g + 0.01 c
    c = torch.tensor([1.0, 1.0, -2.0])
    rule = CoefficientRule("sign", c, lr=0.2)
    rule.values.grad = torch.tensor([0.5, -0.005, 0.001])
    rule.step()
    assert torch.allclose(rule.values, torch.tensor([0.8, 0.8, -1.8]))


def test_adam_and_fixed_rules():
    fixed = CoefficientRule("fixed", torch.ones(2, 3), lr=0.2)
    assert not fixed.values.requires_grad
    fixed.step()
    assert torch.equal(fixed.values, torch.ones(2, 3))
    adam = CoefficientRule("adam", torch.ones(1, 2), lr=0.2)
    reference = torch.ones(1, 2, requires_grad=True)
    optimizer = torch.optim.Adam([reference], lr=0.2, weight_decay=0.01)
    for grad in (torch.tensor([[1.0, -2.0]]), torch.tensor([[-0.5, 0.1]])):
        adam.values.grad = grad.clone()
        adam.step()
        reference.grad = grad.clone()
        optimizer.step()
    assert torch.allclose(adam.values, reference)
    # a persistent Adam's second step is not a sign step
    assert not torch.allclose((adam.values - 1).abs(), torch.full((1, 2), 0.4))
