"""End to end through the pipeline steps: archive schema, determinism, sanity-check ordering, reports."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from xaicore.errors import XaiCoreError
from xaicore.report import aggregate_metrics
from xaicore.store import open_archive

pytestmark = pytest.mark.slow


def tree_digest(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def explained(hm) -> np.ndarray:
    """(model, sample) True where the model explained the sample (the tiny survey budgets ``independent:*``)."""
    return np.arange(hm.sizes["sample"])[None, :] < hm["n_explained"].values[:, None]


def test_archive_schema(tiny_survey, tiny_cfg):
    ds = open_archive(tiny_survey.heatmaps)
    assert ds["relevance"].dims == ("model", "explainer", "sample", "channel", "y", "x")
    assert list(ds.explainer.values) == list(tiny_cfg.explain.methods)
    models = [str(m) for m in ds.model.values]
    assert models[:3] == ["trained", "random_labels", "zoo:mlp"]
    assert models[3:7] == ["cascade:fc2", "cascade:fc1", "cascade:conv2", "cascade:conv1"]
    assert models[7:] == ["independent:fc2", "independent:fc1", "independent:conv2", "independent:conv1"]
    assert ds.sizes["sample"] == 16 and ds.sizes["y"] == 28
    assert ds.attrs["complete"] is True
    assert ds["relevance"].encoding["chunks"] == (1, 1, 8, 1, 28, 28)
    for name in ("label", "target", "prediction", "score", "conservation_error", "positive_fraction"):
        assert name in ds
    assert (ds.target.values == ds.label.values).all()
    # Grad-CAM cannot explain the MLP: recorded as not applicable, its heatmaps NaN, every other one finite
    from xaicore.store import not_applicable

    assert list(not_applicable(ds)) == ["zoo:mlp"] and list(not_applicable(ds)["zoo:mlp"]) == ["gradcam"]
    assert np.isnan(ds["relevance"].sel(model="zoo:mlp", explainer="gradcam").values).all()
    assert np.isfinite(ds["relevance"].sel(model="trained").values).all()
    # the stored score is the target logit of each model, and the gradient map is finite and non-trivial
    assert np.isfinite(ds["score"].values).all()
    grad = ds["relevance"].sel(model="trained", explainer="gradient").values
    assert np.abs(grad).sum() > 0
    # G×I and IG conserve better than the gradient (the gradient has no reason to sum to f(x))
    cons = ds["conservation_error"].sel(model="trained").median("sample")
    assert float(cons.sel(explainer="integrated_gradients")) < float(cons.sel(explainer="gradient"))


def test_a_per_model_sample_budget(tiny_survey, tiny_cfg):
    """``explain.samples`` (the tiny survey gives ``independent:*`` 5 of its 16 samples, mid-chunk): those models'
    heatmaps stop there (NaN after, no chunk file), and their sanity similarities compare the samples both
    models explained, equal to comparing those samples directly."""
    from xaicore.metrics import similarity
    from xaicore.pipeline.explain_step import explain_jobs, sample_budget

    hm, sc = open_archive(tiny_survey.heatmaps), open_archive(tiny_survey.scores)
    budget = dict(zip((str(m) for m in hm.model.values), hm["n_explained"].values.tolist(), strict=True))
    assert budget == {m: 5 if m.startswith("independent:") else 16 for m in budget}
    rel = hm["relevance"].sel(model="independent:fc1").values
    assert np.isfinite(rel[:, :5]).all() and np.isnan(rel[:, 5:]).all()
    assert not list((tiny_survey.heatmaps / "relevance").glob("c/8/*/1/*/*/*"))  # its second chunk: no file
    sim = sc["sanity_similarity"].sel(model="independent:fc1")
    assert np.isfinite(sim.sel(explainer="gradient").values[:, :5]).all() and np.isnan(sim.values[..., 5:]).all()
    trained = hm["relevance"].sel(model="trained", explainer="gradient").values[:5]
    for q in ("spearman", "ssim", "hog"):
        np.testing.assert_allclose(sim.sel(explainer="gradient", measure=q).values[:5], similarity(
            torch.from_numpy(trained), torch.from_numpy(rel[0, :5]), q).numpy(), rtol=1e-6, err_msg=q)
    # the first pattern that matches a model counts; a pattern that matches none is refused
    cfg = dataclasses.replace(tiny_cfg, explain=dataclasses.replace(
        tiny_cfg.explain, samples={"cascade:fc2": 3, "cascade:*": 7, "trained": 100}))
    names = ["trained", "cascade:fc2", "cascade:fc1", "random_labels"]
    assert sample_budget(cfg, names, 16).tolist() == [16, 3, 7, 16]
    assert [j[2:] for j in explain_jobs(cfg, [16, 3]) if j[:2] == (1, 0)] == [(0, 3)]
    cfg = dataclasses.replace(cfg, explain=dataclasses.replace(cfg.explain, samples={"zoo:*": 4}))
    with pytest.raises(XaiCoreError, match=r"explain.samples.zoo:\* matches none of the survey's models"):
        sample_budget(cfg, names, 16)


def test_the_archive_answers_the_readmes_queries(tiny_survey):
    """The README's queries on the heatmap archive, as typed: coordinates in memory, so grouping by label and
    selecting the misclassified samples work; the heatmaps stay lazy."""
    import dask.array
    import matplotlib

    matplotlib.use("Agg")
    ds = open_archive(tiny_survey.heatmaps)
    assert all(isinstance(ds[c].data, np.ndarray) for c in ("label", "target", "prediction", "score"))
    assert isinstance(ds["conservation_error"].data, np.ndarray)
    assert isinstance(ds["relevance"].data, dask.array.Array)
    ds.relevance.sel(model="trained", explainer="integrated_gradients").isel(sample=0).squeeze().plot()
    table = ds.conservation_error.median("sample").to_pandas()
    assert table.shape == (ds.sizes["model"], ds.sizes["explainer"])
    by_label = ds.relevance.sel(model="trained", explainer="gradient").groupby("label").mean()
    rel, label = ds.relevance.sel(model="trained", explainer="gradient").values, ds.label.values
    for lab in np.unique(label):
        np.testing.assert_allclose(by_label.sel(label=lab).values, rel[label == lab].mean(0), rtol=1e-5)
    for model in ("trained", "random_labels"):
        wrong = ds.sel(model=model).where(lambda d: d.prediction != d.label, drop=True)
        pred = ds.prediction.sel(model=model).values
        assert wrong.sample.values.tolist() == ds.sample.values[pred != label].tolist()
        np.testing.assert_array_equal(wrong.relevance.sel(explainer="gradient").values,
                                      ds.relevance.sel(model=model, explainer="gradient").values[pred != label])
    assert not isinstance(open_archive(tiny_survey.heatmaps, load_small=False)["label"].data, np.ndarray)



    sc = open_archive(tiny_survey.scores)
    assert sc["aopc_curve"].dims == ("model", "explainer", "perturbation", "order", "sample", "step")
    assert sc.sizes["step"] == 17  # 28x28 in 7x7 regions: L = 16
    curve = sc["aopc_curve"].sel(model="trained").values
    assert np.isfinite(curve).all()
    assert np.isnan(sc["aopc_curve"].sel(model="cascade:fc2").values).all()  # not in score.models
    sim = sc["sanity_similarity"].sel(explainer="gradient", measure="spearman").mean("sample")
    # Adebayo et al.: the trained model's gradient is identical to itself and unlike the fully randomized one
    assert float(sim.sel(model="trained")) == pytest.approx(1.0)
    assert float(sim.sel(model="cascade:conv1")) < 0.5
    # the random baseline does not depend on the model at all
    rnd = sc["sanity_similarity"].sel(explainer="random", measure="spearman")
    assert np.allclose(rnd.values[explained(open_archive(tiny_survey.heatmaps))], 1.0)
    assert list(sc.perturbation.values) == ["uniform", "dirichlet", "mean", "blur"]
    assert list(sc.measure.values) == ["spearman", "spearman_abs", "ssim", "hog"]
    faith = sc["faithfulness"].sel(model="trained").values
    assert np.nanmax(np.abs(faith)) <= 1.0 + 1e-6 and np.isfinite(faith).mean() > 0.9


def test_input_invariance_in_pipeline(tiny_survey):
    """Kindermans et al. on the pipeline's MLP: the gradient is invariant, G×I and zero-baseline IG are not."""
    inv = open_archive(tiny_survey.scores)["invariance"].mean("sample")
    assert float(inv.sel(explainer="gradient")) < 1e-4
    assert float(inv.sel(explainer="gradient_x_input")) > 0.1
    assert float(inv.sel(explainer="integrated_gradients")) > 0.1


