"""Peer parity: xaicore's gradient methods against Captum, in float64, on the zoo CNN and MLP."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import InputXGradient, IntegratedGradients, Saliency

import xaicore

ATOL = 1e-5
IG_RULES = ["riemann_trapezoid", "riemann_middle", "riemann_left", "riemann_right", "gausslegendre"]


def captum_ig(model, x, baseline, target, n_steps, rule):
    """Captum's IG rescaled to a proper quadrature.

    Captum's ``riemann_trapezoid`` uses step sizes 1/n with halved ends (weights summing to (n-1)/n) at the
    points linspace(0, 1, n); the trapezoid rule on those points has step 1/(n-1), which xaicore uses (its
    weights sum to 1, so a constant gradient is integrated exactly). Same points, so the two differ by
    exactly n/(n-1). The other rules coincide.
    """
    ref = IntegratedGradients(model).attribute(x, baselines=baseline, target=target, n_steps=n_steps,
                                               method=rule).detach()
    return ref * (n_steps / (n_steps - 1)) if rule == "riemann_trapezoid" else ref


@pytest.fixture(params=["cnn", "mlp"])
def model64(request, helpers):
    return helpers.seeded_model(request.param, seed=3, dtype=torch.float64)


@pytest.fixture
def batch64(digit_batch):
    x, target = digit_batch
    return x[:4].double(), target[:4]


def _close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    assert ours.dtype == torch.float64
    ref = ref.detach()
    scale = max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(ours, ref, rtol=0.0, atol=ATOL * scale)
    assert float(ref.abs().max()) > 0  # a non-trivial comparison


def test_gradient_equals_captum_saliency(model64, batch64):
    x, target = batch64
    ours = xaicore.explain(model64, x, target, method="gradient")
    ref = Saliency(model64).attribute(x.clone().requires_grad_(True), target=target, abs=False)
    _close(ours, ref)


def test_gradient_x_input_equals_captum(model64, batch64):
    x, target = batch64
    ours = xaicore.explain(model64, x, target, method="gradient_x_input")
    ref = InputXGradient(model64).attribute(x.clone().requires_grad_(True), target=target)
    _close(ours, ref)


@pytest.mark.parametrize("rule", IG_RULES)
@pytest.mark.parametrize("n_steps", [5, 17])
def test_integrated_gradients_zero_baseline_equals_captum(model64, batch64, rule, n_steps):
    x, target = batch64
    ours = xaicore.explain(model64, x, target, method="integrated_gradients", n_steps=n_steps, rule=rule)
    ref = captum_ig(model64, x, torch.zeros_like(x), target, n_steps, rule)
    _close(ours, ref)


@pytest.mark.parametrize("rule", IG_RULES)
def test_integrated_gradients_nonzero_baseline_equals_captum(model64, batch64, rule):
    x, target = batch64
    gen = torch.Generator().manual_seed(11)
    base = torch.rand(x.shape, generator=gen, dtype=torch.float64) * 0.5
    ours = xaicore.explain(model64, x, target, method="integrated_gradients", n_steps=16, rule=rule,
                           baseline=base)
    ref = captum_ig(model64, x, base, target, 16, rule)
    _close(ours, ref)


def test_integrated_gradients_scalar_and_per_sample_baseline_equal_captum(model64, batch64):
    x, target = batch64
    ours = xaicore.explain(model64, x, target, method="integrated_gradients", n_steps=16, baseline=0.25)
    _close(ours, captum_ig(model64, x, 0.25, target, 16, "riemann_trapezoid"))
    one = torch.linspace(0.0, 1.0, x[0].numel(), dtype=torch.float64).view(x.shape[1:])
    ours = xaicore.explain(model64, x, target, method="integrated_gradients", n_steps=16, baseline=one)
    ref = captum_ig(model64, x, one.expand_as(x).contiguous(), target, 16, "riemann_trapezoid")
    _close(ours, ref)


@pytest.mark.parametrize("forward_batch", [1, 4 * 3, 10_000])
def test_integrated_gradients_forward_batch_does_not_change_result(model64, batch64, forward_batch):
    """Packing of path points into passes (1 step per pass, 3 + 3 + 3 + 1 steps, all at once) is invisible."""
    x, target = batch64
    ours = xaicore.explain(model64, x, target, method="integrated_gradients", n_steps=10, rule="gausslegendre",
                           forward_batch=forward_batch)
    ref = IntegratedGradients(model64).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=10,
                                                 method="gausslegendre")
    _close(ours, ref)


def test_float32_model_matches_captum_at_float32_tolerance(cnn, digit_batch):
    x, target = digit_batch
    ours = xaicore.explain(cnn, x, target, method="integrated_gradients", n_steps=16)
    ref = captum_ig(cnn, x, torch.zeros_like(x), target, 16, "riemann_trapezoid")
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("rule", IG_RULES)
def test_quadrature_rules_integrate_polynomials_exactly(rule):
    """Closed forms: every rule's weights sum to 1 and integrate alpha exactly where the rule is exact for it
    (trapezoid, midpoint, Gauss-Legendre); left/right Riemann sums of alpha are 1/2 -/+ 1/(2n)."""
    from xaicore.explain.gradient import quadrature

    n = 7
    alphas, weights = quadrature(n, rule)
    assert alphas.dtype == weights.dtype == np.float64
    assert np.all((alphas >= 0) & (alphas <= 1))
    assert weights.sum() == pytest.approx(1.0, abs=1e-15)
    expected = {"riemann_left": 0.5 - 0.5 / n, "riemann_right": 0.5 + 0.5 / n}.get(rule, 0.5)
    assert float(weights @ alphas) == pytest.approx(expected, abs=1e-14)
    if rule == "gausslegendre":  # exact up to degree 2n-1
        assert float(weights @ alphas ** (2 * n - 1)) == pytest.approx(1 / (2 * n), abs=1e-13)
