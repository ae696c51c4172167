"""Prediction difference analysis of table rows (Robnik-Šikonja & Kononenko 2008; survey §6.4, eqs. 17-22)
against closed forms in numpy float64.

* the Titanic set's generating model (``titanic_logistic``): eq. 22 with the empirical priors, per attribute and
  test sample, all three measures with the Laplace correction; ``embarked`` (no effect) gets exactly 0;
* eq. 21: the conditional frequencies by brute force on Titanic, exactly by hand on a small dependent table
  (including the fall-back to the prior), equal to eq. 22 on an exactly independent (factorial) table;
* numeric columns (breast cancer, a logistic model): eq. 22 over the quartile bins' representatives, which the
  test recomputes from the training quartiles;
* packing (two forward passes for a whole batch), batched == per-sample, the errors, and the image path.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaicore
from tests.explain_perturbation.test_pda import _measure
from xaicore.data.tabular import TITANIC_ATTRIBUTES, TITANIC_LOGODDS, titanic, titanic_logodds
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.perturbation.pda import fit_patch_gaussian, pda
from xaicore.explain.perturbation.pda_tabular import attribute_values, value_weights
from xaicore.explain.registry import has_embedding
from xaicore.features import ColumnStats
from xaicore.models.embedding import titanic_logistic

D64 = torch.float64


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


@pytest.fixture(scope="module")
def tit():
    ds = titanic()
    stats = ColumnStats.fit(ds.x_train, nominal=ds.nominal, categories=ds.categories, names=ds.feature_names)
    return ds, stats, titanic_logistic()


def _titanic_closed_form(codes: np.ndarray, target: np.ndarray, stats: ColumnStats) -> tuple[np.ndarray, np.ndarray]:
    """p(y|x) (B,) and eq. 22's p(y|x∖A_i) (B, F) from TITANIC_LOGODDS and the empirical training priors."""
    codes = codes.astype(np.int64)
    sign = np.where(target == 1, 1.0, -1.0)  # p(died) = sigmoid(-logodds)
    p = _sigmoid(sign * titanic_logodds(codes))
    q = np.zeros(codes.shape, dtype=np.float64)
    for i, name in enumerate(TITANIC_ATTRIBUTES):
        counts = np.bincount(stats.train[:, i].astype(np.int64), minlength=len(TITANIC_ATTRIBUTES[name]))
        prior = counts / counts.sum()  # the empirical frequencies, not TITANIC_PRIORS
        for s, w in enumerate(prior):
            moved = codes.copy()
            moved[:, i] = s
            q[:, i] += w * _sigmoid(sign * titanic_logodds(moved))
    return p, q


def test_titanic_marginal_prob_diff_is_eq22_closed_form(tit):
    ds, stats, model = tit
    assert has_embedding(model)  # the shell routes the perturbation method with the raw rows nonetheless
    x, target = ds.x_test, ds.y_test
    out = xaicore.explanation(model, x, target, method="pda", reference=stats, measure="prob_diff",
                              sampling="marginal")
    assert out.relevance.shape == x.shape and out.relevance.dtype == x.dtype
    p, q = _titanic_closed_form(x.numpy(), target.numpy(), stats)
    np.testing.assert_allclose(out.relevance.double().numpy(), p[:, None] - q, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.extras["p_class"].double().numpy(), p, rtol=0, atol=1e-6)
    embarked = list(TITANIC_ATTRIBUTES).index("embarked")
    assert np.all(np.asarray(TITANIC_LOGODDS["embarked"]) == 0)
    assert out.relevance[:, embarked].abs().max() <= 1e-7
    assert (out.relevance[:, :embarked].abs() > 1e-4).all()  # the others matter for every passenger


@pytest.mark.parametrize("measure", ["info_diff", "weight_of_evidence"])
def test_titanic_log_measures_with_laplace_correction(tit, measure):
    ds, stats, model = tit
    x, target = ds.x_test[:60], ds.y_test[:60]
    rel = pda(model, x.double(), target, reference=stats, measure=measure, sampling="marginal").relevance
    p, q = _titanic_closed_form(x.numpy(), target.numpy(), stats)
    n = stats.train.shape[0]
    assert n == ds.x_train.shape[0] == 1760
    np.testing.assert_allclose(rel.numpy(), _measure(p[:, None], q, measure, n, 2), rtol=0, atol=1e-10)
    # a hand-worked number: the first sample's first attribute
    p0, q0 = p[0], q[0, 0]
    p_, q_ = (p0 * n + 1) / (n + 2), (q0 * n + 1) / (n + 2)
    want = np.log2(p_) - np.log2(q_) if measure == "info_diff" else np.log2(p_ / (1 - p_) * (1 - q_) / q_)
    assert abs(float(rel[0, 0]) - want) < 1e-10