def test_fit_stage(tiny_survey):
    """The fit stage: one state per fitted method and survey model (PatternNet and PatternAttribution share theirs,
    PDA has its patch Gaussians), ρ(S) on the test set for the non-control models, loaded by the explain step
    (every model has their heatmaps), and PatternAttribution input invariant when each network's patterns are fitted
    on its own data (Kindermans et al. 2019)."""
    from xaicore.explain.perturbation import PatchGaussian
    from xaicore.pipeline import load_states

    index = json.loads((tiny_survey.fitted / "index.json").read_text())
    hm = open_archive(tiny_survey.heatmaps)
    assert set(index) == {"patternnet", "patternattribution", "pda"}
    assert sorted(index["pda"]) == sorted(str(m) for m in hm.model.values)
    assert index["patternnet"] == index["patternattribution"] != index["pda"]
    all_quality = json.loads(tiny_survey.pattern_quality.read_text())
    assert set(all_quality) == {"trained", "random_labels", "zoo:mlp"}  # not the controls
    quality = all_quality["trained"]
    assert set(quality) == {"filter", "linear", "two_component"}
    assert set(quality["linear"]) == {"conv1", "conv2", "fc1", "fc2"}
    assert all(0.0 <= q <= 1.0 for est in quality.values() for q in est.values())
    # S_w keeps the output's trace in its distractor; S_a removes it (held out: close to 1)
    assert quality["filter"]["conv2"] < 0.2 < 0.8 < quality["linear"]["conv2"]
    patterns = load_states(tiny_survey, "patternnet", ["trained"])["trained"]
    assert patterns.n_samples > 0 and set(patterns.layers) == {"conv1", "conv2", "fc1", "fc2"}
    pda = load_states(tiny_survey, "pda", ["trained"])["trained"]
    assert isinstance(pda, PatchGaussian) and pda.cov.shape == (64, 64) and pda.window == 4
    for method in ("patternnet", "patternattribution", "pda", "occlusion", "lime"):
        rel = hm["relevance"].sel(explainer=method).values[explained(hm)]
        assert np.isfinite(rel).all() and (np.abs(rel).reshape(-1, 784).sum(1) > 0).all(), method
    inv = open_archive(tiny_survey.scores)["invariance"].mean("sample")
    assert float(inv.sel(explainer="patternattribution")) < 1e-4
    assert float(inv.sel(explainer="patternnet")) < 1e-4
    doc = json.loads(tiny_survey.metrics.read_text()) if tiny_survey.metrics.is_file() else None
    if doc is not None:
        assert doc["pattern_quality"]["trained"]["linear"]["fc1"] == quality["linear"]["fc1"]
    with pytest.raises(XaiCoreError, match="no fitted state of 'pda' for nope"):
        load_states(tiny_survey, "pda", ["nope"])


