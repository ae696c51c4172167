"""Faithfulness (survey §4.5.2): the closed form on a linear model, backends, batching, packing, and parity with
Quantus' FaithfulnessCorrelation when its random subsets are made the L regions, one per run."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch
from conftest import linear_model

import xaicore
from xaicore import XaiCoreError
from xaicore.kernels import region_grid
from xaicore.kernels.torch_kernels import region_sums
from xaicore.metrics import PERTURBATIONS, faithfulness, feature_drops, pearson_rows, replacement_values


@pytest.mark.parametrize("perturbation", PERTURBATIONS)
def test_linear_model_closed_form(images, perturbation):
    """Δ_r = w_r · (x_r − x'_r) exactly, so relevance w ⊙ (x − x') has faithfulness 1 (and its negation −1)."""
    model = linear_model((2, 13, 10))
    x, target = images, torch.tensor([0, 1, 2, 2, 1, 0])
    ref = images.flip(0)[:4]
    rep = replacement_values(x, perturbation, seed=7, region=4, reference=ref)
    relevance = model[1].weight.detach()[target].view_as(x) * (x - rep)
    kw = dict(perturbation=perturbation, region=4, seed=7, reference=ref)
    drops = feature_drops(model, x, target, **kw)
    np.testing.assert_allclose(drops.numpy(), region_sums(relevance, 4).numpy(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(faithfulness(model, x, target, relevance, **kw).numpy(), 1.0, atol=1e-6)
    np.testing.assert_allclose(faithfulness(model, x, target, -relevance, **kw).numpy(), -1.0, atol=1e-6)
    noisy = relevance + torch.randn(x.shape, generator=torch.Generator().manual_seed(0), dtype=x.dtype)
    assert float(faithfulness(model, x, target, noisy, **kw).max()) < 0.999


def test_pearson_rows_equals_scipy():
    g = np.random.default_rng(0)
    a, b = g.normal(size=(5, 30)), g.normal(size=(5, 30))
    b[1] = 2 * a[1] + 1
    ours = pearson_rows(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    np.testing.assert_allclose(ours, [scipy.stats.pearsonr(a[i], b[i])[0] for i in range(5)], atol=1e-12)
    assert np.isnan(pearson_rows(torch.ones(1, 4), torch.rand(1, 4)).item())


@pytest.mark.parametrize("perturbation", PERTURBATIONS)
def test_numba_equals_torch_and_packing(cnn, digits16, perturbation):
    x, target = digits16[0][:8], digits16[1][:8]
    relevance = xaicore.explain(cnn, x, target, method="gradient_x_input")
    kw = dict(perturbation=perturbation, region=7, seed=1, reference=x[:3])
    a = faithfulness(cnn, x, target, relevance, backend="numba", **kw)
    b = faithfulness(cnn, x, target, relevance, backend="torch", **kw)
    c = faithfulness(cnn, x, target, relevance, forward_batch=8, **kw)  # one region per forward pass
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    torch.testing.assert_close(a, c, rtol=0, atol=1e-5)
    assert a.shape == (8,) and bool(torch.isfinite(a).all()) and float(a.std()) > 0


def test_batched_equals_per_sample(cnn, digits16):
    model, (x, target) = cnn.double(), digits16
    x = x.double()
    relevance = xaicore.explain(model, x, target, method="gradient_x_input")
    batched = faithfulness(model, x, target, relevance, perturbation="dirichlet", region=7, seed=2)
    single = torch.cat([faithfulness(model, x[i:i + 1], target[i:i + 1], relevance[i:i + 1],
                                     perturbation="dirichlet", region=7, seed=2) for i in range(0, 16, 3)])
    torch.testing.assert_close(batched[::3], single, rtol=0, atol=1e-6)


@pytest.mark.slow  # importing Quantus alone takes 8-14 s here
def test_quantus_parity(trained_cnn, digits16, monkeypatch):
    """Quantus' FaithfulnessCorrelation draws ``nr_runs`` random subsets of ``subset_size`` pixels per sample and
    correlates their summed attribution with the drop. With subset_size = region², nr_runs = L, each run's
    subset forced to region r (its np.random.choice patched) and its perturb_func writing our replacement, it
    computes exactly our ρ. Its default random subsets (overlapping, any pixels) estimate a different figure."""
    import quantus

    x, target = digits16
    relevance = xaicore.explain(trained_cnn, x, target, method="gradient_x_input")
    grid = region_grid(28, 28, 4).numpy()
    calls = iter(range(10**6))

    def choice(n, size, replace=True, **_):
        assert (n, size) == (784, 16)
        return grid[next(calls) // x.shape[0]]  # run r: region r for every sample

    monkeypatch.setattr(np.random, "choice", choice)
    for perturbation in ("uniform", "blur"):
        rep = replacement_values(x, perturbation, seed=0, region=4).reshape(16, -1).numpy()

        def replace(arr, indices, rep=rep, **_):
            out = arr.copy()
            rows = np.arange(arr.shape[0])[:, None]
            out[rows, indices] = rep[rows, indices]
            return out

        calls = iter(range(10**6))
        metric = quantus.FaithfulnessCorrelation(nr_runs=49, subset_size=16, abs=False, normalise=False,
                                                 perturb_func=replace, return_aggregate=False,
                                                 disable_warnings=True)
        theirs = metric(model=trained_cnn, x_batch=x.numpy(), y_batch=target.numpy(), a_batch=relevance.numpy(),
                        channel_first=True, device="cpu", batch_size=16)
        ours = faithfulness(trained_cnn, x, target, relevance, perturbation=perturbation, region=4, seed=0)
        np.testing.assert_allclose(ours.numpy(), np.asarray(theirs), rtol=0, atol=1e-5)


def test_model_and_inputs_unchanged_and_bad_input(cnn, digits16, helpers):
    x, target = digits16
    relevance = xaicore.explain(cnn, x, target, method="gradient")
    cnn.train()
    before, x0 = helpers.model_state(cnn), x.clone()
    faithfulness(cnn, x, target, relevance, perturbation="blur")
    helpers.assert_states_equal(before, helpers.model_state(cnn))
    assert cnn.training and torch.equal(x, x0)
    with pytest.raises(XaiCoreError, match="relevance shape"):
        faithfulness(cnn, x, target, relevance[:, :, :5])
    with pytest.raises(XaiCoreError, match="unknown perturbation 'noise'"):
        faithfulness(cnn, x, target, relevance, perturbation="noise")
    with pytest.raises(XaiCoreError, match="unknown score"):
        faithfulness(cnn, x, target, relevance, score="loss")
    with pytest.raises(XaiCoreError, match=r"needs the training columns' statistics"):
        faithfulness(cnn, x.flatten(1), target, relevance.flatten(1))  # (B, F) floats are a table
