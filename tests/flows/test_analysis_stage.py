"""The ``planted`` and ``analysis`` stages in the tiny survey: the archive has the variables and dims of DESIGN.md
§3 (queryable with xarray), every localisation figure is where the watermark is, and a rerun of both stages is
byte for byte the same (CPU determinism)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.flows.test_pipeline import tree_digest
from xaicore.analysis import open_activations
from xaicore.data.planted import CONCEPTS
from xaicore.errors import XaiCoreError
from xaicore.pipeline import run_analysis, run_planted
from xaicore.store import open_archive

pytestmark = pytest.mark.slow


def test_analysis_archive_schema(tiny_survey, tiny_cfg):
    ds = open_archive(tiny_survey.analysis, schema="xaicore.analysis/1")
    assert ds["spray_cluster"].dims == ("class", "sample") and ds["spray_eigenvalue"].dims == ("class", "k")
    assert ds["tcav_score"].dims == ds["tcav_pvalue"].dims == ("concept", "layer", "class")
    assert ds["dissection_iou"].dims == ("layer", "unit", "concept")
    assert ds["localization"].dims == ("model", "explainer", "measure", "sample")
    assert list(ds["concept"].values) == list(CONCEPTS) and list(ds["layer"].values) == ["conv2", "fc1"]
    hans = tiny_cfg.analysis.hans_class
    # SpRAy: the watermarked class's own digits are clustered, the swapped ones and the other classes are not
    labels = ds["spray_cluster"].sel({"class": hans})
    assert ((labels >= 0) == ~ds["swapped"]).all() and (ds["spray_cluster"].drop_sel({"class": hans}) == -1).all()
    assert int(ds["spray_n_clusters"].sel({"class": hans})) >= 1
    assert np.isfinite(ds["spray_ari"].sel({"class": hans}))
    # TCAV on fc1 only, for every class and planted cue; not on the masks' stroke/background
    tested = ds["tcav_score"].sel(layer="fc1", concept=["watermark", "stripes", "dots"])
    assert np.isfinite(tested).all() and ds["tcav_score"].sel(layer="conv2").isnull().all()
    assert ds["tcav_score"].sel(concept="stroke").isnull().all()
    # dissection of conv2's 32 units against all 5 concepts; none of fc1
    iou = ds["dissection_iou"]
    assert np.isfinite(iou.sel(layer="conv2")).all() and iou.sel(layer="fc1").isnull().all()
    # localisation on the watermarked samples only, in [0, 1]
    loc = ds["localization"].sel(model="clever_hans")
    assert loc.where(ds["watermark"]).notnull().sum() > 0 and loc.where(~ds["watermark"]).isnull().all()
    assert float(loc.min()) >= 0 and float(loc.max()) <= 1
    assert json.loads(ds.attrs["watermark_box"]) == [0, 0, 4, 4]
    hm = open_archive(tiny_survey.planted_heatmaps)
    assert list(hm["explainer"].values) == list(tiny_cfg.analysis.methods)
    assert hm.sizes["sample"] == ds.sizes["sample"]
    acts = open_activations(tiny_survey.activations)
    assert acts["conv2"].dims == ("model", "sample", "conv2:unit", "conv2:y", "conv2:x")


def test_the_truth_study_covers_every_regime_metric_and_method(tiny_survey, tiny_cfg):
    ds = open_archive(tiny_survey.analysis, schema="xaicore.analysis/1")
    tc = tiny_cfg.analysis.truth
    assert list(ds["regime"].values) == list(tc.regimes) and list(ds["truth_method"].values) == list(tc.methods)
    assert ds["causal_drop"].dims == ("regime", "truth_sample", "cause") and ds.sizes["truth_sample"] == tc.n_images
    assert ds["regime_reliance"].dims == ("regime", "reliance_measure")
    reliance = ds["regime_reliance"].sel(reliance_measure="flip_rate")
    assert float(reliance.sel(regime="absent")) <= 0.1  # a model that never saw the mark does not flip on it
    assert ds["riw"].dims == ds["truth_agreement"].dims == ("regime", "truth_method", "truth_sample")
    assert ds["truth_metric_value"].dims == ("truth_metric", "regime", "truth_method", "truth_sample")
    perts = tiny_cfg.score.perturbations
    assert list(ds["truth_metric"].values) == [f"aopc_{o}_{p}" for p in perts for o in ("morf", "lerf")] + \
        [f"faithfulness_{p}" for p in perts] + ["localization_mass", "localization_pointing"]
    aopc = ds["truth_metric_value"].sel(truth_metric=f"aopc_morf_{perts[0]}")
    assert np.isfinite(aopc).all()  # every regime, method and image scored
    removal = [m for m in ds["truth_metric"].values if m.startswith(("aopc", "faithfulness"))]
    assert np.isfinite(ds["metric_truth_tau"].sel(truth_metric=removal)).all()  # NaN only for a constant metric
    assert ds["metric_truth_ci"].dims == ("truth_metric", "bound")
    lo, hi = ds["metric_truth_ci"].sel(bound="low"), ds["metric_truth_ci"].sel(bound="high")
    assert (lo.fillna(0) <= hi.fillna(0)).all() and float(lo.min()) >= -1 and float(hi.max()) <= 1
    # the archive of the regimes' heatmaps: one model per regime, the truth set's own labels as targets
    hm = open_archive(tiny_survey.truth_heatmaps)
    assert list(hm["model"].values) == list(tc.regimes) and (hm["target"].values == ds["truth_label"].values).all()
    doc = json.loads(tiny_survey.metrics.read_text())
    rows = doc["metrics_vs_truth"]
    assert {r["metric"] for r in rows} == set(ds["truth_metric"].values)
    assert all(set(r) == {"metric", "kendall_tau", "ci"} and len(r["ci"]) == 2 for r in rows)
    clark = next(f for f in doc["findings"] if f["source"].startswith("Clark"))
    assert clark["verdict"] in ("holds", "does not hold")
    page = (tiny_survey.root / "report.html").read_text()
    assert "which metric is right" in page and "metrics_vs_truth.png" in page
    assert (tiny_survey.figures / "metrics_vs_truth.png").stat().st_size > 10_000


@pytest.mark.hostdep
def test_rerun_is_byte_for_byte_the_same(tiny_survey, tiny_cfg, tmp_path):
    paths = type(tiny_survey)(tmp_path / "outputs")
    run_planted(tiny_cfg, paths, progress=False)
    for name in ("dataset.npz", "model.pt", "model.json", "model_absent.pt", "model_noise.pt", "reliance.json"):
        assert (paths.planted / name).read_bytes() == (tiny_survey.planted / name).read_bytes(), name
    run_analysis(tiny_cfg, paths, progress=False)
    for out in ("analysis", "planted_heatmaps", "truth_heatmaps", "activations"):
        assert tree_digest(getattr(paths, out)) == tree_digest(getattr(tiny_survey, out)), out


def test_analysis_needs_the_planted_stage(tiny_cfg, tmp_path):
    from xaicore.pipeline import Paths

    with pytest.raises(XaiCoreError, match="run the planted stage first"):
        run_analysis(tiny_cfg, Paths(tmp_path / "outputs"), progress=False)
    assert not (tmp_path / "outputs" / "analysis.zarr").exists()


def test_metrics_and_report_carry_the_meta_methods(tiny_survey, tiny_cfg):
    doc = json.loads(tiny_survey.metrics.read_text())["analysis"]
    assert doc["hans_class"] == tiny_cfg.analysis.hans_class and set(doc["reliance"]) >= {"swapped_accuracy",
                                                                                          "flip_rate"}
    assert {r["explainer"] for r in doc["localization"]} == set(tiny_cfg.analysis.methods)
    masses = [r["mass"] for r in doc["localization"]]
    assert masses == sorted(masses, reverse=True)  # best first
    own_digits = int((~open_archive(tiny_survey.analysis)["swapped"]).sum())
    assert sum(c["size"] for c in doc["spray"]["clusters"]) == own_digits
    assert {(t["concept"], t["layer"]) for t in doc["tcav"]} == {(c, "fc1") for c in ("watermark", "stripes", "dots")}
    assert set(doc["dissection"]) == {"conv2"} and doc["dissection"]["conv2"]["units"] == 32
    page = (tiny_survey.root / "report.html").read_text()
    assert "Meta methods (§7) on the planted digits" in page and "spray.png" in page and "tcav.png" in page
    assert (tiny_survey.figures / "spray.png").stat().st_size > 10_000 and (tiny_survey.figures / "tcav.png").is_file()
