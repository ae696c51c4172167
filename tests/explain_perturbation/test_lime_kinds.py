"""LIME, occlusion and feature removal on tabular rows and text: against ``lime``'s own surrogates and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaicore
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.perturbation.lime_samplers import tabular_neighbourhood, text_neighbourhood
from xaicore.features import UNK, ColumnStats
from xaicore.metrics import aopc, faithfulness, feature_drops


def _table(n: int = 300, seed: int = 0) -> torch.Tensor:
    """Three numeric columns and one nominal column (codes 0..2)."""
    g = np.random.default_rng(seed)
    x = np.column_stack([g.normal(size=n), g.uniform(0, 5, n), g.exponential(size=n), g.integers(0, 3, n)])
    return torch.from_numpy(x.astype(np.float32))


class _Net(nn.Module):
    def __init__(self, f: int = 4, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Linear(f, 16), nn.Tanh(), nn.Linear(16, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _Words(nn.Module):
    """Logits of token ids: class 1 scores +w per occurrence of token id 5, −w per id 6 (linear in the words)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x == 5).double().sum(1) * 2.0 - (x == 6).double().sum(1) * 1.5 + 0.1 * (x == 7).double().sum(1)
        return torch.stack([torch.zeros_like(s), s], 1).float()


@pytest.fixture(scope="module")
def table() -> tuple[torch.Tensor, ColumnStats, nn.Module]:
    x = _table()
    return x, ColumnStats.fit(x, nominal=[3]), _Net()


def test_tabular_lime_equals_lime_tabular_given_the_same_samples(table, monkeypatch) -> None:
    lt = pytest.importorskip("lime.lime_tabular")
    x, stats, model = table
    xs = x[:3]
    n = 400
    z, rows = tabular_neighbourhood(xs, stats, n, seed=3)
    ours = xaicore.explanation(model, xs, torch.ones(3, dtype=torch.long), method="lime", reference=stats,
                               n_samples=n, seed=3)
    explainer = lt.LimeTabularExplainer(x.double().numpy(), categorical_features=[3], discretize_continuous=True,
                                        discretizer="quartile", random_state=0)

    def predict(a: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(a).float()), 1).double().numpy()

    for i in range(3):
        monkeypatch.setattr(explainer, "_LimeTabularExplainer__data_inverse",
                            lambda row, num, i=i: (z[i].double().numpy(), rows[i].double().numpy()))
        exp = explainer.explain_instance(xs[i].double().numpy(), predict, labels=(1,), num_features=4,
                                         num_samples=n)
        theirs = np.zeros(4)
        for j, c in exp.as_map()[1]:
            theirs[j] = c
        np.testing.assert_allclose(ours.relevance[i].double().numpy(), theirs, rtol=1e-4, atol=1e-6)
        assert ours.extras["surrogate_r2"][i].item() == pytest.approx(exp.score, abs=1e-5)


def test_tabular_neighbourhood_follows_the_training_bins(table) -> None:
    x, stats, _ = table
    z, rows = tabular_neighbourhood(x[:2], stats, 4000, seed=0)
    assert z[:, 0].all() and torch.equal(rows[:, 0], x[:2])
    bins = stats.discretize(rows.reshape(-1, 4).numpy()).reshape(2, 4000, 4)
    inst = stats.discretize(x[:2].numpy())
    np.testing.assert_array_equal(z.numpy(), bins == inst[:, None])  # z is "same bin as the instance"
    for j in range(4):  # every bin drawn at its training frequency
        freq = np.bincount(bins[:, 1:, j].ravel(), minlength=stats.n_bins(j)) / (2 * 3999)
        np.testing.assert_allclose(freq, stats.frequencies(j), atol=0.03)


def test_text_lime_equals_lime_text_given_the_same_samples() -> None:
    lb = pytest.importorskip("lime.lime_base")
    from sklearn.metrics.pairwise import cosine_distances

    x = torch.tensor([[5, 3, 6, 7, 4, 0, 0], [6, 6, 3, 2, 9, 8, 0]])
    model, n = _Words(), 300
    ours = xaicore.explanation(model, x, torch.ones(2, dtype=torch.long), method="lime", n_samples=n, seed=1)
    z = text_neighbourhood(x, (x != 0).sum(1), n, seed=1)
    base = lb.LimeBase(lambda d: np.sqrt(np.exp(-(d ** 2) / 25 ** 2)))
    for i in range(2):
        d = int((x[i] != 0).sum())
        zi = z[i, :, :d].double().numpy()
        removed = torch.where(z[i], x[i], torch.full_like(x[i], UNK))
        with torch.no_grad():
            p = torch.softmax(model(removed), 1).double().numpy()
        dist = cosine_distances(zi, zi[:1]).ravel() * 100
        _, local, score, _ = base.explain_instance_with_data(zi, p, dist, 1, d, feature_selection="highest_weights")
        theirs = np.zeros(x.shape[1])
        for j, c in local:
            theirs[j] = c
        np.testing.assert_allclose(ours.relevance[i].double().numpy(), theirs, rtol=1e-4, atol=1e-6)
        # lime's sampler: row 0 whole, then 1..d tokens removed, padding never touched
        assert z[i, 0, :d].all() and not z[i, :, d:].any()
        assert (zi[1:].sum(1) <= d - 1).all()