def test_extras_in_the_archive(tiny_survey):
    """LIME's surrogate R² is a (model, explainer, sample) variable: set for lime, NaN for the others."""
    hm = open_archive(tiny_survey.heatmaps)
    r2 = hm["surrogate_r2"]
    assert r2.dims == ("model", "explainer", "sample")
    lime = r2.sel(explainer="lime").values[explained(hm)]
    assert np.isfinite(lime).all() and (lime <= 1.0).all() and np.median(lime) > 0.3
    assert np.isnan(r2.sel(explainer="gradient").values).all()


def test_cem_in_the_pipeline(tiny_survey, tiny_cfg, tmp_path):
    """CEM's state is the autoencoder stage's one file for every model; its heatmaps obey the sign constraints of
    a PP (0 ≤ δ ≤ x) and a PN (δ ≥ 0, x + δ ≤ 1); its extras are (model, explainer, sample) variables; PDA's
    model-free fit is one file for every model; a missing autoencoder names its stage."""
    import shutil

    from xaicore.explain.optimisation import AutoencoderState
    from xaicore.pipeline import generate_heatmaps, load_states

    states = load_states(tiny_survey, "cem.pn", ["trained", "random_labels"])
    assert isinstance(states["trained"], AutoencoderState) and states["trained"] is states["random_labels"]
    assert states["trained"].latent == tiny_cfg.autoencoder.latent
    index = json.loads((tiny_survey.fitted / "index.json").read_text())
    assert "cem.pn" not in index and len(set(index["pda"].values())) == 1
    hm = open_archive(tiny_survey.heatmaps)
    x = hm["relevance"].sel(explainer="gradient")  # shape only
    ds = np.load(tiny_survey.dataset)
    images = ds["x_test"][np.searchsorted(ds["idx_test"], hm.sample.values)]
    pp = hm["relevance"].sel(explainer="cem.pp").values
    pn = hm["relevance"].sel(explainer="cem.pn").values
    assert pp.shape == pn.shape == x.shape
    pp, pn, images = pp[explained(hm)], pn[explained(hm)], np.broadcast_to(images[None], pp.shape)[explained(hm)]
    assert (pp >= 0).all() and (pp <= images + 1e-6).all()
    assert (pn >= 0).all() and (images + pn <= 1 + 1e-6).all()
    found = hm["found"].sel(explainer="cem.pn", model="trained").values
    assert found.mean() >= 0.25  # 15 FISTA steps at 2 values of c on a model of 3 epochs: the quality is tested
    #                              in tests/explain_optimisation
    new = hm["new_class"].sel(explainer="cem.pn", model="trained").values
    assert (new[found == 1] != hm["label"].values[found == 1]).all()
    l0 = hm["l0"].sel(explainer="cem.pp").values[explained(hm)]
    assert np.array_equal(l0, (pp != 0).reshape(pp.shape[0], -1).sum(-1))
    assert np.isnan(hm["found"].sel(explainer="gradient").values).all()
    paths = type(tiny_survey)(tmp_path / "outputs")
    for sub in ("data", "models", "controls", "fitted"):
        shutil.copytree(tiny_survey.root / sub, paths.root / sub)
    with pytest.raises(XaiCoreError, match=r"autoencoder.pt is missing; 'cem.pp' needs it: run the autoencoder "
                                           r"stage first \(python -m flows autoencoder\)"):
        generate_heatmaps(tiny_cfg, paths, progress=False)


