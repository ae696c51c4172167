"""The bad-input catalogue: what a new user gets wrong, tried on every public verb of the library.

Each probe must end in one ``XaiCoreError`` whose single line names the problem; a probe that passes silently,
or fails with a torch/numpy traceback, is a defect. A public function (``xaicore``, ``xaicore.metrics``,
``xaicore.analysis``, ``xaicore.store``) without a probe fails :func:`test_every_public_verb_is_in_the_catalogue`,
so a new verb joins the catalogue when it lands.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from functools import cache
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
import xarray as xr

import xaicore
import xaicore.analysis as A
import xaicore.metrics as M
import xaicore.store as S
from xaicore import XaiCoreError
from xaicore.models import build_model

MODULES = (xaicore, M, A, S)
NO_INPUT = {"methods": "takes no arguments"}  # public functions that take nothing a user can get wrong


@cache
def ctx() -> SimpleNamespace:
    torch.manual_seed(0)
    model = build_model("cnn", (1, 8, 8), 10).eval()
    x = torch.rand(4, 1, 8, 8)
    nan = x.clone()
    nan[2, 0, 3, 3] = float("nan")
    inf = x.clone()
    inf[1, 0, 0, 0] = float("inf")
    sets = [torch.rand(6, 1, 8, 8) for _ in range(3)]
    return SimpleNamespace(model=model, x=x, t=torch.tensor([0, 1, 2, 3]), rel=torch.rand(4, 1, 8, 8), nan=nan,
                           inf=inf, scores=torch.rand(6, 3), sets=sets)


def c() -> SimpleNamespace:
    return ctx()


# (verb, what the user did wrong, the call, what the one line must say)
PROBES: list[tuple[str, str, Callable[[], Any], str]] = [
    ("explain", "NaN in x", lambda: xaicore.explain(c().model, c().nan, c().t), r"x holds NaN or inf in 1 of 4"),
    ("explain", "inf in x", lambda: xaicore.explain(c().model, c().inf, c().t, "occlusion"), r"NaN or inf"),
    ("explain", "numpy x", lambda: xaicore.explain(c().model, c().x.numpy(), c().t), r"floating-point tensor"),
    ("explain", "integer x", lambda: xaicore.explain(c().model, (c().x * 255).long(), c().t),
     r"floating-point tensor"),
    ("explain", "no channel axis", lambda: xaicore.explain(c().model, c().x[:, 0], c().t), r"\(B, C, H, W\)"),
    ("explain", "empty batch", lambda: xaicore.explain(c().model, c().x[:0], c().t[:0]), r"empty batch"),
    ("explain", "target of another length", lambda: xaicore.explain(c().model, c().x, c().t[:3]),
     r"target must be \(B,\)"),
    ("explain", "float target", lambda: xaicore.explain(c().model, c().x, c().t.float()), r"class indices"),
    ("explain", "target out of range", lambda: xaicore.explain(c().model, c().x, c().t + 7),
     r"outside 0\.\.9"),
    ("explain", "target out of range, perturbation method",
     lambda: xaicore.explain(c().model, c().x, c().t + 7, "occlusion"), r"outside 0\.\.9"),
    ("explain", "unknown method", lambda: xaicore.explain(c().model, c().x, c().t, "grad_cam"),
     r"unknown method 'grad_cam'"),
    ("explain", "misspelt parameter", lambda: xaicore.explain(c().model, c().x, c().t, "integrated_gradients",
                                                             nsteps=8), r"no parameter 'nsteps'"),
    ("explain", "fitted method without its state", lambda: xaicore.explain(c().model, c().x, c().t, "patternnet"),
     r"xaicore\.fit\(model, x_train, method='patternnet'"),
    ("explanation", "NaN in x", lambda: xaicore.explanation(c().model, c().nan, c().t, "lime"), r"NaN or inf"),
    ("explanation", "unknown method", lambda: xaicore.explanation(c().model, c().x, c().t, "shap"),
     r"unknown method 'shap'"),
    ("fit", "NaN in the training data", lambda: xaicore.fit(c().model, c().nan, "patternnet"), r"NaN or inf"),
    ("fit", "a method with nothing to fit", lambda: xaicore.fit(c().model, c().x, "gradient"), r"gradient"),
    ("aopc", "NaN in x", lambda: M.aopc(c().model, c().nan, c().t, c().rel), r"NaN or inf"),
    ("aopc", "NaN in the relevance", lambda: M.aopc(c().model, c().x, c().t, c().nan), r"relevance holds NaN"),
    ("aopc", "relevance of another shape", lambda: M.aopc(c().model, c().x, c().t, c().rel[:, :, :4]),
     r"relevance shape"),
    ("aopc", "region larger than the image", lambda: M.aopc(c().model, c().x, c().t, c().rel, region=9),
     r"region=9 must be a side length in 1\.\.8"),
    ("aopc", "region 0", lambda: M.aopc(c().model, c().x, c().t, c().rel, region=0), r"region=0"),
    ("aopc", "unknown order", lambda: M.aopc(c().model, c().x, c().t, c().rel, order="random"),
     r"unknown order"),
    ("aopc", "unknown perturbation", lambda: M.aopc(c().model, c().x, c().t, c().rel, perturbation="zeros"),
     r"unknown perturbation 'zeros'"),
    ("aopc", "unknown score", lambda: M.aopc(c().model, c().x, c().t, c().rel, score="softmax"),
     r"unknown score 'softmax'"),
    ("aopc", "target out of range", lambda: M.aopc(c().model, c().x, c().t + 7, c().rel), r"outside 0\.\.9"),
    ("faithfulness", "NaN in x", lambda: M.faithfulness(c().model, c().nan, c().t, c().rel), r"NaN or inf"),
    ("faithfulness", "region larger than the image",
     lambda: M.faithfulness(c().model, c().x, c().t, c().rel, region=12), r"region=12"),
    ("faithfulness", "inf in the relevance", lambda: M.faithfulness(c().model, c().x, c().t, c().inf),
     r"relevance holds NaN or inf"),
    ("feature_drops", "region larger than the image",
     lambda: M.feature_drops(c().model, c().x, c().t, region=9), r"region=9"),
    ("feature_drops", "NaN in x", lambda: M.feature_drops(c().model, c().nan, c().t), r"NaN or inf"),
    ("input_invariance", "unknown method",
     lambda: M.input_invariance(c().model, c().x, c().t, "grad_cam", 0.1), r"unknown method 'grad_cam'"),
    ("input_invariance", "NaN in x", lambda: M.input_invariance(c().model, c().nan, c().t, "gradient", 0.1),
     r"NaN or inf"),
    ("input_invariance", "shift of another shape",
     lambda: M.input_invariance(c().model, c().x, c().t, "gradient", torch.ones(1, 4, 4)), r"shift shape"),
    ("shifted_network", "shift of another shape",
     lambda: M.shifted_network(c().model, torch.ones(2, 8, 8), (1, 8, 8)), r"shift shape"),
    ("similarity", "heatmaps of different shapes", lambda: M.similarity(c().rel, c().rel[:2]),
     r"heatmap shapes differ"),
    ("similarity", "unknown measure", lambda: M.similarity(c().rel, c().rel, "pearson_r"),
     r"unknown similarity measure"),
    ("similarity", "NaN heatmap", lambda: M.similarity(c().rel, c().nan), r"NaN or inf"),
    ("metric", "an undeclared metric", lambda: M.metric("aopc_sideways"), r"unknown metric 'aopc_sideways'"),
    ("spearman_rows", "rows of different shapes",
     lambda: M.spearman_rows(np.ones((3, 5)), np.ones((3, 4))), r"shape"),
    ("pearson_rows", "rows of different shapes", lambda: M.pearson_rows(torch.ones(3, 5), torch.ones(2, 5)),
     r"shape"),
    ("conservation_error", "scores of another batch",
     lambda: M.conservation_error(c().rel, torch.ones(3)), r"score"),
    ("positive_fraction", "NaN relevance", lambda: M.positive_fraction(c().nan), r"NaN or inf"),
    ("degrade", "fraction above 1", lambda: M.degrade(c().x, c().rel, 1.5), r"fraction must be in \[0, 1\]"),
    ("degrade", "unknown mode", lambda: M.degrade(c().x, c().rel, 0.5, mode="morf"), r"unknown mode 'morf'"),
    ("make_fill", "unknown fill", lambda: M.make_fill("zeros", c().x), r"unknown ROAR fill 'zeros'"),
    ("roar_kar", "no repeats",
     lambda: M.roar_kar(c().x, c().t, c().x, c().t, c().rel, c().rel, fractions=[0.5], repeats=0),
     r"repeats >= 1"),
    ("roar_kar", "labels of another length",
     lambda: M.roar_kar(c().x, c().t[:2], c().x, c().t, c().rel, c().rel, fractions=[0.5]), r"labels|train_y"),
    ("roar_cell", "unknown mode",
     lambda: M.roar_cell(c().x, c().t, c().x, c().t, c().rel, c().rel, fraction=0.5, mode="morf", seed=0,
                         train_fn=lambda x, y, seed: c().model),
     r"unknown mode 'morf'"),
    ("replacement_values", "unknown perturbation", lambda: M.replacement_values(c().x, "zeros", seed=0),
     r"unknown perturbation 'zeros'"),
    ("gaussian_blur", "no channel axis", lambda: M.gaussian_blur(c().x[:, 0]), r"\(B, C, H, W\)"),
    ("gaussian_blur", "negative sigma", lambda: M.gaussian_blur(c().x, -1.0), r"sigma"),
    ("inter_rater_reliability", "one method", lambda: M.inter_rater_reliability(c().scores[:, :1]),
     r"at least 2"),
    ("inter_method_reliability", "names of another length",
     lambda: M.inter_method_reliability(c().scores, ("a", "b")), r"names"),
    ("internal_consistency", "one metric", lambda: M.internal_consistency({"aopc": c().scores}),
     r"at least two metrics"),
    ("maximize", "unknown layer",
     lambda: A.maximize(c().model, [0], shape=(1, 8, 8), layer="conv9", n_steps=1), r"unknown layer 'conv9'"),
    ("maximize", "unit out of range", lambda: A.maximize(c().model, [10], shape=(1, 8, 8), n_steps=1),
     r"out of range"),
    ("maximize", "shape without channels", lambda: A.maximize(c().model, [0], shape=(8, 8), n_steps=1),
     r"shape=\(8, 8\) must be \(C, H, W\)"),
    ("dataset_examples", "more examples than inputs", lambda: A.dataset_examples(c().model, c().x, [0], k=9),
     r"k=9 is larger"),
    ("dataset_examples", "NaN in x", lambda: A.dataset_examples(c().model, c().nan, [0], k=2), r"NaN or inf"),
    ("spray", "too few maps", lambda: A.spray(c().rel, n_neighbors=10), r"maps|n_neighbors"),
    ("spray", "NaN relevance", lambda: A.spray(torch.cat([c().nan] * 4), n_neighbors=3, k_max=2, size=4),
     r"NaN or inf"),
    ("tcav", "unknown layer", lambda: A.tcav(c().model, c().x, 0, c().sets[0], c().sets[1:], layer="conv9"),
     r"unknown layer 'conv9'; the model's layers are: conv1"),
    ("tcav", "one random set", lambda: A.tcav(c().model, c().x, 0, c().sets[0], c().sets[1:2], layer="fc1"),
     r"at least 2 random sets"),
    ("tcav", "a concept set too small", lambda: A.tcav(c().model, c().x, 0, c().x, c().sets[1:], layer="fc1"),
     r"concept 'concept' has 4 examples; the CAV classifier needs at least 6"),
    ("dissect", "masks of another size", lambda: A.dissect(c().rel, c().rel[:, :, :4] > 0.5),
     r"concept masks \(N, K, H, W\) = \(4, 1, 4, 8\) do not match activations"),
    ("dissect", "NaN activations", lambda: A.dissect(c().nan, c().rel > 0.5), r"NaN or inf"),
    ("unit_quantiles", "quantile out of range", lambda: A.unit_quantiles(c().rel, 1.5), r"quantile|q"),
    ("localization", "mask of another size", lambda: M.localization(c().rel, torch.ones(4, 8, 7, dtype=torch.bool)),
     r"ground-truth mask \(4, 8, 7\) does not match relevance \(4, 1, 8, 8\)"),
    ("localization", "NaN relevance", lambda: M.localization(c().nan, torch.ones(4, 8, 8, dtype=torch.bool)),
     r"relevance holds NaN or inf"),
    ("write_activations", "unknown layer",
     lambda: A.write_activations({"m": c().model}, c().x, ["conv9"], "/tmp/never-written.zarr"), r"unknown layer"),
    ("open_activations", "a heatmaps folder that does not exist", lambda: A.open_activations("/no/such.zarr"),
     r"/no/such\.zarr does not exist"),
    ("open_archive", "a folder that does not exist", lambda: S.open_archive("/no/such/heatmaps.zarr"),
     r"/no/such/heatmaps\.zarr"),
    ("verify_manifest", "a folder that is not an archive", lambda: S.verify_manifest("/tmp"),
     r"/tmp has no manifest"),
    ("write_dataset", "unknown schema",
     lambda: S.write_dataset(xr.Dataset(), "/tmp/never-written.zarr", schema="heatmapz"), r"schema"),
    ("not_applicable", "not an archive", lambda: S.not_applicable(xr.Dataset()), r"archive|not_applicable"),
    ("aopc", "tabular without statistics", lambda: M.aopc(c().model, c().x[:, 0, 0], c().t, c().x[:, 0, 0]),
     r"ColumnStats\.fit"),
    ("feature_drops", "unknown score", lambda: M.feature_drops(c().model, c().x, c().t, score="odds"),
     r"unknown score 'odds'"),
    ("faithfulness", "relevance of another shape on a table",
     lambda: M.faithfulness(c().model, c().x[:, 0, 0], c().t, c().rel), r"relevance shape"),
    ("explained_counts", "not a heatmaps archive", lambda: S.explained_counts(xr.Dataset()),
     r"heatmaps archive with model and sample dimensions"),
]


@pytest.mark.parametrize("verb, wrong, call, says", PROBES, ids=[f"{v}: {w}" for v, w, _, _ in PROBES])
def test_probe_gets_one_clear_error(verb, wrong, call, says):
    with pytest.raises(XaiCoreError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message.strip(), message
    assert re.search(says, message), message


def test_every_public_verb_is_in_the_catalogue():
    verbs = {name for mod in MODULES for name in mod.__all__ if inspect.isfunction(getattr(mod, name))}
    probed = {v for v, *_ in PROBES}
    assert verbs - probed - set(NO_INPUT) == set(), "public verbs without a bad-input probe"
    assert probed <= verbs
