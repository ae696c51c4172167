"""The whole survey on a researcher's own network and images, as the README configures it: a generated
ImageFolder (3 classes of 36x36 RGB PNGs, resized and centre-cropped to 32x32) and a torchvision ResNet-18 given
as a state_dict file, behind ImageNet's normalization (tests/flows/own_model.py), in a copy of the project.

``xaicore survey`` runs it as a researcher would (issue 29): it versions data/images and the weights with DVC, then
``dvc repro`` runs every stage under one Prefect server, MLflow included; ``dvc status`` must find the pipeline up
to date — dvc.yaml's deps and outs fit this layout — and see the data and train stages change when the weights file
does. ``XAICORE_OWN_MODEL_RUNNER=flow`` runs the survey flow (``python -m flows survey``) and ``dvc commit``
instead, ``=dvc`` ``dvc repro`` under flows/server.py without the CLI. LIME, occlusion and Grad-CAM run with their
defaults.
Every gradient, LRP-family and signal method explains the given model, its random-label retraining and its
cascading randomization by named blocks; AOPC scores them on regions of 16 pixels.
PatternNet/PatternAttribution's signal estimators are fitted for every model; their quality check ρ(S)
(``patterns.quality``) is off here: it inverts cov[x, x] of ResNet-18's 4608-dimensional layer4 inputs, about a
minute per model on one core.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.flows.own_model import EXTRA_METHODS, GRADIENT_METHODS, OWN_MODEL_RUN, SIDE, start_own_model_run
from tests.flows.test_pipeline import tree_digest
from xaicore.config import load_config
from xaicore.pipeline import Paths, generate_heatmaps
from xaicore.store import open_archive

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CONTROLS = ["cascade:fc", "cascade:layer4"]  # independent:* as cascade:*: tests/test_model_spec.py
RUNNER = os.environ.get("XAICORE_OWN_MODEL_RUNNER", "xaicore")


@pytest.fixture(scope="module")
def project(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project copy after its survey: the run tests/conftest.py started in the background at collection, or
    one started now."""
    started = request.config.stash.get(OWN_MODEL_RUN, None)
    if started is None:
        proj = tmp_path_factory.mktemp("own-model") / "project"
        started = start_own_model_run(proj, RUNNER)
    proc, proj, log = started
    rc = proc.wait(timeout=1800)
    assert rc == 0, log.read_text()[-6000:]
    return proj


