"""The metric declarations (xaicore.metrics.declarations) are what every direction is read from."""

from __future__ import annotations

import json

import pytest
import torch

from xaicore import XaiCoreError
from xaicore.metrics import DIRECTIONS, METRICS, RoarResult, metric
from xaicore.metrics.declarations import directions_json
from xaicore.report.aggregate import DIRECTIONS as REPORT_DIRECTIONS


def test_the_survey_directions():
    higher = {"aopc_morf", "faithfulness", "positive_fraction", "localization", "kar_accuracy",
              "inter_rater_reliability", "inter_method_reliability", "internal_consistency"}
    lower = {"aopc_lerf", "conservation_error", "sanity_similarity", "spearman", "ssim", "hog", "invariance",
             "roar_accuracy"}
    assert {n for n in higher | lower if DIRECTIONS[n] == 1} == higher
    assert all(METRICS[n].verdict == "lower is better" for n in lower)


def test_results_and_reports_read_the_declarations():
    assert RoarResult("roar", (0.5,), torch.zeros(1, 1)).higher_is_better is False
    assert RoarResult("kar", (0.5,), torch.zeros(1, 1)).higher_is_better is True
    assert json.loads(directions_json("tcav_pvalue", "own_class")) == {"tcav_pvalue": "lower is significant",
                                                                       "own_class": "higher is better"}
    assert REPORT_DIRECTIONS["similarity_*"] == METRICS["sanity_similarity"].note
    assert REPORT_DIRECTIONS["aopc_lerf*"].startswith("lower is better")


def test_an_unknown_metric_is_one_error():
    with pytest.raises(XaiCoreError, match="unknown metric 'aopc_sideways'; declared: aopc_morf"):
        metric("aopc_sideways")
