"""The ``tabular`` and ``text`` stages in the tiny survey: the features archive has the variables and dims of the
branch's docstring, the anchors and scores hold what the ground truth says, and a rerun is byte for byte the same."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.flows.test_pipeline import tree_digest
from xaicore.config import config_from_dict
from xaicore.data.text import NEGATOR
from xaicore.errors import XaiCoreError
from xaicore.pipeline import Paths, open_features, run_branch_explain, run_branch_train

pytestmark = pytest.mark.slow


def test_tabular_archive(tiny_survey, tiny_cfg):
    ds = open_features(tiny_survey.root / "tabular" / "features.zarr")
    n = tiny_cfg.tabular.n_explain
    assert ds["relevance"].dims == ("model", "explainer", "sample", "feature")
    assert list(ds["feature"].values) == ["class", "age", "sex", "embarked"]
    assert list(ds["explainer"].values) == list(tiny_cfg.tabular.methods) and ds.sizes["sample"] == n
    assert np.isfinite(ds["relevance"]).all() and json.loads(ds.attrs["not_applicable"]) == {}
    # readable values: "sex = female" where the code is 1
    assert ((ds["value"].sel(feature="sex") == "sex = female") == (ds["x"].sel(feature="sex") == 1)).all()
    # anchors are (model, sample) variables: a rule, its precision (≥ τ when found) and coverage
    found = ds["anchor_found"].sel(model="trained").values.astype(bool)
    assert found.mean() > 0.8
    assert (ds["anchor_precision"].sel(model="trained").values[found] >= 0.95 - 0.15).all()
    rules = ds["anchor_rule"].sel(model="trained").values
    assert all(r == "" or all(p.split(" = ")[0] in ds["feature"].values for p in r.split(" AND ")) for r in rules)
    # scores: occlusion, the exact one-at-a-time drop, is fully faithful; random is not
    faith = ds["faithfulness"].sel(model="trained").mean("sample")
    assert float(faith.sel(explainer="occlusion")) == pytest.approx(1.0, abs=1e-5)
    assert float(faith.sel(explainer="occlusion")) > float(faith.sel(explainer="random"))
    aopc = ds["aopc"].sel(model="trained")
    assert float(aopc.sel(explainer="occlusion", order="morf")) > float(aopc.sel(explainer="occlusion", order="lerf"))
    assert ds["aopc_curve"].sizes["step"] == 5
    assert np.isfinite(ds["p_class"].sel(model="trained", explainer="pda")).all()
    # the explained rows' probability of the prediction, the pda extra's p(target|x), agree
    np.testing.assert_allclose(ds["p_class"].sel(model="trained", explainer="pda"),
                               ds["score"].sel(model="trained"), atol=1e-6)


def test_text_archive(tiny_survey, tiny_cfg):
    ds = open_features(tiny_survey.root / "text" / "features.zarr")
    assert ds["relevance"].dims == ("model", "explainer", "sample", "token")
    words = ds["word"].values
    rel = ds["relevance"].sel(model="trained").values
    assert (rel[:, words == ""] == 0).all()  # padding is no token
    rules = ds["anchor_rule"].sel(model="trained").values
    for i, rule in enumerate(rules):  # every anchor word is a word of its sentence
        assert set(filter(None, rule.split(" AND "))) <= set(words[i])
    with_negation = [i for i in range(len(words)) if NEGATOR in words[i]]
    assert with_negation, "the tiny sample has negated sentences"


@pytest.mark.hostdep
def test_branch_rerun_is_bitwise_identical(tiny_survey, tiny_cfg, tmp_path):
    paths = Paths(tmp_path)
    for kind in ("tabular", "text"):
        run_branch_train(tiny_cfg, paths, kind, progress=False)
        run_branch_explain(tiny_cfg, paths, kind, progress=False)
        assert tree_digest(tmp_path / kind) == tree_digest(tiny_survey.root / kind), kind


def test_bad_branch_config_and_foreign_archives(tiny_survey, tmp_path):
    from tests.flows.conftest import tiny_params

    raw = tiny_params()
    raw["tabular"] = {**raw["tabular"], "dataset": "csv", "root": ""}
    with pytest.raises(XaiCoreError, match=r"tabular\.root.*csv reads the file"):
        config_from_dict(raw)
    raw = tiny_params()
    raw["text"] = {**raw["text"], "arch": "mlp"}
    with pytest.raises(XaiCoreError, match=r"text\.arch"):
        config_from_dict(raw)
    raw = tiny_params()
    raw["text"] = {**raw["text"], "dataset": "textfile", "root": str(tmp_path / "corpus.txt")}
    (tmp_path / "corpus.txt").write_text("positive\tgood film\nnegative bad film\n")
    with pytest.raises(XaiCoreError, match="line 2"):
        run_branch_train(config_from_dict(raw), Paths(tmp_path / "out"), "text", progress=False)
    assert not (tmp_path / "out" / "text" / "features.zarr").exists()
    with pytest.raises(XaiCoreError, match="not an xaicore archive of xaicore.features/1"):
        open_features(tiny_survey.heatmaps)