def test_dvc_sees_a_new_weights_file(project, tmp_path):
    """The weights live under data/, a dependency of the data and train stages."""
    weights = project / "data" / "resnet18.pt"
    kept = tmp_path / "kept.pt"
    shutil.copy(weights, kept)
    try:
        state = torch.load(weights, weights_only=True)
        state["fc.bias"] += 1.0
        torch.save(state, weights)
        status = subprocess.run([sys.executable, "-m", "dvc", "status"], cwd=project, capture_output=True,
                                text=True, timeout=120, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
        changed = {line.rstrip(":").strip() for line in status.stdout.splitlines() if line.endswith(":")
                   and not line.startswith("\t")}
        assert {"data", "train"} <= changed, status.stdout
    finally:
        shutil.copy(kept, weights)


def test_the_given_model_is_loaded_not_trained_and_its_controls_are_its_blocks(project):
    index = json.loads((project / "outputs/models/index.json").read_text())
    assert list(index) == ["trained", "random_labels"]
    assert index["trained"]["weights"] == "data/resnet18.pt" and index["trained"]["final_loss"] is None
    meta = json.loads((project / "outputs/models/trained.json").read_text())
    assert meta["source"] == "torchvision" and meta["arch"] == "resnet18" and meta["input_shape"] == [3, SIDE, SIDE]
    assert meta["normalize"]["std"] == [0.229, 0.224, 0.225]
    rl = json.loads((project / "outputs/models/random_labels.json").read_text())
    assert rl["arch"] == "resnet18" and index["random_labels"]["final_loss"] > 0  # retrained on permuted labels
    assert list(json.loads((project / "outputs/controls/index.json").read_text())) == CONTROLS


METHODS = GRADIENT_METHODS + EXTRA_METHODS


def test_every_method_explains_every_model_on_the_pixels(project):
    hm = open_archive(project / "outputs/heatmaps.zarr")
    assert list(hm.model.values) == ["trained", "random_labels", *CONTROLS]
    assert list(hm.explainer.values) == METHODS
    assert dict(hm["relevance"].sizes) == {"model": 4, "explainer": len(METHODS), "sample": 3,
                                            "channel": 3, "y": SIDE, "x": SIDE}
    rel = hm["relevance"].values
    assert np.isfinite(rel).all()
    mass = np.abs(rel).reshape(4, len(METHODS), 3, -1).sum(-1)
    cam = METHODS.index("gradcam")  # ReLU(CAM) is 0 where no region speaks for the target: Grad-CAM's own
    assert (np.delete(mass, cam, axis=1) > 0).all()  # outcome, not a failure
    assert (mass[:, cam] > 0).any()
    # the randomized top layer changes every method's heatmap of the given model (Adebayo et al.'s check)
    trained, top = (hm["relevance"].sel(model=m, explainer="gradient").values for m in ("trained", "cascade:fc"))
    assert not np.allclose(trained, top)
    assert set(hm.label.values) <= {0, 1, 2} and hm.label.dtype.kind == "i"


def test_lime_occlusion_and_gradcam_work_with_their_defaults_on_32px_rgb(project):
    """Issue 29, points 3 and 4: LIME's default segmentation gives every image at least 4 segments (each has its
    own surrogate coefficient), Grad-CAM's default layer has a map larger than 1x1 (layer4 is 1x1 at 32 px), and
    occlusion's maps vary."""
    hm = open_archive(project / "outputs/heatmaps.zarr")
    lime = hm["relevance"].sel(explainer="lime").values[:, :, 0]  # (model, sample, y, x)
    segments = [[np.unique(m).size for m in per_model] for per_model in lime]
    assert min(min(s) for s in segments) >= 4, segments
    cam = hm["relevance"].sel(explainer="gradcam").values[:, :, 0].reshape(4, 3, -1)
    varies = cam.max(-1) > cam.min(-1)
    assert varies[cam.max(-1) > 0].all() and varies.any(), "a Grad-CAM map is one colour"
    occ = hm["relevance"].sel(model="trained", explainer="occlusion").values.reshape(3, -1)
    assert (occ.max(1) > occ.min(1)).all()


def test_the_data_and_weights_under_data_are_versioned(project):
    """Issue 29, point 5: xaicore survey put data/images and data/resnet18.pt into DVC's cache."""
    import yaml

    if RUNNER != "xaicore":
        pytest.skip("only xaicore survey versions data/ (XAICORE_OWN_MODEL_RUNNER is set otherwise)")
    for name in ("images", "resnet18.pt"):
        spec = yaml.safe_load((project / "data" / f"{name}.dvc").read_text())
        md5 = spec["outs"][0]["md5"]  # a folder's: <hash>.dir, its listing, the files beside it
        assert (project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file(), name
    assert "data/images is now versioned by DVC" in (project / "survey.log").read_text()


def test_aopc_and_the_sanity_checks_are_scored(project):
    sc = open_archive(project / "outputs/scores.zarr")
    assert sc.attrs["region"] == 8 and sc.sizes["step"] == 17  # (32 / 8)² regions, and the unperturbed step
    aopc = sc["aopc"].sel(model="trained", perturbation="uniform", order="morf").values
    assert aopc.shape == (len(METHODS),) and np.isfinite(aopc).all()
    sim = sc["sanity_similarity"].sel(model=CONTROLS).values  # (model, explainer, measure, sample)
    hm = open_archive(project / "outputs/heatmaps.zarr")
    flat = np.abs(hm["relevance"].sel(model="trained").values).reshape(len(METHODS), 3, -1).sum(-1) == 0
    # a similarity to a constant (all-zero Grad-CAM) heatmap is undefined: NaN there, finite everywhere else
    assert np.isfinite(sim.transpose(0, 2, 1, 3)[:, :, ~flat]).all()
    assert np.isnan(sim.transpose(0, 2, 1, 3)[:, :2][:, :, flat]).all()  # spearman, spearman_abs
    doc = json.loads((project / "outputs/metrics.json").read_text())
    assert {r["model"] for r in doc["rows"]} >= {"trained", "random_labels", *CONTROLS}
    roar = open_archive(project / "outputs/roar.zarr")
    assert np.isfinite(roar["roar_accuracy"].values).all()  # ROAR retrained the ResNet-18 architecture


def test_the_report_and_the_mlflow_run(project):
    out = project / "outputs"
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "resnet18" in page
    assert {"heatmaps_trained.png", "cascading_grid.png", "aopc_curves.png"} <= {p.name for p in
                                                                                 (out / "figures").iterdir()}
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["xaicore-survey"])
    assert len(runs) == 1
    assert runs["params.model.arch"].iloc[0] == "resnet18" and runs["params.score.region"].iloc[0] == "8"
    assert runs["metrics.trained/lrp.epsilon_gamma_box/aopc_morf"].notna().all()
    logged = {a.path for a in mlflow.MlflowClient().list_artifacts(runs["run_id"].iloc[0])}
    assert {"report.html", "figures", "metrics.json"} <= logged


def test_the_flows_heatmaps_equal_an_in_process_rerun(project, tmp_path, monkeypatch):
    """Same params, same bytes: `dvc repro`'s explain stage (a Prefect flow in its own process) and the pipeline
    step in this process, for the methods that draw random numbers and the box rule behind the normalization."""
    monkeypatch.chdir(project)  # params.yaml's relative paths (data/, model.weights)
    cfg = load_config(project / "params.yaml")
    methods = ("smoothgrad", "lrp.epsilon_gamma_box", "patternattribution", "random")
    cfg = dataclasses.replace(cfg, explain=dataclasses.replace(cfg.explain, methods=methods))
    paths = Paths(tmp_path / "outputs")
    for sub in ("data", "models", "controls", "fitted"):
        shutil.copytree(project / "outputs" / sub, paths.root / sub)
    generate_heatmaps(cfg, paths, progress=False)
    ours = open_archive(paths.heatmaps)
    theirs = open_archive(project / "outputs/heatmaps.zarr").sel(explainer=list(methods))
    np.testing.assert_array_equal(ours["relevance"].values, theirs["relevance"].values)
    assert tree_digest(paths.models) == tree_digest(project / "outputs/models")


def test_dvc_metrics_and_plots_show_the_aopc(project):
    """dvc.yaml declares metrics.json as metrics and the curves as plots (issue 29, point 13): `dvc metrics show`
    lists each method's AOPC, `dvc plots show` draws one line per method."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    shown = subprocess.run([sys.executable, "-m", "dvc", "metrics", "show", "--json"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=120)
    metrics = next(iter(json.loads(shown.stdout).values()))["data"]["outputs/metrics.json"]["data"]
    doc = json.loads((project / "outputs/metrics.json").read_text())
    row = next(r for r in doc["rows"] if r["model"] == "trained" and r["explainer"] == "gradient")
    assert metrics["aopc"]["gradient"]["morf"] == pytest.approx(row["aopc_morf"])
    plots = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "--json"], cwd=project, env=env,
                           capture_output=True, text=True, timeout=120)
    drawn = json.loads(plots.stdout)
    assert not drawn.get("errors"), drawn.get("errors")
    content = drawn["data"]["outputs/plots/aopc_morf.csv"][0]["content"]
    assert content["encoding"]["color"]["field"] == "method"
    assert {v["method"] for v in content["data"]["values"]} == set(METHODS)  # every AOPC is finite


def test_dvc_experiments_set_method_parameters_and_diff_the_metrics(project):
    """Issue 29, point 13: in a git repository of the project, `dvc exp run -S explain.method_params...` (run in
    the background with the survey: tests/flows/own_model.py, ``experiment``) is accepted, writes the value into
    params.yaml and reruns the explain stage, not the data or the models, and `dvc metrics diff` reports a changed
    AOPC. (A method without an entry in params.yaml takes Hydra's append form, -S +explain.method_params....)"""
    if RUNNER != "xaicore":
        pytest.skip("the experiment runs after xaicore survey only (XAICORE_OWN_MODEL_RUNNER is set otherwise)")
    said = json.loads((project / "experiment.json").read_text())["output"]
    # run, or restored from DVC's run cache when an earlier experiment had the same params
    ran = {a or b for a, b in re.findall(r"Running stage '([\w-]+)'|Stage '([\w-]+)' is cached", said)}
    assert "explain" in ran and not {"data", "train", "controls"} & ran, said[-3000:]
    assert "Stage 'train' didn't change, skipping" in said
    assert "n_samples: 8" in (project / "params.yaml").read_text().split("smoothgrad:", 1)[1][:60]
    metrics = project / "outputs/metrics.json"
    doc = json.loads(metrics.read_text())
    before = doc["aopc"]["gradient"]["morf"]
    doc["aopc"]["gradient"]["morf"] = before + 1.0
    metrics.unlink()  # a link into DVC's cache (cache.type hardlink): a new file, the cached one unchanged
    metrics.write_text(json.dumps(doc))
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    diff = subprocess.run([sys.executable, "-m", "dvc", "metrics", "diff", "--json"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)
    assert diff.returncode == 0, diff.stderr[-2000:]
    change = json.loads(diff.stdout)["outputs/metrics.json"]["aopc.gradient.morf"]
    assert change["diff"] == pytest.approx(1.0) and change["old"] == pytest.approx(before)