@pytest.mark.hostdep
def test_train_on_dask_equals_serial(tiny_survey, tiny_cfg, tmp_path):
    """The train stage on 2 Dask workers (one training run each) writes the same weights, bit for bit, as in one
    process: every run has one torch thread wherever it runs."""
    import shutil

    import torch

    from xaicore.pipeline import train_models

    paths = type(tiny_survey)(tmp_path / "outputs")
    shutil.copytree(tiny_survey.root / "data", paths.root / "data")
    cfg = dataclasses.replace(tiny_cfg, model=dataclasses.replace(tiny_cfg.model, workers=2))
    train_models(cfg, paths, progress=False)
    index = json.loads((paths.models / "index.json").read_text())
    assert index == json.loads((tiny_survey.models / "index.json").read_text())
    for entry in index.values():
        a = torch.load(paths.models / entry["file"], weights_only=True)
        b = torch.load(tiny_survey.models / entry["file"], weights_only=True)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_maximize_stage(tiny_survey, tiny_cfg):
    """The maximize archive: a maximiser per (model, parameterization, class) inside the data range, with the
    model's own reading of it, the trained model's and the autoencoder's error; the same as a direct call; in
    metrics.json when the aggregate step has run."""
    import torch

    from xaicore.analysis import maximize
    from xaicore.models import load_model
    from xaicore.pipeline.train_step import survey_models

    mx = open_archive(tiny_survey.maximize)
    assert mx["maximizer"].dims == ("model", "parameterization", "unit", "channel", "y", "x")
    assert list(mx.model.values) == ["trained", "cascade:fc2"] and list(mx.unit.values) == list(range(10))
    assert list(mx.parameterization.values) == ["pixels", "generator"]
    images = mx["maximizer"].values
    assert np.isfinite(images).all() and images.min() >= 0 and images.max() <= 1
    model = load_model(survey_models(tiny_survey)["trained"])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the stage: one thread (two sum in another order)
    try:
        direct = maximize(model, range(10), shape=(1, 28, 28), seed=tiny_cfg.seed, **tiny_cfg.maximize.pixels)
    finally:
        torch.set_num_threads(threads)
    np.testing.assert_array_equal(images[0, 0], direct.numpy())
    with torch.no_grad():
        own = (model(direct).argmax(1) == torch.arange(10)).numpy()
    np.testing.assert_array_equal(mx["own_class"].values[0, 0], own)
    assert (mx["reconstruction_error"].values > 0).all()


