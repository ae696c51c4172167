"""Metrics judged against a causal truth (xaicore.metrics.truth) on synthetic cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import kendalltau

from xaicore.errors import XaiCoreError
from xaicore.metrics.truth import (
    agreement,
    causal_share,
    kendall_tau,
    metric_vs_truth,
    relevance_in_mask,
    variance_shares,
)


def truth_like(m: int = 8, n: int = 40, seed: int = 0) -> np.ndarray:
    """(methods, regimes, images) agreement with a clear order of the methods and per-image noise."""
    rng = np.random.default_rng(seed)
    return -np.linspace(0.05, 0.6, m)[:, None, None] + 0.05 * rng.standard_normal((m, 3, n))


def test_a_metric_equal_to_the_truth_has_tau_one():
    truth = truth_like()
    res = metric_vs_truth(truth, truth, n_boot=200)
    assert res.kendall_tau == pytest.approx(1.0) and res.n_methods == 8
    assert res.ci[0] > 0.8 and res.ci[1] == pytest.approx(1.0)
    # a lower-is-better metric that is the negated truth is the same ranking
    assert metric_vs_truth(-truth, truth, higher_is_better=False, n_boot=50).kendall_tau == pytest.approx(1.0)
    # and the reversed one is -1
    assert metric_vs_truth(-truth, truth, n_boot=50).kendall_tau == pytest.approx(-1.0)


def test_a_random_metric_has_tau_near_zero_and_a_ci_covering_zero():
    truth = truth_like(m=8, n=40)
    taus, covered = [], 0
    for seed in range(20):
        noise = np.random.default_rng(100 + seed).standard_normal(truth.shape)  # unrelated to the methods
        res = metric_vs_truth(noise, truth, n_boot=200, seed=seed)
        taus.append(res.kendall_tau)
        covered += res.ci[0] <= 0 <= res.ci[1]
    assert abs(np.mean(taus)) < 0.15
    assert covered >= 17  # a 95 % CI misses 0 about once in twenty


def test_tau_is_scipys_kendall_tau_b_of_the_method_means():
    rng = np.random.default_rng(3)
    metric, truth = rng.random((6, 2, 10)), rng.random((6, 2, 10))
    metric[2, 0, 4] = np.nan  # left out of the mean
    res = metric_vs_truth(metric, truth, n_boot=10)
    expected = kendalltau(np.nanmean(metric.reshape(6, -1), 1), truth.reshape(6, -1).mean(1)).statistic
    assert res.kendall_tau == pytest.approx(expected)
    assert np.isnan(kendall_tau(np.ones(4), np.arange(4)))


def test_the_bootstrap_is_a_function_of_the_seed():
    truth = truth_like()
    metric = truth + np.random.default_rng(1).standard_normal(truth.shape)
    a, b = metric_vs_truth(metric, truth, n_boot=100, seed=5), metric_vs_truth(metric, truth, n_boot=100, seed=5)
    assert a == b
    with pytest.raises(XaiCoreError, match="must both be"):
        metric_vs_truth(metric[:, 0], truth, n_boot=10)


def test_causal_share_and_agreement_closed_forms():
    drops = np.array([[3.0, 1.0], [-2.0, 2.0], [0.0, 5.0], [0.0, 0.0]])
    share = causal_share(drops)
    assert share[:3] == pytest.approx([0.75, 0.5, 0.0]) and np.isnan(share[3])
    assert agreement(np.array([[0.5, 0.5, 0.5, 0.5]]), share)[0, :3] == pytest.approx([-0.25, 0.0, -0.5])
    with pytest.raises(XaiCoreError, match=r"\(N, 2\)"):
        causal_share(np.zeros(3))


def test_relevance_in_mask_is_the_share_of_absolute_relevance():
    rel = torch.zeros(2, 1, 4, 4)
    rel[0, 0, 0, 0], rel[0, 0, 3, 3] = -3.0, 1.0  # negative relevance on the mask counts
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[:, :2, :2] = True
    riw = relevance_in_mask(rel, mask)
    assert riw[0] == pytest.approx(0.75) and torch.isnan(riw[1])  # an all-zero map: NaN


def test_variance_shares_of_a_regime_effect_and_a_salience_effect():
    salience = np.tile([0.25, 0.5, 0.75, 1.0], 5)
    regime_only = np.broadcast_to(np.array([0.0, 1.0, 0.0])[:, None], (3, 20)).copy()
    salience_only = np.broadcast_to(salience, (3, 20)).copy()
    eta2, r2 = variance_shares(np.stack([regime_only, salience_only]), salience)
    assert eta2 == pytest.approx([1.0, 0.0], abs=1e-12) and r2 == pytest.approx([0.0, 1.0], abs=1e-12)
    mixed = regime_only + salience_only
    e, r = variance_shares(mixed[None], salience)
    ss = ((mixed - mixed.mean()) ** 2).sum()
    assert e[0] == pytest.approx(20 * ((mixed.mean(1) - mixed.mean()) ** 2).sum() / ss)
    assert r[0] == pytest.approx(np.corrcoef(mixed.ravel(), np.tile(salience, 3))[0, 1] ** 2)