def test_conditional_weights_match_brute_force(tit):
    ds, stats, _ = tit
    x_bins = stats.discretize(ds.x_test[:40])
    got = value_weights(stats, x_bins, "conditional")
    col, _ = attribute_values(stats)
    for b in range(x_bins.shape[0]):
        for j in range(stats.n_features):
            others = np.delete(np.arange(stats.n_features), j)
            match = (stats.bins[:, others] == x_bins[b, others]).all(1)
            counts = np.bincount(stats.bins[match, j], minlength=stats.n_bins(j)).astype(float)
            want = counts / counts.sum() if counts.sum() else stats.frequencies(j)
            np.testing.assert_allclose(got[b, col == j], want, rtol=0, atol=1e-15)


def test_titanic_conditional_close_to_marginal_for_independent_attributes():
    """The attributes are drawn independently: eq. 21's conditional frequencies estimate the priors, so both
    removals agree up to the sampling noise of the frequencies (smaller with more rows)."""
    ds = titanic(20000)
    stats = ColumnStats.fit(ds.x_train, nominal=ds.nominal)
    model = titanic_logistic()
    x, target = ds.x_test[:500], ds.y_test[:500]
    marg, cond = (xaicore.explain(model, x, target, method="pda", reference=stats, measure="prob_diff",
                                  sampling=s) for s in ("marginal", "conditional"))
    diff = (marg - cond).abs().double()
    assert float(diff.mean()) < 0.005 < float(marg.abs().double().mean())
    assert float(diff.max()) < 0.06


class CodeLogistic(nn.Module):
    """Two classes, logits [0, b + w·x] on the raw (B, F) values."""

    def __init__(self, w: list[float], b: float) -> None:
        super().__init__()
        self.w, self.b = torch.tensor(w, dtype=D64), b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.to(D64) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


_DEPENDENT = np.array([[0, 0, 0]] * 3 + [[0, 1, 0]] + [[1, 1, 1]] * 4 + [[1, 1, 2]] * 2, dtype=np.float64)


def test_conditional_differs_from_marginal_on_a_dependent_table():
    """Eq. 21 by hand on 10 training rows (A, B, C): (0,0,0)×3, (0,1,0), (1,1,1)×4, (1,1,2)×2."""
    stats = ColumnStats.fit(_DEPENDENT, nominal=(0, 1, 2))
    x = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 2.0]], dtype=D64)
    w = value_weights(stats, stats.discretize(x), "conditional")  # columns: A0 A1 | B0 B1 | C0 C1 C2
    want = np.array([
        [1, 0, 3 / 4, 1 / 4, 1, 0, 0],  # A | B=0,C=0: (0,0,0)×3; B | A=0,C=0: 3 of 4; C | A=0,B=0: (0,0,0)×3
        [4 / 10, 6 / 10, 0, 1, 4 / 10, 4 / 10, 2 / 10],  # A | B=0,C=2 and C | A=1,B=0: no row → the priors
    ])
    np.testing.assert_array_equal(w, want)
    model = CodeLogistic([2.0, -1.0, 0.7], 0.3)
    target = torch.tensor([1, 0])
    rel = {s: pda(model, x, target, reference=stats, measure="prob_diff", sampling=s).relevance.numpy()
           for s in ("marginal", "conditional")}

    def prob(rows: list[list[float]], t: int) -> np.ndarray:
        z = np.asarray(rows) @ np.array([2.0, -1.0, 0.7]) + 0.3
        return _sigmoid(z if t == 1 else -z)

    # sample 0 = (0,0,0), class 1
    p = prob([[0, 0, 0]], 1)[0]
    cond0 = [p - p, p - (3 / 4 * p + 1 / 4 * prob([[0, 1, 0]], 1)[0]), p - p]
    marg_b = p - (3 / 10 * p + 7 / 10 * prob([[0, 1, 0]], 1)[0])  # prior B: 3 zeros of 10
    # sample 1 = (1,0,2), class 0
    p1 = prob([[1, 0, 2]], 0)[0]
    q_a = 4 / 10 * prob([[0, 0, 2]], 0)[0] + 6 / 10 * p1
    q_b = prob([[1, 1, 2]], 0)[0]
    q_c = (prob([[1, 0, 0], [1, 0, 1], [1, 0, 2]], 0) * [0.4, 0.4, 0.2]).sum()
    np.testing.assert_allclose(rel["conditional"], [cond0, [p1 - q_a, p1 - q_b, p1 - q_c]], rtol=0, atol=1e-14)
    assert abs(rel["marginal"][0, 1] - marg_b) < 1e-14 and abs(rel["conditional"][0, 1] - marg_b) > 0.05
    assert rel["conditional"][0, 0] == 0.0 != rel["marginal"][0, 0]