@pytest.mark.hostdep
def test_explain_on_dask_equals_serial(tiny_survey, tiny_cfg, tmp_path):
    """The explain stage on 2 Dask workers writes the same heatmaps, bit for bit, as the serial run."""
    import dataclasses
    import shutil

    from xaicore.pipeline import generate_heatmaps

    paths = type(tiny_survey)(tmp_path / "outputs")
    for sub in ("data", "models", "controls", "fitted"):
        shutil.copytree(tiny_survey.root / sub, paths.root / sub)
    shutil.copy(tiny_survey.autoencoder, paths.autoencoder)
    # every method that draws random numbers (SmoothGrad, LIME, PDA, random), a fitted one, an optimisation (CEM)
    methods = ("gradient", "smoothgrad", "occlusion", "lime", "pda", "patternnet", "cem.pn", "random")
    cfg = dataclasses.replace(tiny_cfg, explain=dataclasses.replace(tiny_cfg.explain, workers=2, methods=methods))
    generate_heatmaps(cfg, paths, progress=False)
    par = open_archive(paths.heatmaps)
    ser = open_archive(tiny_survey.heatmaps).sel(explainer=list(methods))
    for name in ("relevance", "conservation_error", "positive_fraction", "surrogate_r2"):
        np.testing.assert_array_equal(par[name].values, ser[name].values, err_msg=name)


