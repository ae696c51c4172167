"""Prediction difference analysis (survey §6.4, eqs. 17-22) against closed forms, numpy and Captum's Occlusion.

* the Gaussian algebra (conditional_gaussian, fit_patch_gaussian) against numpy;
* marginal sampling in exact mode (every stored image once) against the finite sum of eq. 22, by hand for a
  model that reads one pixel and by enumeration for a linear-softmax model, with all three measures;
* a degenerate conditional sampler (zero Gaussian: every draw is the baseline 0) against Captum's Occlusion on
  softmax outputs, which checks the windows and the per-pixel averaging;
* the conditional sampler's draws against their closed-form mean and variance;
* batching, seeding, the zoo models and the errors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaicore
from tests.tolerance import logit_atol
from tests.zoo_models import seeded_zoo_model
from xaicore.errors import XaiCoreError
from xaicore.explain.perturbation.pda import (
    MEASURES,
    PatchGaussian,
    _Sampler,
    conditional_gaussian,
    fit_patch_gaussian,
    prediction_difference,
)
from xaicore.features import Windows

D64 = torch.float64


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def _measure(p: float, q: float, measure: str, n: int, k: int) -> float:
    """Eqs. 17-20 by hand, with Zintgraf's Laplace correction p' = (p·N + 1)/(N + K) in the log measures."""
    if measure == "prob_diff":
        return p - q
    p_, q_ = (p * n + 1) / (n + k), (q * n + 1) / (n + k)
    if measure == "info_diff":
        return np.log2(p_) - np.log2(q_)
    return np.log2(p_ / (1 - p_)) - np.log2(q_ / (1 - q_))


def _random_spd(d: int, seed: int) -> np.ndarray:
    a = np.random.default_rng(seed).normal(size=(d, d))
    return a @ a.T + 0.5 * np.eye(d)


class OnePixel(nn.Module):
    """Two classes, logits [a·x[c, y, x], 0]: only pixel (c, y, x) matters."""

    def __init__(self, a: float, pixel: tuple[int, int, int]) -> None:
        super().__init__()
        self.a, self.pixel = a, pixel

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = self.a * x[:, self.pixel[0], self.pixel[1], self.pixel[2]]
        return torch.stack([v, torch.zeros_like(v)], 1)


def _linear_softmax(shape: tuple[int, int, int], k: int, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(shape)), k)).to(D64).eval()
        with torch.no_grad():
            model[1].weight.mul_(6.0)  # probabilities away from uniform
    return model


def _small_cnn(c: int, h: int, w: int, k: int = 5, seed: int = 0) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = nn.Sequential(nn.Conv2d(c, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * (h - 2) * (w - 2), k))
    return model.to(D64).eval()


def _zero_gaussian(window: int, padding: int, shape: tuple[int, int, int], n_train: int = 100) -> PatchGaussian:
    c = shape[0]
    d = c * (window + 2 * padding) ** 2
    return PatchGaussian(window, padding, torch.zeros(d, dtype=D64), torch.zeros(d, d, dtype=D64), 0.0, 1.0,
                         torch.zeros(1, *shape, dtype=D64), n_train)


# --------------------------------------------------------------------------------------------- Gaussian algebra


def test_conditional_gaussian_matches_numpy():
    cov = _random_spd(6, seed=1)
    mean = np.random.default_rng(2).normal(size=6)
    idx1, idx2 = np.array([0, 3]), np.array([1, 2, 4, 5])
    a, shift, cond = conditional_gaussian(torch.from_numpy(mean), torch.from_numpy(cov), torch.from_numpy(idx1),
                                          torch.from_numpy(idx2), ridge=0.0)
    s11, s12, s22 = cov[np.ix_(idx1, idx1)], cov[np.ix_(idx1, idx2)], cov[np.ix_(idx2, idx2)]
    a_ref = s12 @ np.linalg.inv(s22)
    np.testing.assert_allclose(a.numpy(), a_ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(shift.numpy(), mean[idx1] - a_ref @ mean[idx2], rtol=0, atol=1e-10)
    np.testing.assert_allclose(cond.numpy(), s11 - a_ref @ s12.T, rtol=0, atol=1e-10)
    assert torch.equal(cond, cond.T)


def test_conditional_gaussian_without_frame_is_the_marginal():
    cov = torch.from_numpy(_random_spd(4, seed=3))
    mean = torch.arange(4, dtype=D64)
    idx1, idx2 = torch.arange(4), torch.zeros(0, dtype=torch.long)
    for ridge in (0.0, 1e-6):
        a, shift, cond = conditional_gaussian(mean, cov, idx1, idx2, ridge=ridge)
        assert a.shape == (4, 0)
        assert torch.equal(shift, mean)
        torch.testing.assert_close(cond, cov, rtol=0, atol=1e-15)


def test_conditional_gaussian_ridge_handles_a_singular_frame():
    """Σ22 = 0 (constant pixels) is singular: the ridge makes it solvable and everything stays 0, finite."""
    mean, cov = torch.zeros(5, dtype=D64), torch.zeros(5, 5, dtype=D64)
    a, shift, cond = conditional_gaussian(mean, cov, torch.tensor([2]), torch.tensor([0, 1, 3, 4]), ridge=1e-6)
    for t in (a, shift, cond):
        assert torch.isfinite(t).all()
        assert torch.equal(t, torch.zeros_like(t))
    # a constant frame next to a varying window: A = 0, the window keeps its marginal
    cov[2, 2] = 0.25
    mean[2] = 0.5
    a, shift, cond = conditional_gaussian(mean, cov, torch.tensor([2]), torch.tensor([0, 1, 3, 4]), ridge=1e-6)
    assert torch.equal(a, torch.zeros(1, 4, dtype=D64))
    assert float(shift) == 0.5 and float(cond) == 0.25


def _patches_numpy(x: np.ndarray, side: int) -> np.ndarray:
    """Every side×side patch of every image, by loops, flattened channel-major (c, y, x)."""
    n, c, h, w = x.shape
    rows = []
    for i in range(n):
        for y in range(h - side + 1):
            for xx in range(w - side + 1):
                rows.append(np.array([x[i, ch, y + dy, xx + dx] for ch in range(c) for dy in range(side)
                                      for dx in range(side)]))
    return np.stack(rows)


@pytest.mark.parametrize("window,padding", [(2, 1), (1, 0), (3, 0)])
def test_fit_patch_gaussian_matches_numpy_moments(window, padding):
    x = torch.rand(5, 2, 6, 7, generator=torch.Generator().manual_seed(4), dtype=D64)
    state = xaicore.fit(nn.Identity(), x, method="pda", window=window, padding=padding, batch_size=2)
    assert isinstance(state, PatchGaussian)
    v = _patches_numpy(x.numpy(), window + 2 * padding)
    np.testing.assert_allclose(state.mean.numpy(), v.mean(0), rtol=0, atol=1e-10)
    np.testing.assert_allclose(state.cov.numpy(), np.cov(v, rowvar=False, bias=True), rtol=0, atol=1e-10)
    assert state.mean.dtype == D64 and state.cov.dtype == D64
    assert (state.window, state.padding, state.n_train) == (window, padding, 5)
    assert state.low == float(x.min()) and state.high == float(x.max())
    assert torch.equal(state.marginal, x)  # n_marginal ≥ N: every image, in order


def test_fit_stores_a_seeded_subset_of_marginal_images():
    x = torch.rand(20, 1, 5, 5, generator=torch.Generator().manual_seed(5), dtype=D64)
    a = fit_patch_gaussian(None, x, window=1, padding=1, n_marginal=6, seed=3)  # type: ignore[arg-type]
    b = fit_patch_gaussian(None, x, window=1, padding=1, n_marginal=6, seed=3)  # type: ignore[arg-type]
    c = fit_patch_gaussian(None, x, window=1, padding=1, n_marginal=6, seed=4)  # type: ignore[arg-type]
    assert a.marginal.shape == (6, 1, 5, 5) and a.n_train == 20
    assert torch.equal(a.marginal, b.marginal) and not torch.equal(a.marginal, c.marginal)
    rows = {tuple(r.flatten().tolist()) for r in x}
    assert all(tuple(r.flatten().tolist()) in rows for r in a.marginal)
    assert len({tuple(r.flatten().tolist()) for r in a.marginal}) == 6  # without replacement


def test_state_save_load_round_trip(tmp_path):
    x = torch.rand(6, 1, 8, 8, generator=torch.Generator().manual_seed(6), dtype=D64)
    model = _small_cnn(1, 8, 8)
    state = xaicore.fit(model, x, method="pda", window=2, padding=1)
    path = state.save(tmp_path / "pda.pt")
    loaded = PatchGaussian.load(path)
    for f in ("mean", "cov", "marginal"):
        a, b = getattr(state, f), getattr(loaded, f)
        assert a.dtype == b.dtype and torch.equal(a, b), f
    for f in ("window", "padding", "low", "high", "n_train"):
        assert getattr(state, f) == getattr(loaded, f), f
    xe, t = x[:2], torch.tensor([0, 3])
    kw = {"window": 2, "padding": 1, "stride": 2, "n_samples": 2}
    for sampling in ("conditional", "marginal"):
        r1 = xaicore.explain(model, xe, t, method="pda", reference=state, sampling=sampling, **kw)
        r2 = xaicore.explain(model, xe, t, method="pda", reference=loaded, sampling=sampling, **kw)
        assert torch.equal(r1, r2)


# ------------------------------------------------------------------------------- marginal sampling, exact (eq. 22)


def test_prediction_difference_formulas():
    p = torch.tensor([[0.9], [0.2]], dtype=D64)
    q = torch.tensor([[0.5, 0.95], [0.2, 0.01]], dtype=D64)
    for measure in MEASURES:
        got = prediction_difference(p, q, measure, 50, 10)
        want = [[_measure(float(p[i, 0]), float(q[i, j]), measure, 50, 10) for j in range(2)] for i in range(2)]
        np.testing.assert_allclose(got.numpy(), np.array(want), rtol=0, atol=1e-14)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("extra", [0, 5])  # n_samples = M and > M: both are the exact mode
def test_one_pixel_model_closed_form(measure, extra):
    shape, pixel, a = (2, 4, 5), (1, 2, 3), 2.5
    model = OnePixel(a, pixel)
    train = torch.rand(4, *shape, generator=torch.Generator().manual_seed(7), dtype=D64)
    state = xaicore.fit(model, train, method="pda", window=1, padding=0)
    n_stored = state.marginal.shape[0]
    assert n_stored == 4 and state.n_train == 4
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(8), dtype=D64)
    target = torch.tensor([0, 1])
    rel = xaicore.explain(model, x, target, method="pda", reference=state, window=1, padding=0, stride=1,
                          sampling="marginal", n_samples=n_stored + extra, measure=measure)
    vals = state.marginal[:, pixel[0], pixel[1], pixel[2]].numpy()
    for i, c in enumerate(target.tolist()):
        p = _softmax(np.array([a * float(x[i, pixel[0], pixel[1], pixel[2]]), 0.0]))[c]
        q = np.mean([_softmax(np.array([a * v, 0.0]))[c] for v in vals])
        want = _measure(p, q, measure, state.n_train, 2)
        # a window covers all channels: the pixel's relevance shows in every channel
        np.testing.assert_allclose(rel[i, :, pixel[1], pixel[2]].numpy(), [want] * shape[0], rtol=0, atol=1e-12)
        assert abs(want) > 1e-3
        other = rel[i].clone()
        other[:, pixel[1], pixel[2]] = 0
        assert torch.equal(other, torch.zeros_like(other))


def _pda_marginal_numpy(w: np.ndarray, b: np.ndarray, x: np.ndarray, stored: np.ndarray, target: int, k: int,
                        stride: int, n_train: int, measure: str) -> np.ndarray:
    """Eq. 22 by enumeration: p(c|x∖w) = Σ_s p(w = a_s) p(c | x ← a_s) over the distinct window values a_s of
    the stored images (empirical frequencies), for a softmax(Wx + b) model; a pixel gets the mean over the
    windows (stride ``stride``, whole windows only) covering it."""
    c, h, wd = x.shape
    n_classes = w.shape[0]
    p = _softmax(w @ x.reshape(-1) + b)[target]
    total, count = np.zeros((h, wd)), np.zeros((h, wd))
    for oy in range(0, h - k + 1, stride):
        for ox in range(0, wd - k + 1, stride):
            wins = stored[:, :, oy:oy + k, ox:ox + k].reshape(len(stored), -1)
            values, freq = np.unique(wins, axis=0, return_counts=True)
            q = 0.0
            for v, f in zip(values, freq, strict=True):
                xt = x.copy()
                xt[:, oy:oy + k, ox:ox + k] = v.reshape(c, k, k)
                q += f / len(stored) * _softmax(w @ xt.reshape(-1) + b)[target]
            total[oy:oy + k, ox:ox + k] += _measure(p, q, measure, n_train, n_classes)
            count[oy:oy + k, ox:ox + k] += 1
    out = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return np.broadcast_to(out, x.shape)


@pytest.mark.parametrize("window,stride", [(1, 1), (2, 1), (2, 2), (3, 1)])
@pytest.mark.parametrize("n_channels", [1, 2])
def test_linear_softmax_exact_enumeration(window, stride, n_channels):
    shape = (n_channels, 4, 4)
    model = _linear_softmax(shape, 3, seed=9)
    rng = np.random.default_rng(10)
    train = torch.from_numpy(rng.choice([0.0, 0.5, 1.0], size=(9, *shape)))
    state = xaicore.fit(model, train, method="pda", window=window, padding=0)
    x = torch.from_numpy(rng.choice([0.0, 0.5, 1.0], size=(2, *shape)))
    target = torch.tensor([2, 0])
    wt, bt = model[1].weight.detach().numpy(), model[1].bias.detach().numpy()
    for measure in MEASURES:
        rel = xaicore.explain(model, x, target, method="pda", reference=state, window=window, padding=0,
                              stride=stride, sampling="marginal", n_samples=9, measure=measure, forward_batch=16)
        for i in range(2):
            want = _pda_marginal_numpy(wt, bt, x[i].numpy(), train.numpy(), int(target[i]), window, stride, 9,
                                       measure)
            np.testing.assert_allclose(rel[i].numpy(), want, rtol=0, atol=1e-6)
            assert np.abs(want).max() > 1e-3


# -------------------------------------------------------------------------- degenerate conditional sampler = Occlusion


@pytest.mark.parametrize("window,padding", [(1, 0), (3, 0), (3, 2), (2, 1)])
def test_zero_gaussian_prob_diff_equals_captum_occlusion(window, padding):
    from captum.attr import Occlusion

    shape = (3, 9, 10)
    model = _small_cnn(*shape, k=5, seed=11)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(12), dtype=D64)
    target = torch.tensor([1, 4])
    state = _zero_gaussian(window, padding, shape)
    # the conditional Gaussian of a zero covariance, with the default ridge, is the point mass at 0
    side = window + 2 * padding
    inside = torch.zeros(side, side, dtype=torch.bool)
    inside[padding:padding + window, padding:padding + window] = True
    inside = inside.reshape(-1).repeat(shape[0])
    a, shift, cond = conditional_gaussian(state.mean, state.cov, inside.nonzero()[:, 0], (~inside).nonzero()[:, 0],
                                          ridge=1e-6)
    assert all(torch.isfinite(t).all() and not t.any() for t in (a, shift, cond))
    rel = xaicore.explain(model, x, target, method="pda", reference=state, window=window, padding=padding, stride=1,
                          n_samples=2, sampling="conditional", measure="prob_diff")
    ref = Occlusion(lambda z: model(z).softmax(1)).attribute(
        x, sliding_window_shapes=(shape[0], window, window), strides=(1, 1, 1), baselines=0.0, target=target,
        perturbations_per_eval=64)
    torch.testing.assert_close(rel, ref.to(D64), rtol=0, atol=1e-6)  # Captum answers in float32
    assert float(ref.abs().max()) > 1e-3


def test_zero_gaussian_draws_are_exactly_zero():
    shape = (2, 6, 6)
    x = torch.rand(3, *shape, generator=torch.Generator().manual_seed(13), dtype=D64) + 0.5
    state = _zero_gaussian(2, 2, shape)
    feats = Windows(x, 2, 1, partial=False)
    sampler = _Sampler(x, feats, state, "conditional", 3, 0, 1e-6)
    n = feats.n_features * 3
    assert torch.equal(sampler.values(0, n), torch.zeros(n, 3, 2 * 2 * 2, dtype=D64))
    built = sampler.build(0, n).view(feats.n_features, 3, 3, *shape)  # (window, draw, sample, c, h, w)
    for j, (oy, ox) in enumerate(feats.offsets().tolist()):
        want = x.clone()
        want[:, :, oy:oy + 2, ox:ox + 2] = 0
        for s in range(3):
            assert torch.equal(built[j, s], want)


# ---------------------------------------------------------------------------------- conditional sampler statistics


def _linear_neighbour_gaussian(sigma: float, m0: float, s: float) -> tuple[PatchGaussian, np.ndarray]:
    """3×3 patch (window 1, padding 1): the 8 neighbours i.i.d. N(m0, s²), the centre = 0.1 + w·neighbours +
    N(0, σ²). Returns the state and w."""
    w = np.array([0.3, -0.2, 0.1, 0.4, -0.5, 0.25, 0.05, -0.15])
    nb = [0, 1, 2, 3, 5, 6, 7, 8]
    mean = np.full(9, m0)
    mean[4] = 0.1 + m0 * w.sum()
    cov = np.zeros((9, 9))
    cov[nb, nb] = s * s
    cov[4, nb] = cov[nb, 4] = w * s * s
    cov[4, 4] = s * s * (w @ w) + sigma ** 2
    state = PatchGaussian(1, 1, torch.from_numpy(mean), torch.from_numpy(cov), -100.0, 100.0,
                          torch.zeros(1, 1, 5, 5, dtype=D64), 1000)
    return state, w


def test_sampler_deterministic_part_is_the_closed_form():
    sigma = 0.07
    state, w = _linear_neighbour_gaussian(sigma, 0.4, 0.2)
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(14), dtype=D64)
    sampler = _Sampler(x, Windows(x, 1, 1, partial=False), state, "conditional", 1, 0, 0.0)
    a, shift, root = sampler.variant[(1, 1)]  # the interior window sits at the patch centre
    np.testing.assert_allclose(a.numpy(), w[None], rtol=0, atol=1e-12)
    np.testing.assert_allclose(shift.numpy(), [0.1], rtol=0, atol=1e-12)
    np.testing.assert_allclose((root @ root.T).numpy(), [[sigma ** 2]], rtol=0, atol=1e-12)
    # every variant (border windows sit off-centre in their shifted patch) against numpy
    cov, mean = state.cov.numpy(), state.mean.numpy()
    assert set(sampler.variant) == {(i, j) for i in range(3) for j in range(3)}
    for (ry, rx), (a, shift, root) in sampler.variant.items():
        i1 = ry * 3 + rx
        i2 = [i for i in range(9) if i != i1]
        a_ref = cov[i1, i2] @ np.linalg.inv(cov[np.ix_(i2, i2)])
        np.testing.assert_allclose(a.numpy()[0], a_ref, rtol=0, atol=1e-10)
        np.testing.assert_allclose(shift.numpy(), [mean[i1] - a_ref @ mean[i2]], rtol=0, atol=1e-10)
        np.testing.assert_allclose((root @ root.T).numpy(), [[cov[i1, i1] - a_ref @ cov[i2, i1]]], rtol=0,
                                   atol=1e-10)


def test_sampler_draws_have_the_conditional_mean_and_variance():
    sigma = 0.07
    state, w = _linear_neighbour_gaussian(sigma, 0.4, 0.2)
    x = torch.rand(2, 1, 5, 5, generator=torch.Generator().manual_seed(15), dtype=D64)
    n = 1500
    feats = Windows(x, 1, 1, partial=False)
    sampler = _Sampler(x, feats, state, "conditional", n, 1, 0.0)
    vals = sampler.values(0, feats.n_features * n).view(feats.n_features, n, 2).numpy()
    cov, mean = state.cov.numpy(), state.mean.numpy()
    xs = x.numpy()[:, 0]
    for j, (oy, ox) in enumerate(feats.offsets().tolist()):
        py, px = min(max(oy - 1, 0), 2), min(max(ox - 1, 0), 2)  # patch shifted inward at the borders
        i1 = (oy - py) * 3 + (ox - px)
        i2 = [i for i in range(9) if i != i1]
        a_ref = cov[i1, i2] @ np.linalg.inv(cov[np.ix_(i2, i2)])
        var = cov[i1, i1] - a_ref @ cov[i2, i1]
        for b in range(2):
            patch = xs[b, py:py + 3, px:px + 3].reshape(-1)
            mu = mean[i1] + a_ref @ (patch[i2] - mean[i2])
            if (oy, ox) == (2, 2):  # interior: the known linear function of the neighbours
                assert mu == pytest.approx(0.1 + w @ patch[i2], abs=1e-12)
                assert var == pytest.approx(sigma ** 2, abs=1e-12)
            v = vals[j, :, b]
            assert abs(v.mean() - mu) < 5 * np.sqrt(var / n), (oy, ox, b)
            assert abs(v.var() / var - 1) < 5 * np.sqrt(2 / n), (oy, ox, b)


def test_sampler_clips_to_the_data_range():
    state, _ = _linear_neighbour_gaussian(0.5, 0.4, 0.2)
    state = PatchGaussian(1, 1, state.mean, state.cov, 0.2, 0.6, state.marginal, state.n_train)
    x = torch.rand(1, 1, 5, 5, generator=torch.Generator().manual_seed(16), dtype=D64)
    feats = Windows(x, 1, 1, partial=False)
    vals = _Sampler(x, feats, state, "conditional", 200, 0, 0.0).values(0, feats.n_features * 200)
    assert float(vals.min()) == 0.2 and float(vals.max()) == 0.6


# -------------------------------------------------------------------------------------- batching and seeding


@pytest.fixture(scope="module")
def fitted():
    """(model, state, x, target): a float64 CNN on 1×8×8 images, a state for window 2 / padding 1 with 12
    stored images (more than the draws below: marginal sampling is random), three samples."""
    g = torch.Generator().manual_seed(17)
    train = torch.rand(12, 1, 8, 8, generator=g, dtype=D64)
    model = _small_cnn(1, 8, 8, k=4, seed=18)
    state = xaicore.fit(model, train, method="pda", window=2, padding=1)
    x = torch.rand(3, 1, 8, 8, generator=g, dtype=D64)
    return model, state, x, torch.tensor([0, 3, 1])


@pytest.mark.parametrize("sampling", ["conditional", "marginal"])
def test_batched_equals_per_sample_and_seeding(fitted, sampling):
    model, state, x, target = fitted
    kw = {"method": "pda", "reference": state, "window": 2, "padding": 1, "stride": 1, "n_samples": 3,
          "sampling": sampling}
    batched = xaicore.explain(model, x, target, **kw)
    single = torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], **kw) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-6)
    assert torch.equal(batched, xaicore.explain(model, x, target, **kw))
    assert not torch.equal(batched, xaicore.explain(model, x, target, **{**kw, "seed": 1}))
    small = xaicore.explain(model, x, target, **{**kw, "forward_batch": 7})  # batched ran with 256
    torch.testing.assert_close(small, batched, rtol=0, atol=1e-6)
    assert float(batched.abs().max()) > 0


def test_draws_depend_on_sample_content_not_position(fitted):
    model, state, x, target = fitted
    xx = torch.cat([x[:1], x[1:2], x[:1]])
    tt = torch.tensor([2, 0, 2])
    rel = xaicore.explain(model, xx, tt, method="pda", reference=state, window=2, padding=1, stride=2, n_samples=2)
    # the same draws for the same sample; its passes sit at other batch positions, so up to their last bits: a
    # weight of evidence is a difference of two log-odds, each erring as the logits do (tests/tolerance.py)
    torch.testing.assert_close(rel[2], rel[0], rtol=0, atol=2 * logit_atol(model, x))
    other = xaicore.explain(model, xx, tt, method="pda", reference=state, window=2, padding=1, stride=2, n_samples=2,
                            seed=1)
    assert float((other[0] - rel[0]).abs().max()) > 1e3 * float((rel[2] - rel[0]).abs().max())  # seeds matter


def test_exact_marginal_mode_ignores_the_seed(fitted):
    model, state, x, target = fitted
    kw = {"method": "pda", "reference": state, "window": 2, "padding": 1, "stride": 2, "sampling": "marginal"}
    r0 = xaicore.explain(model, x, target, n_samples=12, **kw)
    assert torch.equal(r0, xaicore.explain(model, x, target, n_samples=12, seed=5, **kw))
    torch.testing.assert_close(r0, xaicore.explain(model, x, target, n_samples=40, forward_batch=5, **kw),
                               rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------------------------------- zoo models


@pytest.mark.parametrize("arch", ["cnn", "resnet", "vgg_bn"])
@pytest.mark.parametrize("sampling", ["conditional", "marginal"])
def test_zoo_models(arch, sampling):
    model = seeded_zoo_model(arch, seed=0)
    g = torch.Generator().manual_seed(19)
    data = torch.rand(16, 1, 28, 28, generator=g)
    x = torch.rand(2, 1, 28, 28, generator=g)
    model.train()
    state = xaicore.fit(model, data, method="pda", window=4, padding=2)
    assert model.training
    rel = xaicore.explain(model, x, torch.tensor([3, 7]), method="pda", reference=state, window=4, padding=2,
                          stride=4, n_samples=2, sampling=sampling)
    assert model.training
    assert rel.shape == x.shape and rel.dtype == x.dtype
    assert torch.isfinite(rel).all()
    assert (rel.flatten(1) != 0).any(1).all()


# -------------------------------------------------------------------------------------------------------- errors


def test_errors(fitted):
    model, state, x, target = fitted
    kw = {"method": "pda", "reference": state, "window": 2, "padding": 1}
    with pytest.raises(XaiCoreError, match="fit"):
        xaicore.explain(model, x, target, method="pda", window=2, padding=1)
    with pytest.raises(XaiCoreError, match=r"fitted for window=2, padding=1"):
        xaicore.explain(model, x, target, **{**kw, "window": 3})
    with pytest.raises(XaiCoreError, match=r"fitted for window=2, padding=1"):
        xaicore.explain(model, x, target, **{**kw, "padding": 0})
    with pytest.raises(XaiCoreError, match="leaves the"):
        xaicore.explain(model, x, target, **{**kw, "window": 4, "padding": 3})
    with pytest.raises(XaiCoreError, match="leaves the"):
        xaicore.fit(model, x, method="pda", window=4, padding=3)
    with pytest.raises(XaiCoreError, match="unknown measure 'odds'"):
        xaicore.explain(model, x, target, measure="odds", **kw)
    with pytest.raises(XaiCoreError, match="unknown sampling 'uniform'"):
        xaicore.explain(model, x, target, sampling="uniform", **kw)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(XaiCoreError, match="n_samples"):
            xaicore.explain(model, x, target, n_samples=bad, **kw)
    with pytest.raises(XaiCoreError, match="padding"):
        xaicore.explain(model, x, target, **{**kw, "padding": -1})
    with pytest.raises(XaiCoreError, match="window"):
        xaicore.explain(model, x, target, **{**kw, "window": 0})
    with pytest.raises(XaiCoreError, match="fitted on images"):
        xaicore.explain(model, x[:, :, :7, :7], target, **kw)
    with pytest.raises(XaiCoreError, match="PatchGaussian"):
        xaicore.explain(model, x, target, **{**kw, "reference": object()})
    for bad in (4, -1):
        with pytest.raises(XaiCoreError, match=r"target holds class indices outside 0\.\.3"):
            xaicore.explain(model, x, torch.tensor([0, bad, 1]), **kw)
    with pytest.raises(XaiCoreError, match="forward_batch"):
        xaicore.explain(model, x, target, forward_batch=0, **kw)
    with pytest.raises(XaiCoreError, match="n_marginal"):
        xaicore.fit(model, x, method="pda", window=2, padding=1, n_marginal=0)
    with pytest.raises(XaiCoreError, match="images"):
        xaicore.fit(model, x.flatten(1), method="pda", window=2, padding=1)
