"""explainVis (Robnik-Šikonja & Kononenko 2008; survey §6.4, Fig. 9): the model explanation by hand, the bars and
title read back from the axes, the PNG, and the whole path on the Titanic set (pda → model explanation → figure).
"""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

import xaicore  # noqa: E402
from xaicore.errors import XaiCoreError  # noqa: E402
from xaicore.report.canvas import save as _save  # noqa: E402
from xaicore.report.explainvis import explainvis, model_explanation, plot_explainvis  # noqa: E402

REL = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
BINS = np.array([[0, 1], [0, 0], [1, 0]])


def test_model_explanation_is_the_mean_per_value():
    me = model_explanation(REL, BINS, [3, 2])
    np.testing.assert_array_equal(me[0], [2.0, 5.0, np.nan])  # value 2 of column 0: no instance → NaN
    np.testing.assert_array_equal(me[1], [5.0, 2.0])


def test_model_explanation_errors():
    with pytest.raises(XaiCoreError, match=r"must both be \(N, F\)"):
        model_explanation(REL, BINS[:2], [3, 2])
    with pytest.raises(XaiCoreError, match="2 n_bins for 3 columns"):
        model_explanation(np.ones((2, 3)), np.zeros((2, 3), dtype=int), [3, 2])
    with pytest.raises(XaiCoreError, match="bins must be integers"):
        model_explanation(REL, BINS, [1, 2])
    with pytest.raises(XaiCoreError, match="bins must be integers"):
        model_explanation(REL, BINS.astype(float), [3, 2])


def _draw() -> tuple[plt.Figure, plt.Axes]:
    me = model_explanation(REL, BINS, [3, 2])
    fig, ax = plt.subplots()
    out = explainvis(ax, np.array([-0.4, 0.25]), np.array([1, 0]), me, names=["sex", "age"],
                     value_names=[["male", "female", "?"], ["adult", "child"]], p_class=0.8712,
                     class_name="survived", measure="info_diff")
    assert out is ax
    return fig, ax


def test_explainvis_bars_labels_and_title():
    fig, ax = _draw()
    inst, model = ax.containers  # dark: this instance, light: the model explanation of its value
    assert [p.get_width() for p in inst] == [-0.4, 0.25]
    assert [p.get_width() for p in model] == [5.0, 5.0]  # sex = female (bin 1): 5; age = adult (bin 0): 5
    assert inst[0].get_facecolor() != model[0].get_facecolor()
    assert list(ax.get_yticks()) == [0, 1]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["sex = female", "age = adult"]
    np.testing.assert_allclose([p.get_y() + p.get_height() / 2 for p in inst], [-0.19, 0.81])  # beside the tick
    np.testing.assert_allclose([p.get_y() + p.get_height() / 2 for p in model], [0.19, 1.19])
    assert ax.get_ylim()[0] > ax.get_ylim()[1]  # the first attribute on top
    assert ax.get_title() == "p(survived|x) = 0.87"
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.lines)  # the zero line
    assert "information difference" in ax.get_xlabel()
    assert len(ax.get_legend().get_texts()) == 2
    plt.close(fig)


def test_explainvis_uses_predicates_as_they_are():
    fig, ax = plt.subplots()
    explainvis(ax, np.array([0.1]), np.array([1]), [np.array([0.0, 0.2])], names=["mean radius"],
               value_names=[["mean radius <= 13.00", "13.00 < mean radius <= 15.00"]], p_class=0.5, class_name="b")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["13.00 < mean radius <= 15.00"]
    explainvis(ax, np.array([0.1]), np.array([1]), [np.array([0.0, 0.2])], names=["x0"], p_class=0.5,
               class_name="b")
    assert [t.get_text() for t in ax.get_yticklabels()] == ["x0 = 1"]
    with pytest.raises(XaiCoreError, match="one entry per attribute"):
        explainvis(ax, np.array([0.1, 0.2]), np.array([1]), [np.array([0.0, 0.2])], names=["x0"], p_class=0.5,
                   class_name="b")
    with pytest.raises(XaiCoreError, match="outside its column"):
        explainvis(ax, np.array([0.1]), np.array([2]), [np.array([0.0, 0.2])], names=["x0"], p_class=0.5,
                   class_name="b")
    plt.close(fig)


def test_plot_explainvis_writes_a_png(tmp_path):
    from xaicore.data.tabular import titanic
    from xaicore.features import ColumnStats
    from xaicore.models.embedding import titanic_logistic

    ds = titanic()
    stats = ColumnStats.fit(ds.x_train, nominal=ds.nominal, categories=ds.categories, names=ds.feature_names)
    model = titanic_logistic()
    target = torch.ones(ds.x_test.shape[0], dtype=torch.long)  # p(survived)
    out = xaicore.explanation(model, ds.x_test, target, method="pda", reference=stats, measure="info_diff",
                              sampling="marginal")
    bins = stats.discretize(ds.x_test)
    me = model_explanation(out.relevance.numpy(), bins, [stats.n_bins(j) for j in range(stats.n_features)])
    figs = []

    def save(fig, path):
        figs.append(fig)
        ax = fig.axes
        assert len(ax) == 3
        assert [a.get_title().splitlines() for a in ax] == [
            [f"sample {i}", f"p(survived|x) = {float(out.extras['p_class'][i]):.2f}"] for i in range(3)]
        labels = [t.get_text() for t in ax[0].get_yticklabels()]
        assert labels == [stats.bin_names()[j][bins[0, j]] for j in range(4)]
        np.testing.assert_allclose([p.get_width() for p in ax[1].containers[0]], out.relevance[1].numpy())
        np.testing.assert_allclose([p.get_width() for p in ax[1].containers[1]],
                                   [me[j][bins[1, j]] for j in range(4)])
        return _save(fig, path)

    path = plot_explainvis(tmp_path / "explainvis.png", out.relevance[:3].numpy(), bins[:3], me,
                           names=ds.feature_names, value_names=stats.bin_names(), p_class=out.extras["p_class"][:3],
                           class_name="survived", measure="info_diff", titles=[f"sample {i}" for i in range(3)],
                           save=save)
    assert figs and path == tmp_path / "explainvis.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    # embarked has no effect: its model explanation is 0 for every value seen
    assert np.nanmax(np.abs(me[3])) < 1e-6
    # the default writer gives the same bytes (reproducible figures, no timestamps)
    again = plot_explainvis(tmp_path / "again.png", out.relevance[:3].numpy(), bins[:3], me, names=ds.feature_names,
                            value_names=stats.bin_names(), p_class=out.extras["p_class"][:3].numpy(),
                            class_name="survived", measure="info_diff", titles=[f"sample {i}" for i in range(3)])
    assert again.read_bytes() == data
    one = plot_explainvis(tmp_path / "one.png", out.relevance[0].numpy(), bins[0], me, names=ds.feature_names,
                          p_class=0.5, class_name="survived")
    assert one.stat().st_size > 5_000
    with pytest.raises(XaiCoreError, match="same 3 instances"):
        plot_explainvis(tmp_path / "bad.png", out.relevance[:3].numpy(), bins[:2], me, names=ds.feature_names,
                        p_class=[0.1, 0.2, 0.3], class_name="survived")