def test_text_lime_ranks_the_deciding_words() -> None:
    x = torch.tensor([[5, 3, 6, 7, 4]])
    rel = xaicore.explain(_Words(), x, torch.ones(1, dtype=torch.long), method="lime", n_samples=500)
    assert rel[0, 0] > rel[0, 3] > 0 > rel[0, 2] and abs(rel[0, 1]) < 0.02 and abs(rel[0, 4]) < 0.02


def test_occlusion_per_token_is_word_erasure() -> None:
    x = torch.tensor([[5, 3, 6, 0], [7, 5, 5, 6]])
    t = torch.ones(2, dtype=torch.long)
    rel = xaicore.explain(_Words(), x, t, method="occlusion")
    # the class-1 logit is linear in the words: erasing id 5 drops 2, id 6 raises 1.5, id 7 drops 0.1, pads 0
    expected = torch.tensor([[2.0, 0.0, -1.5, 0.0], [0.1, 2.0, 2.0, -1.5]])
    torch.testing.assert_close(rel, expected, atol=1e-6, rtol=0)
    assert rel.dtype == torch.float32


def test_occlusion_per_column_fills_the_training_mean_or_mode(table) -> None:
    x, stats, _ = table
    w = torch.tensor([[0.0, 0, 0, 0], [1.0, -2.0, 0.5, 3.0]])
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(w)
    rel = xaicore.explain(model, x[:5], torch.ones(5, dtype=torch.long), method="occlusion", reference=stats)
    fill = torch.from_numpy(stats.fill()).float()
    torch.testing.assert_close(rel, w[1] * (x[:5] - fill), atol=1e-5, rtol=1e-5)
    assert stats.fill()[3] == np.bincount(x[:, 3].long().numpy()).argmax()


def test_feature_aopc_and_faithfulness_on_a_linear_model(table) -> None:
    x, stats, _ = table
    model = nn.Linear(4, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.0, 0, 0, 0], [1.0, -2.0, 0.5, 3.0]]))
    xs, t = x[:6], torch.ones(6, dtype=torch.long)
    exact = xaicore.explain(model, xs, t, method="occlusion", reference=stats)  # exact contributions
    morf = aopc(model, xs, t, exact, order="morf", reference=stats)
    lerf = aopc(model, xs, t, exact, order="lerf", reference=stats)
    assert morf.curve.shape == (6, 5) and morf.higher_is_better and not lerf.higher_is_better
    # closed form: removing in order of the exact contributions, the curve drops by them one by one
    contrib = exact.double()
    order = torch.sort(contrib, dim=1, descending=True, stable=True).indices
    steps = torch.cat([torch.zeros(6, 1, dtype=torch.float64), contrib.gather(1, order).cumsum(1)], 1)
    torch.testing.assert_close(morf.curve.double(), morf.curve[:, :1].double() - steps, atol=1e-5, rtol=0)
    assert (morf.aopc > lerf.aopc).all()
    faith = faithfulness(model, xs, t, exact, reference=stats)
    torch.testing.assert_close(faith, torch.ones(6), atol=1e-6, rtol=0)
    rnd = xaicore.explain(model, xs, t, method="random")
    assert faithfulness(model, xs, t, rnd, reference=stats).mean() < 0.9


def test_feature_removal_on_text_skips_padding() -> None:
    x = torch.tensor([[5, 3, 6, 0, 0]])
    t = torch.ones(1, dtype=torch.long)
    drops = feature_drops(_Words(), x, t)
    assert torch.isnan(drops[0, 3:]).all()
    torch.testing.assert_close(drops[0, :3], torch.tensor([2.0, 0.0, -1.5], dtype=torch.float64))
    res = aopc(_Words(), x, t, torch.tensor([[1.0, 0.0, -1.0, 9.0, 9.0]]))
    # f(x) = 2 − 1.5; MoRF removes id 5 (−2), the filler (0), id 6 (+1.5); padding is never ranked: flat after
    torch.testing.assert_close(res.curve[0], torch.tensor([0.5, -1.5, -1.5, 0.0, 0.0, 0.0]))


def test_bad_input_on_tabular_and_text(table) -> None:
    x, stats, model = table
    t = torch.ones(2, dtype=torch.long)
    with pytest.raises(XaiCoreError, match="ColumnStats.fit"):
        xaicore.explain(model, x[:2], t, method="lime")
    with pytest.raises(XaiCoreError, match="ColumnStats.fit"):
        aopc(model, x[:2], t, x[:2])
    bad = x[:2].clone()
    bad[1, 3] = 7.0  # a nominal code not seen in training
    with pytest.raises(XaiCoreError, match="column 3: value 7 in row 1 is not one of the 3 categories"):
        xaicore.explain(model, bad, t, method="lime", reference=stats)
    with pytest.raises(XaiCoreError, match="5 columns, training had 4"):
        xaicore.explain(nn.Linear(5, 2), torch.zeros(2, 5), t, method="occlusion", reference=stats)
    with pytest.raises(XaiCoreError, match="do not apply to tabular"):
        xaicore.explain(model, x[:2], t, method="lime", reference=stats, features="slic")
    with pytest.raises(NotApplicable, match="text"):
        xaicore.explain(_Words(), torch.tensor([[5, 3]]), t[:1], method="gradcam")
    with pytest.raises(NotApplicable, match="tabular"):
        xaicore.explain(model, x[:2], t, method="gradcam")
    # an out-of-vocabulary id is a token like any other: occlusion and lime run, never crash
    oov = torch.tensor([[5, 10_000, 6]])
    assert torch.isfinite(xaicore.explain(_Words(), oov, t[:1], method="occlusion")).all()