def test_conditional_equals_marginal_on_an_exactly_independent_table():
    """A factorial table, n(a, b, c) = n_A(a)·n_B(b)·n_C(c): every conditional frequency is the prior."""
    n_a, n_b, n_c = [1, 3], [2, 1, 4], [3, 2]
    rows = [[a, b, c] for a in range(2) for b in range(3) for c in range(2) for _ in range(n_a[a] * n_b[b] * n_c[c])]
    stats = ColumnStats.fit(np.array(rows, dtype=np.float64), nominal=(0, 1, 2))
    x = torch.tensor([[a, b, c] for a in range(2) for b in range(3) for c in range(2)], dtype=D64)
    bins = stats.discretize(x)
    np.testing.assert_allclose(value_weights(stats, bins, "conditional"), value_weights(stats, bins, "marginal"),
                               rtol=0, atol=1e-15)
    model = CodeLogistic([1.0, -0.5, 0.8], -0.2)
    target = torch.ones(x.shape[0], dtype=torch.long)
    for measure in ("prob_diff", "info_diff", "weight_of_evidence"):
        marg, cond = (pda(model, x, target, reference=stats, measure=measure, sampling=s).relevance
                      for s in ("marginal", "conditional"))
        torch.testing.assert_close(cond, marg, rtol=0, atol=1e-13)