@pytest.mark.hostdep
def test_explain_jobs_smaller_than_a_chunk(tiny_survey, tiny_cfg, tmp_path):
    """``explain.batch_sizes`` below the chunk splits a chunk into several jobs; their blocks are assembled into
    the chunk in sample order (same heatmaps on 2 Dask workers as in process, and as the unsplit run's up to
    float32 rounding of the smaller forward passes)."""
    import dataclasses
    import shutil

    from xaicore.pipeline import generate_heatmaps
    from xaicore.pipeline.explain_step import explain_jobs

    methods = ("gradient", "occlusion", "lime")
    explain = dataclasses.replace(tiny_cfg.explain, methods=methods, batch_sizes={"occlusion": 5, "lime": 6})
    assert [j[2:] for j in explain_jobs(dataclasses.replace(tiny_cfg, explain=explain), [24]) if j[1] == 1] == [
        (0, 5), (5, 8), (8, 13), (13, 16), (16, 21), (21, 24)]  # chunk 8: no job crosses a chunk boundary
    archives = {}
    for workers in (0, 2):
        paths = type(tiny_survey)(tmp_path / f"w{workers}")
        for sub in ("data", "models", "controls", "fitted"):
            shutil.copytree(tiny_survey.root / sub, paths.root / sub)
        cfg = dataclasses.replace(tiny_cfg, explain=dataclasses.replace(explain, workers=workers))
        generate_heatmaps(cfg, paths, progress=False)
        archives[workers] = open_archive(paths.heatmaps)
    whole = open_archive(tiny_survey.heatmaps).sel(explainer=list(methods))
    for name in ("relevance", "conservation_error", "positive_fraction", "surrogate_r2"):
        np.testing.assert_array_equal(archives[2][name].values, archives[0][name].values, err_msg=name)
    rel, ref = archives[0]["relevance"].values, whole["relevance"].values
    scale = np.nanmax(np.abs(ref), axis=(-3, -2, -1), keepdims=True) + 1e-12
    np.testing.assert_array_equal(np.isnan(rel), np.isnan(ref))
    assert np.nanmax(np.abs(rel - ref) / scale) < 1e-4


def test_roar_archive(tiny_survey):
    roar = open_archive(tiny_survey.roar)
    acc = roar["roar_accuracy"]
    assert acc.dims == ("mode", "explainer", "fraction", "repeat")
    assert acc.shape == (2, 3, 1, 2)
    assert ((acc.values >= 0) & (acc.values <= 1)).all()
    # the roar mode with every fill; the first fill's is roar_accuracy's roar mode, bit for bit
    by_fill = roar["roar_accuracy_by_fill"]
    assert by_fill.dims == ("fill", "explainer", "fraction", "repeat") and by_fill.shape == (2, 3, 1, 2)
    assert list(by_fill.fill.values) == ["mean", "noise"] and roar.attrs["fill"] == "mean"
    np.testing.assert_array_equal(by_fill.sel(fill="mean").values, acc.sel(mode="roar").values)
    assert not np.array_equal(by_fill.sel(fill="noise").values, by_fill.sel(fill="mean").values)
    # retrained models learn something on mildly degraded data (10 classes: chance is 0.1)
    assert float(acc.sel(mode="kar", fraction=0.1).mean()) > 0.3


@pytest.mark.hostdep
def test_roar_on_dask_equals_serial(tiny_survey, tiny_cfg, tmp_path):
    """Every ROAR/KAR retraining is a Dask job on a one-thread worker: 2 workers give the serial run's
    accuracies exactly (the tiny survey's ROAR ran in process)."""
    import dataclasses
    import shutil

    from xaicore.pipeline import run_roar

    paths = type(tiny_survey)(tmp_path / "outputs")
    for sub in ("data", "models", "controls"):
        shutil.copytree(tiny_survey.root / sub, paths.root / sub)
    roar = dataclasses.replace(tiny_cfg.roar, methods=("vargrad", "random"), repeats=1, workers=2)
    run_roar(dataclasses.replace(tiny_cfg, roar=roar), paths, progress=False)
    for var in ("roar_accuracy", "roar_accuracy_by_fill"):
        par = open_archive(paths.roar)[var]
        ser = open_archive(tiny_survey.roar)[var].sel(explainer=list(roar.methods), repeat=[0])
        np.testing.assert_array_equal(par.values, ser.values)


