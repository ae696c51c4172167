"""Reliability of metrics (Tomsett et al. 2020): Krippendorff's α of per-sample rankings, Spearman ρ between
methods and between metrics, against the krippendorff package and scipy."""

from __future__ import annotations

import krippendorff
import numpy as np
import pytest
import scipy.stats
import torch

from xaicore import XaiCoreError
from xaicore.metrics import DIRECTIONS, inter_method_reliability, inter_rater_reliability, internal_consistency
from xaicore.metrics.reliability import method_ranks


def test_inter_rater_equals_the_package_on_hand_made_rankings():
    scores = np.array([[0.1, 0.5, 0.9, 0.3], [2.0, 3.0, 8.0, 1.0], [0.9, 0.1, 0.5, 0.2],
                       [0.4, 0.4, 0.7, 0.0]])  # the last sample ties two methods
    ranks = np.array([[1, 3, 4, 2], [2, 3, 4, 1], [4, 1, 3, 2], [2.5, 2.5, 4, 1]], dtype=float)
    np.testing.assert_array_equal(method_ranks(scores), ranks)
    expected = krippendorff.alpha(reliability_data=ranks, level_of_measurement="ordinal")
    assert inter_rater_reliability(scores) == pytest.approx(expected, abs=1e-12)
    assert inter_rater_reliability(torch.from_numpy(scores)) == pytest.approx(expected, abs=1e-12)
    # a missing score is a missing rating
    scores[0, 1] = np.nan
    ranks_nan = np.array([[1, np.nan, 3, 2], *ranks[1:]])
    assert inter_rater_reliability(scores) == pytest.approx(
        krippendorff.alpha(reliability_data=ranks_nan, level_of_measurement="ordinal"), abs=1e-12)


def test_inter_rater_limits():
    g = np.random.default_rng(0)
    base = g.normal(size=5)
    same = base[None] * g.uniform(0.5, 2.0, size=(40, 1)) + g.normal(size=(40, 1))  # same order, other scales
    assert inter_rater_reliability(same) == pytest.approx(1.0, abs=1e-12)
    assert abs(inter_rater_reliability(g.normal(size=(2000, 5)))) < 0.05
    # every sample ties every method (a metric that cannot tell them apart): alpha is undefined, not a crash
    assert np.isnan(inter_rater_reliability(np.ones((8, 5))))


def test_inter_method_equals_scipy():
    g = np.random.default_rng(1)
    a = g.normal(size=(50, 4))
    a[:, 1] += a[:, 0]
    res = inter_method_reliability(a, names=("grad", "gxi", "ig", "random"))
    np.testing.assert_allclose(res.matrix, scipy.stats.spearmanr(a).statistic, atol=1e-12)
    assert res.mean == pytest.approx(np.mean(scipy.stats.spearmanr(a).statistic[np.triu_indices(4, 1)]), abs=1e-12)
    assert res.names == ("grad", "gxi", "ig", "random")
    with pytest.raises(XaiCoreError, match=r"\(n_samples, n_methods\)"):
        inter_method_reliability(a[:, :1])


def test_internal_consistency_equals_scipy():
    g = np.random.default_rng(2)
    morf = g.normal(size=(30, 3))
    lerf = -morf + 0.5 * g.normal(size=(30, 3))  # lower is better: agrees with MoRF once oriented
    faith = g.normal(size=(30, 3))
    scores = {"aopc_morf": morf, "aopc_lerf": lerf, "faithfulness": faith}
    res = internal_consistency(scores)
    flat = np.stack([s.ravel() for s in scores.values()], 1)
    np.testing.assert_allclose(res.matrix, scipy.stats.spearmanr(flat).statistic, atol=1e-12)
    for j in range(3):
        cols = np.stack([s[:, j] for s in scores.values()], 1)
        np.testing.assert_allclose(res.per_method[j], scipy.stats.spearmanr(cols).statistic, atol=1e-12)
    oriented = internal_consistency(scores, directions=DIRECTIONS)
    assert res.matrix[0, 1] < -0.5 and oriented.matrix[0, 1] == pytest.approx(-res.matrix[0, 1], abs=1e-12)
    with pytest.raises(XaiCoreError, match="different heatmaps"):
        internal_consistency({"a": morf, "b": faith[:10]})


def test_directions_cover_every_score():
    for key in ("aopc_morf", "aopc_lerf", "faithfulness", "ssim", "hog", "spearman", "invariance",
                "roar_accuracy", "kar_accuracy", "inter_rater_reliability"):
        assert DIRECTIONS[key] in (-1, 1)
    assert {k: DIRECTIONS[k] for k in ("aopc_morf", "aopc_lerf", "conservation_error")} == \
        {"aopc_morf": 1, "aopc_lerf": -1, "conservation_error": -1}