def _quartile_representatives(col: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, bins, (bin means, bin frequencies)) of a numeric training column, recomputed here."""
    edges = np.unique(np.percentile(col, [25, 50, 75]))
    bins = np.searchsorted(edges, col, side="left")  # q_{b-1} < v <= q_b
    reps = np.array([col[bins == k].mean() for k in range(edges.size + 1)])
    freq = np.bincount(bins, minlength=edges.size + 1) / col.size
    return edges, reps, freq


@pytest.fixture(scope="module")
def cancer():
    from xaicore.data.tabular import load_breast_cancer_data

    ds = load_breast_cancer_data()
    train = ds.x_train.double()
    g = torch.Generator().manual_seed(3)
    w = torch.randn(2, train.shape[1], generator=g, dtype=D64) * 0.4 / train.std(0)
    model = nn.Linear(train.shape[1], 2, dtype=D64)
    with torch.no_grad():
        model.weight.copy_(w)
        model.bias.copy_(-(w @ train.mean(0)))
    return ds, ColumnStats.fit(train), model.eval()


@pytest.mark.parametrize("measure", ["prob_diff", "weight_of_evidence"])
def test_numeric_columns_use_the_quartile_bin_representatives(cancer, measure):
    ds, stats, model = cancer
    x, target = ds.x_test[:25].double(), ds.y_test[:25]
    rel = xaicore.explain(model, x, target, method="pda", reference=stats, measure=measure, sampling="marginal")
    train, xn, t = stats.train, x.numpy(), target.numpy()
    wt, bias = model.weight.detach().numpy(), model.bias.detach().numpy()

    def prob(rows: np.ndarray) -> np.ndarray:
        z = rows @ wt.T + bias
        z = z - z.max(1, keepdims=True)
        e = np.exp(z)
        return (e / e.sum(1, keepdims=True))[np.arange(rows.shape[0]), t]

    p = prob(xn)
    q = np.zeros(xn.shape)
    for j in range(xn.shape[1]):
        edges, reps, freq = _quartile_representatives(train[:, j])
        assert edges.size == 3 and np.allclose(reps, stats.representatives(j), rtol=1e-12)
        for rep, f in zip(reps, freq, strict=True):
            moved = xn.copy()
            moved[:, j] = rep
            q[:, j] += f * prob(moved)
    want = _measure(p[:, None], q, measure, train.shape[0], 2)
    np.testing.assert_allclose(rel.numpy(), want, rtol=0, atol=1e-9)
    assert np.abs(want).max() > 0.01  # not a trivial case


# ------------------------------------------------------------------------------------------ packing and batching


class Counting(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("sampling", ["marginal", "conditional"])
def test_packed_and_batched_equals_per_sample(tit, sampling):
    ds, stats, model = tit
    x, target = ds.x_test[:50], ds.y_test[:50]
    counting = Counting(model)
    counting.train()
    out = xaicore.explanation(counting, x, target, method="pda", reference=stats, sampling=sampling,
                              forward_batch=50 * 11)
    assert counting.calls == 2  # p(y|x), then all 50 × 11 (attribute, value) rows in one pass
    assert counting.training and model.training  # restored as they were
    model.eval()
    small = xaicore.explain(model, x, target, method="pda", reference=stats, sampling=sampling, forward_batch=7)
    single = torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], method="pda", reference=stats,
                                        sampling=sampling) for i in range(12)])
    torch.testing.assert_close(small, out.relevance, rtol=0, atol=1e-7)
    torch.testing.assert_close(single, out.relevance[:12], rtol=0, atol=1e-7)


# -------------------------------------------------------------------------------------------------------- errors


def test_errors(tit):
    ds, stats, model = tit
    x, target = ds.x_test[:4], ds.y_test[:4]
    for ref in (None, ds.x_train):
        with pytest.raises(XaiCoreError, match=r"reference=xaicore\.features\.ColumnStats\.fit\(x_train, nominal"):
            xaicore.explain(model, x, target, method="pda", reference=ref)
    with pytest.raises(XaiCoreError, match="tabular rows have 3 columns, training had 4"):
        xaicore.explain(CodeLogistic([1.0, 1.0, 1.0], 0.0), x[:, :3], target, method="pda", reference=stats)
    bad = x.clone()
    bad[1, 0] = 4.0  # class has the codes 0..3
    with pytest.raises(XaiCoreError, match="column 0: value 4 in row 1 is not one of the 4 categories seen in "
                                           "training"):
        xaicore.explain(model, bad, target, method="pda", reference=stats)
    with pytest.raises(XaiCoreError, match="unknown measure 'odds'"):
        xaicore.explain(model, x, target, method="pda", reference=stats, measure="odds")
    with pytest.raises(XaiCoreError, match="unknown sampling 'uniform'"):
        xaicore.explain(model, x, target, method="pda", reference=stats, sampling="uniform")
    with pytest.raises(XaiCoreError, match="forward_batch"):
        xaicore.explain(model, x, target, method="pda", reference=stats, forward_batch=0)
    with pytest.raises(XaiCoreError, match=r"target holds class indices outside 0\.\.1"):
        xaicore.explain(model, x, torch.tensor([0, 1, 2, 0]), method="pda", reference=stats)
    state = fit_patch_gaussian(model, torch.rand(4, 1, 6, 6), window=2, padding=1)
    with pytest.raises(XaiCoreError, match="needs the training columns' statistics: .* got PatchGaussian"):
        xaicore.explain(model, x, target, method="pda", reference=state)
    with pytest.raises(NotApplicable, match="text"):
        xaicore.explain(model, torch.ones(2, 5, dtype=torch.long), torch.tensor([0, 1]), method="pda")


def test_image_path_takes_the_fitted_state_as_reference_and_returns_p_class():
    g = torch.Generator().manual_seed(5)
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3)).to(D64).eval()
    data, x = torch.rand(8, 1, 6, 6, generator=g, dtype=D64), torch.rand(2, 1, 6, 6, generator=g, dtype=D64)
    target = torch.tensor([0, 2])
    state = xaicore.fit(model, data, method="pda", window=2, padding=1)
    kw = {"method": "pda", "reference": state, "window": 2, "padding": 1, "n_samples": 3}
    plain = xaicore.explanation(model, x, target, **kw)
    with pytest.raises(XaiCoreError, match="pda on images needs its fitted patch statistics"):
        xaicore.explanation(model, x, target, **{**kw, "reference": ColumnStats.fit(data.flatten(1))})
    want = model(x).softmax(1)[torch.arange(2), target]
    torch.testing.assert_close(plain.extras["p_class"], want.detach(), rtol=0, atol=1e-12)