def test_reports(tiny_survey, tiny_cfg):
    doc = aggregate_metrics(tiny_survey)
    rows = {(r["model"], r["explainer"]): r for r in doc["rows"]}
    assert len(rows) == 11 * len(tiny_cfg.explain.methods)
    sc = open_archive(tiny_survey.scores)
    expect = float(sc["aopc"].sel(model="trained", explainer="gradient", order="morf", perturbation="uniform"))
    assert rows[("trained", "gradient")]["aopc_morf"] == pytest.approx(expect, abs=1e-5)
    assert rows[("cascade:fc2", "gradient")]["aopc_morf"] is None
    assert json.loads(tiny_survey.metrics.read_text())["rows"][0]["model"] == "trained"
    assert tiny_survey.metrics.with_suffix(".csv").read_text().startswith("model,explainer,")
    assert {f["source"].split(" ")[0] for f in doc["findings"]} == {"Adebayo", "Kindermans", "Tomsett", "Samek",
                                                                    "Hooker", "Clark,"}
    hook = next(f for f in doc["findings"] if f["source"].startswith("Hooker"))
    assert hook["holds"] is not None and set(hook["evidence"]["per_fill"]) == {"mean", "noise"}  # 2 repeats
    assert hook["evidence"]["ensembles"] == ["vargrad"]
    assert all(f["verdict"] in ("holds", "does not hold", "undetermined") and f["reason"] for f in doc["findings"])
    kind = next(f for f in doc["findings"] if f["source"].startswith("Kindermans"))
    assert kind["holds"] is True
    metrics = {r["metric"] for r in doc["reliability"]}
    assert {"aopc_morf_uniform", "faithfulness_blur", "roar_accuracy", "kar_accuracy"} <= metrics
    alpha = next(r for r in doc["reliability"] if r["metric"] == "aopc_morf_uniform")["inter_rater_alpha"]
    assert -1.0 <= alpha <= 1.0
    # lrp.z equals Gradient×Input on these ReLU nets: the de-duplicated set drops it, and every set is judged
    sets = doc["reliability_sets"]
    assert sets["duplicates_dropped"].get("lrp.z") == "gradient_x_input"
    assert "lrp.z" in sets["full"] and "lrp.z" not in sets["deduplicated"]
    assert sets["tomsett_like"] == ["gradient", "gradient_x_input", "integrated_gradients", "guided_backprop",
                                    "lrp.epsilon", "deeplift", "random"]
    assert {r["set"] for r in doc["reliability"]} == {"full", "deduplicated", "tomsett_like"}
    toms = next(f for f in doc["findings"] if f["source"].startswith("Tomsett"))
    assert set(toms["evidence"]["verdict per set"]) == {"full", "deduplicated", "tomsett_like"}
    assert (tiny_survey.root / "report.md").read_text().startswith("# xaicore survey report")
    assert "ρ(S)" in (tiny_survey.root / "report.md").read_text()
    assert set(doc["pattern_quality"]) == {"trained", "random_labels", "zoo:mlp"}
    figs = sorted(tiny_survey.figures.iterdir())  # the report stage's
    assert [f.name for f in figs] == ["aopc_curves.png", "cascading_grid.png", "cascading_randomization.png",
                                      "cem.png", "explainvis.png", "heatmaps_trained.png", "input_invariance.png",
                                      "maximize.png", "metrics_vs_truth.png", "roar_fills.png", "roar_kar.png",
                                      "spray.png", "tcav.png", "words.png"]
    assert all(f.read_bytes()[:4] == b"\x89PNG" for f in figs)
    assert (tiny_survey.root / "report.html").read_text().startswith("<!DOCTYPE html>")


