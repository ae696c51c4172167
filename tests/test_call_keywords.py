"""The method-call assembler (xaicore.explain.registry.call_keywords), which every stage uses: what a run
supplies reaches a method only where the method takes it, and never over what params.yaml set."""

from __future__ import annotations

import torch

from xaicore.explain.registry import call_keywords


def test_a_run_supplies_only_what_the_method_takes():
    mean = torch.zeros(1, 1, 4, 4)
    assert call_keywords("gradient", {}, state="s", reference=mean, vocab=["a"], seed=3) == {}
    kw = call_keywords("occlusion", {"fill": "mean"}, reference=mean, seed=3)
    assert kw["fill"] == "mean" and kw["reference"] is mean and kw["seed"] == 3
    # training data reach every method as reference: a fitted method's state, never the raw training images
    assert call_keywords("patternnet", {}, state="fitted", reference=mean) == {"reference": "fitted"}
    assert "reference" not in call_keywords("patternnet", {"estimator": "filter"}, reference=mean)
    assert call_keywords("anchors", {}, vocab=["<pad>", "<unk>"])["vocab"] == ["<pad>", "<unk>"]


def test_params_yaml_wins_over_what_the_run_supplies():
    kw = call_keywords("lime", {"seed": 7, "reference": "mine"}, reference="training mean", seed=3)
    assert (kw["seed"], kw["reference"]) == (7, "mine")
    params = {"fill": "zero"}
    call_keywords("occlusion", params, reference="x")
    assert params == {"fill": "zero"}  # the caller's params are not modified
