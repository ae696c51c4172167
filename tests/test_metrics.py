"""Metrics: AOPC invariants (backends, batching, seeds, the model untouched), the perturbation noise, the
sanity-check similarities against scipy, and the axiom figures on hand-made heatmaps."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

import xaicore
from xaicore import XaiCoreError
from xaicore.metrics import (
    DIRECTIONS,
    aopc,
    conservation_error,
    positive_fraction,
    replacement_values,
    similarity,
    spearman_rows,
)


@pytest.fixture
def scored(cnn, digit_batch):
    x, target = digit_batch
    relevance = xaicore.explain(cnn, x, target, method="gradient_x_input")
    return cnn, x, target, relevance


# --- AOPC invariants -------------------------------------------------------------------------------------

@pytest.mark.parametrize("order", ["morf", "lerf"])
@pytest.mark.parametrize("score", ["logit", "probability"])
def test_aopc_numba_equals_torch(order, score, scored):
    model, x, target, relevance = scored
    a = aopc(model, x, target, relevance, order=order, score=score, region=4, backend="numba")
    b = aopc(model, x, target, relevance, order=order, score=score, region=4, backend="torch")
    torch.testing.assert_close(a.curve, b.curve, rtol=0, atol=1e-6)
    torch.testing.assert_close(a.aopc, b.aopc, rtol=0, atol=1e-6)
    assert float(a.curve.std()) > 0  # the curve moves


def test_aopc_batched_equals_per_sample(scored):
    model, x, target, relevance = scored
    x, target, relevance = x.double(), target, relevance.double()
    model = model.double()
    batched = aopc(model, x, target, relevance, region=4, seed=5)
    single = [aopc(model, x[i:i + 1], target[i:i + 1], relevance[i:i + 1], region=4, seed=5) for i in range(8)]
    torch.testing.assert_close(batched.curve, torch.cat([s.curve for s in single]), rtol=0, atol=1e-6)
    torch.testing.assert_close(batched.aopc, torch.cat([s.aopc for s in single]), rtol=0, atol=1e-6)
    # a reordered batch gives each sample the same curve (its noise is keyed by its content, not position)
    perm = torch.tensor([7, 3, 0, 3])
    permuted = aopc(model, x[perm], target[perm], relevance[perm], region=4, seed=5)
    torch.testing.assert_close(permuted.curve, batched.curve[perm], rtol=0, atol=1e-6)


def test_aopc_seeds(scored):
    model, x, target, relevance = scored
    a = aopc(model, x, target, relevance, seed=1)
    b = aopc(model, x, target, relevance, seed=1)
    c = aopc(model, x, target, relevance, seed=2)
    assert torch.equal(a.curve, b.curve) and torch.equal(a.aopc, b.aopc)
    assert torch.equal(a.curve[:, 0], c.curve[:, 0])  # k = 0 is the unperturbed f(x) for every seed
    assert float((a.curve[:, 1:] - c.curve[:, 1:]).abs().min(1).values.max()) > 0
    assert not torch.equal(a.aopc, c.aopc)


def test_aopc_curve_starts_at_the_target_logit_and_aopc_is_the_mean_drop(scored):
    model, x, target, relevance = scored
    res = aopc(model, x, target, relevance, region=7)
    with torch.no_grad():
        fx = model(x).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(res.curve[:, 0], fx, rtol=0, atol=1e-6)
    assert tuple(res.curve.shape) == (8, 17)
    expected = (res.curve[:, :1].double() - res.curve.double()).sum(1) / 17
    torch.testing.assert_close(res.aopc.double(), expected, rtol=0, atol=1e-5)


def test_aopc_leaves_model_and_inputs_unchanged(scored, helpers):
    model, x, target, relevance = scored
    model.train()
    model.conv1.eval()
    flags = {n: m.training for n, m in model.named_modules()}
    before = helpers.model_state(model)
    x0, r0 = x.clone(), relevance.clone()
    aopc(model, x, target, relevance, region=4)
    helpers.assert_states_equal(before, helpers.model_state(model))
    assert {n: m.training for n, m in model.named_modules()} == flags
    helpers.assert_no_hooks(model)
    assert torch.equal(x, x0) and torch.equal(relevance, r0)


def test_aopc_bad_input(scored):
    model, x, target, relevance = scored
    with pytest.raises(XaiCoreError, match=r"needs the training columns' statistics"):
        aopc(model, x.flatten(1), target, relevance.flatten(1))  # (B, F) floats are a table
    with pytest.raises(XaiCoreError, match=r"relevance shape \(8, 1, 28, 27\) differs from x \(8, 1, 28, 28\)"):
        aopc(model, x, target, relevance[..., :27])
    bad = relevance.clone()
    bad[0, 0, 0, 0] = float("inf")
    with pytest.raises(XaiCoreError, match="NaN or inf"):
        aopc(model, x, target, bad)
    with pytest.raises(XaiCoreError, match="unknown order 'up'"):
        aopc(model, x, target, relevance, order="up")
    with pytest.raises(XaiCoreError, match="unknown score 'loss'"):
        aopc(model, x, target, relevance, score="loss")
    with pytest.raises(XaiCoreError, match="unknown perturbation 'blurr'"):
        aopc(model, x, target, relevance, perturbation="blurr")
    with pytest.raises(XaiCoreError, match="target must be"):
        aopc(model, x, target[:3], relevance)


def test_directions():
    # issue 3 added the other scores' directions (tests/metrics/test_reliability.py); these three are unchanged
    assert {k: DIRECTIONS[k] for k in ("aopc_morf", "aopc_lerf", "conservation_error")} == \
        {"aopc_morf": +1, "aopc_lerf": -1, "conservation_error": -1}
    assert set(DIRECTIONS.values()) == {-1, +1}


# --- perturbation noise ----------------------------------------------------------------------------------

def test_replacement_values_uniform(digit_batch):
    x, _ = digit_batch
    r = replacement_values(x, "uniform", seed=0)
    assert r.shape == x.shape and r.dtype == x.dtype
    assert float(r.min()) >= 0.0 and float(r.max()) < 1.0
    assert abs(float(r.mean()) - 0.5) < 0.01  # 6272 draws: sd of the mean 0.0036
    assert abs(float(r.var()) - 1 / 12) < 0.005
    assert torch.equal(r, replacement_values(x, "uniform", seed=0))
    assert not torch.equal(r, replacement_values(x, "uniform", seed=1))
    # per sample, keyed by content: a sample's noise does not depend on the batch around it
    assert torch.equal(replacement_values(x[3:4], "uniform", seed=0), r[3:4])
    assert torch.equal(replacement_values(x.flip(0), "uniform", seed=0), r.flip(0))
    r2 = replacement_values(x, "uniform", seed=0, low=-1.0, high=3.0)
    assert float(r2.min()) >= -1.0 and float(r2.max()) < 3.0 and float(r2.min()) < 0.0
    assert replacement_values(x.double(), "uniform", seed=0).dtype == torch.float64
    with pytest.raises(XaiCoreError, match="unknown perturbation 'gauss'"):
        replacement_values(x, "gauss", seed=0)


# --- sanity-check similarities ---------------------------------------------------------------------------

def _pairs() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(6, 50))
    b = 0.5 * a + rng.normal(size=(6, 50))
    ties_a = rng.integers(-2, 3, size=(6, 50)).astype(float)  # 5 values: heavy ties
    ties_b = np.where(rng.random((6, 50)) < 0.5, ties_a, rng.integers(-2, 3, size=(6, 50)))
    sign = np.sign(rng.normal(size=(6, 50)))
    return [(a, b), (ties_a, ties_b.astype(float)), (a, -a), (a, a * sign), (np.abs(a), a ** 3)]


@pytest.mark.parametrize("pair", range(5))
def test_spearman_equals_scipy_per_row(pair):
    a, b = _pairs()[pair]
    ta, tb = torch.from_numpy(a).view(6, 2, 5, 5), torch.from_numpy(b).view(6, 2, 5, 5)
    ours = similarity(ta, tb, "spearman").double().numpy()
    ours_abs = similarity(ta, tb, "spearman_abs").double().numpy()
    for i in range(6):
        assert ours[i] == pytest.approx(scipy.stats.spearmanr(a[i], b[i]).statistic, abs=1e-6)
        assert ours_abs[i] == pytest.approx(scipy.stats.spearmanr(np.abs(a[i]), np.abs(b[i])).statistic, abs=1e-6)
    np.testing.assert_allclose(spearman_rows(a, b), [scipy.stats.spearmanr(a[i], b[i]).statistic
                                                     for i in range(6)], rtol=0, atol=1e-12)


def test_spearman_closed_forms():
    a = torch.randn(3, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(similarity(a, a).numpy(), 1.0, atol=1e-7)
    np.testing.assert_allclose(similarity(a, -a).numpy(), -1.0, atol=1e-7)
    np.testing.assert_allclose(similarity(a, -a, "spearman_abs").numpy(), 1.0, atol=1e-7)
    np.testing.assert_allclose(similarity(a, torch.exp(3 * a)).numpy(), 1.0, atol=1e-7)  # rank-invariant
    # n = 4, ranks (1, 2, 3, 4) vs (1, 2, 4, 3): rho = 1 - 6 * 2 / (4 * 15) = 0.8
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    y = torch.tensor([[1.0, 2.0, 4.0, 3.0]])
    assert float(similarity(x, y)[0]) == pytest.approx(0.8, abs=1e-7)
    # a constant heatmap has no ranking: NaN, as scipy
    const = torch.ones(1, 4)
    assert np.isnan(float(similarity(const, y)[0]))


def test_similarity_bad_input():
    a = torch.zeros(2, 1, 4, 4)
    with pytest.raises(XaiCoreError, match="heatmap shapes differ"):
        similarity(a, a[..., :3])
    with pytest.raises(XaiCoreError, match="unknown similarity measure 'ssim2'"):
        similarity(a, a, "ssim2")


# --- axioms ----------------------------------------------------------------------------------------------

def test_conservation_error_on_hand_made_heatmaps():
    rel = torch.tensor([[[1.0, 2.0], [3.0, 4.0]],      # sums to 10
                        [[-1.0, 0.5], [0.25, 0.25]],    # sums to 0
                        [[2.0, -2.0], [1.0, 1.0]]])     # sums to 2
    score = torch.tensor([10.0, 4.0, -2.0])
    np.testing.assert_allclose(conservation_error(rel, score).numpy(), [0.0, 1.0, 2.0], rtol=0, atol=1e-7)
    err = conservation_error(rel[None, 0] * 1.01, torch.tensor([10.0]))
    assert float(err[0]) == pytest.approx(0.01, abs=1e-6)
    assert conservation_error(rel, score).dtype == torch.float32
    # f(x) = 0: the relative error is |ΣR| / 1e-12, not a division by zero
    assert float(conservation_error(rel[None, 0], torch.tensor([0.0]))[0]) == pytest.approx(1e13, rel=1e-6)


def test_conservation_error_is_computed_in_float64():
    rel = torch.full((1, 1, 100, 100), 0.1, dtype=torch.float32)
    exact = float(torch.tensor(0.1, dtype=torch.float32).double() * 10_000)
    assert float(conservation_error(rel, torch.tensor([exact], dtype=torch.float64))[0]) < 1e-12
    # the float32 sum would be off by ~1e-4 relative (sequential) or ~1e-8 (pairwise); the float64 sum is exact


def test_positive_fraction_on_hand_made_heatmaps():
    rel = torch.tensor([[1.0, 2.0, 3.0, 4.0], [-1.0, 0.0, 1.0, -2.0], [-1.0, -1.0, -1.0, -1.0]])
    np.testing.assert_allclose(positive_fraction(rel).numpy(), [1.0, 0.5, 0.0], rtol=0, atol=0)
    assert positive_fraction(torch.zeros(2, 1, 3, 3)).tolist() == [1.0, 1.0]  # R = 0 counts as non-negative