@pytest.mark.hostdep
def test_same_params_bitwise_identical_archives(tiny_survey, tiny_cfg, tmp_path):
    """Same params and seed, same bytes: the maximize stage rerun on copies of the tiny survey's inputs, and the fit
    stage's states refitted for the trained model and a control, equal the survey's byte for byte. The other
    stages' reruns are below (train, explain and ROAR on two Dask workers against the in-process run) and in
    tests/flows/test_cluster.py (the whole scores archive on an external cluster); tests/flows/test_own_model.py
    reruns explain in process against the survey flow's."""
    import shutil

    from xaicore.data import load_saved
    from xaicore.explain.registry import fit
    from xaicore.models import load_model
    from xaicore.pipeline import run_maximize
    from xaicore.pipeline.fit_step import fit_kwargs
    from xaicore.pipeline.train_step import survey_models
    from xaicore.threads import compute_threads

    paths = type(tiny_survey)(tmp_path / "outputs")
    for sub in ("data", "models", "controls"):
        shutil.copytree(tiny_survey.root / sub, paths.root / sub)
    shutil.copy(tiny_survey.autoencoder, paths.autoencoder)
    run_maximize(tiny_cfg, paths, progress=False)
    assert tree_digest(paths.maximize) == tree_digest(tiny_survey.maximize)
    ds, _ = load_saved(paths.dataset)
    index = json.loads((tiny_survey.fitted / "index.json").read_text())
    for method in ("patternnet", "pda"):
        for name in ("trained", "cascade:fc1"):
            with compute_threads():  # the fit stage's thread settings: the contract's "same threads"
                state = fit(load_model(survey_models(paths)[name]), ds.x_train, method,
                            **fit_kwargs(tiny_cfg, method))
            file = index[method][name]  # torch.save names the zip's records after the file
            state.save(tmp_path / file)
            assert (tmp_path / file).read_bytes() == (tiny_survey.fitted / file).read_bytes(), (method, name)


def test_killed_run_leaves_no_complete_archive(tiny_survey, tiny_cfg, tmp_path, monkeypatch):
    import shutil

    import xaicore.pipeline.explain_step as step

    paths = type(tiny_survey)(tmp_path / "outputs")
    for sub in ("data", "models", "controls", "fitted"):
        shutil.copytree(tiny_survey.root / sub, paths.root / sub)
    shutil.copy(tiny_survey.autoencoder, paths.autoencoder)
    calls = {"n": 0}
    real = step.explain_batched

    def dying(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # as a kill in the middle of the run
        return real(*args, **kwargs)

    monkeypatch.setattr(step, "explain_batched", dying)
    with pytest.raises(KeyboardInterrupt):
        step.generate_heatmaps(tiny_cfg, paths, progress=False)
    assert not paths.heatmaps.exists()
    with pytest.raises(XaiCoreError, match="did not finish"):
        open_archive(paths.heatmaps)


def test_the_explain_stage_refuses_an_archive_the_disk_cannot_hold(tiny_survey, tiny_cfg, tmp_path, monkeypatch,
                                                                    capsys):
    import shutil
    from collections import namedtuple

    from xaicore.pipeline import generate_heatmaps
    from xaicore.pipeline.explain_step import archive_bytes

    assert archive_bytes(11 * 29 * 16, (1, 28, 28)) == 11 * 29 * 16 * (784 * 4 + 64)
    paths = type(tiny_survey)(tmp_path / "outputs")
    for sub in ("data", "models", "controls", "fitted"):
        shutil.copytree(tiny_survey.root / sub, paths.root / sub)
    shutil.copy(tiny_survey.autoencoder, paths.autoencoder)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 10**6, 10**6))  # 1 MB free
    with pytest.raises(XaiCoreError, match=rf"heatmap archive: at most [\d.]+ GiB \(11 models x "
                                           rf"{len(tiny_cfg.explain.methods)} methods x 16 samples \(132 "
                                           r"model-samples by explain.samples, 5-16 per model\) x 784 values.*"
                                           r"0\.0 GiB free .*the disk cannot hold it"):
        generate_heatmaps(tiny_cfg, paths, progress=True)
    assert not paths.heatmaps.exists() and not paths.heatmaps.with_name("heatmaps.zarr.partial").exists()
