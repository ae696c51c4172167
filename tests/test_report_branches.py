"""The report's part for the tabular and text branches (survey §6): explainVis, the per-word heatmaps, the anchors'
table, the summary in metrics.json and its section, on small branch archives built once for the module."""

from __future__ import annotations

import html
import json
import re

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

from xaicore.config import config_from_dict  # noqa: E402
from xaicore.outputs import Paths  # noqa: E402
from xaicore.pipeline.branch_step import open_features, run_branch_explain, run_branch_train  # noqa: E402
from xaicore.report import branches, canvas, figures  # noqa: E402
from xaicore.report.document import sections, write_report  # noqa: E402
from xaicore.report.html import write_html  # noqa: E402

TITLE = "Tabular and text data (§6)"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``outputs/tabular`` and ``outputs/text`` of a tiny run: 12 rows, 8 sentences, 2 epochs each."""
    cfg = config_from_dict({
        "tabular": {"n_explain": 12, "epochs": 2,
                    "methods": ["gradient_x_input", "occlusion", "pda", "anchors", "random"]},
        "text": {"n_explain": 8, "epochs": 2, "methods": ["gradient_x_input", "occlusion", "lime", "anchors", "random"],
                 "method_params": {"lime": {"n_samples": 100}, "anchors": {"threshold": 0.95}}}})
    paths = Paths(tmp_path_factory.mktemp("outputs"))
    for kind in ("tabular", "text"):
        run_branch_train(cfg, paths, kind, progress=False)
        run_branch_explain(cfg, paths, kind, progress=False)
    return paths


def _open(paths: Paths, kind: str):
    return open_features(paths.branch(kind) / "features.zarr")


def _keep(store: list):
    """A figure writer that keeps the figure (its artists stay readable after it is closed)."""
    def save(fig, path):
        store.append(fig)
        return canvas.save(fig, path)
    return save


def test_explainvis_bars_are_the_rows_relevance_and_the_mean_per_value(built, tmp_path):
    ds = _open(built, "tabular")
    kept: list = []
    path = branches.explainvis_figure(ds, tmp_path / "explainvis.png", _keep(kept), n=3)
    assert path.read_bytes()[:4] == b"\x89PNG"
    rel = ds["relevance"].sel(model="trained", explainer="pda").values.astype(np.float64)  # (12, F)
    values = ds["value"].values
    axes = kept[0].axes
    assert len(axes) == 3
    assert "information difference" in kept[0]._suptitle.get_text()  # pda's measure, info_diff
    names = ["died", "survived"]  # dataset.npz's class names, beside the archive
    for i, ax in enumerate(axes):
        dark, light = ([p.get_width() for p in c.patches] for c in ax.containers)
        np.testing.assert_allclose(dark, rel[i], rtol=1e-6)
        same = [values[:, j] == values[i, j] for j in range(rel.shape[1])]  # rows with this row's value
        np.testing.assert_allclose(light, [rel[same[j], j].mean() for j in range(rel.shape[1])], rtol=1e-6)
        score = float(ds["score"].sel(model="trained").values[i])
        assert f"p({names[int(ds['target'].values[i])]}|x) = {score:.2f}" in ax.get_title()
        assert [t.get_text() for t in ax.get_yticklabels()] == [str(v) for v in values[i]]
    with pytest.raises(Exception, match="lime"):
        branches.explainvis_data(ds, method="lime")  # not explained in this run


def test_words_are_red_for_positive_blue_for_negative_relevance(built, tmp_path):
    ds = _open(built, "text")
    kept: list = []
    branches.words_figure(ds, tmp_path / "words.png", _keep(kept), n=4)
    methods = branches.explained(ds)
    assert methods[-1] == "random" and set(methods) == {str(e) for e in ds.explainer.values}
    axes = np.array(kept[0].axes).reshape(4, len(methods))
    assert [ax.get_title() for ax in axes[0]] == methods
    words = ds["word"].values
    rel = ds["relevance"].sel(model="trained").values
    checked = 0
    for i in range(4):
        for m, method in enumerate(methods):
            texts = axes[i][m].texts
            assert [t.get_text() for t in texts] == [str(w) for w in words[i] if str(w)]  # padding left out
            e = list(ds.explainer.values).index(method)
            lim = np.abs(rel[e, i][[bool(str(w)) for w in words[i]]]).max()
            for t in texts:
                _, _, tok = (int(v) for v in t.get_gid().split(":"))
                r, g, b, _ = t.get_bbox_patch().get_facecolor()
                value = rel[e, i, tok]
                if value > 0.05 * lim:
                    assert r == pytest.approx(1.0) and b < 0.96
                    checked += 1
                elif value < -0.05 * lim:
                    assert b == pytest.approx(1.0) and r < 0.96
                    checked += 1
                if abs(value) == lim > 0:  # the largest |R| of the sentence: full red or blue
                    assert g == pytest.approx(0.0, abs=0.01)
    assert checked > 20


def test_word_colours_are_symmetric_per_sentence():
    c = branches.word_colours(np.array([2.0, -2.0, 0.0, 1.0, np.nan]))
    np.testing.assert_allclose(c[0, :3], [1, 0, 0], atol=0.01)  # +max: red
    np.testing.assert_allclose(c[1, :3], [0, 0, 1], atol=0.01)  # -max: blue
    np.testing.assert_allclose(c[2, :3], [1, 1, 1], atol=0.01)  # 0: white
    assert c[3, 0] == 1.0 and 0.4 < c[3, 1] < 0.6  # half way: light red
    np.testing.assert_allclose(c[4, :3], [0.85, 0.85, 0.85])  # padding
    np.testing.assert_allclose(branches.word_colours(np.array([0.1, -0.05]))[:, :3],
                               branches.word_colours(np.array([4.0, -2.0]))[:, :3])  # scaled to max |R|


@pytest.mark.parametrize("kind", ["tabular", "text"])
def test_anchors_table_rows_are_the_archives_variables(built, kind):
    ds = _open(built, kind)
    rows = branches.anchors_table(ds)
    n = min(branches.N_ANCHORS, ds.sizes["sample"])
    assert len(rows) == n
    sel = ds.sel(model="trained")
    names = branches.class_names(ds)
    for i, row in enumerate(rows):
        assert row["sample"] == int(ds.sample.values[i])
        assert row["rule"] == str(sel["anchor_rule"].values[i])
        assert row["precision"] == pytest.approx(float(sel["anchor_precision"].values[i]), abs=1e-6)
        assert row["coverage"] == pytest.approx(float(sel["anchor_coverage"].values[i]), abs=1e-6)
        assert row["found"] == bool(sel["anchor_found"].values[i] == 1)
        assert row["model_calls"] == int(sel["anchor_model_calls"].values[i])
        assert row["prediction"] == names[int(sel["prediction"].values[i])]
        if kind == "tabular":
            assert row["row"] == ", ".join(str(v) for v in ds["value"].values[i])
        else:
            assert row["text"] == " ".join(str(w) for w in ds["word"].values[i] if str(w))
    assert branches.anchors_table(ds.drop_vars([v for v in ds.data_vars if v.startswith("anchor_")])) == []


@pytest.mark.parametrize("kind", ["tabular", "text"])
def test_branch_summary_is_the_archives_scores(built, kind):
    ds = _open(built, kind)
    s = json.loads(json.dumps(branch := branches.branch_summary(ds)))  # JSON-friendly
    assert s == branch
    assert s["kind"] == kind and s["dataset"] == ds.attrs["dataset"] and s["n_explained"] == ds.sizes["sample"]
    model = json.loads((built.branch(kind) / "model.json").read_text())
    assert s["model"]["test_accuracy"] == model["test_accuracy"]
    assert s["model"]["train_accuracy"] == model["train_accuracy"]
    assert [r["explainer"] for r in s["explainers"]] == branches.explained(ds)
    for r in s["explainers"]:
        for order in ("morf", "lerf"):
            assert r[f"aopc_{order}"] == pytest.approx(
                float(ds["aopc"].sel(model="trained", explainer=r["explainer"], order=order)), abs=1e-6)
        faith = ds["faithfulness"].sel(model="trained", explainer=r["explainer"]).values
        assert r["faithfulness"] == pytest.approx(float(np.nanmean(faith)), abs=1e-6)
    a = ds.sel(model="trained")
    assert s["anchors"]["precision"] == pytest.approx(float(a["anchor_precision"].mean()), abs=1e-6)
    assert s["anchors"]["found"] == pytest.approx(float(a["anchor_found"].mean()), abs=1e-6)
    assert s["anchors"]["model_calls"] == pytest.approx(float(a["anchor_model_calls"].mean()), abs=1e-6)
    assert s["anchors"]["examples"] == branches.anchors_table(ds)
    assert ("pda_measure" in s) == (kind == "tabular") and s.get("pda_measure", "info_diff") == "info_diff"


def _doc(summaries: dict) -> dict:
    return {"dataset": "digits", "n_samples": 4, "rows": [{"model": "trained", "explainer": "gradient"}],
            "findings": [], "reliability": [], "internal_consistency": {"mean": 0.1}, "branches": summaries}


def test_the_section_shows_the_figures_and_tables_in_the_html(built, tmp_path):
    built.figures.mkdir(exist_ok=True)
    drawn = [draw() for draw in figures.branch_figures(built)]
    assert [p.name for p in drawn] == ["explainvis.png", "words.png"]
    summaries = {k: branches.branch_summary(_open(built, k)) for k in ("tabular", "text")}
    page = write_html(_doc(summaries), drawn, tmp_path / "report.html").read_text()
    titles = [html.unescape(t) for t in re.findall(r"<h2>([^<]+)</h2>", page)]
    assert TITLE in titles and "Other figures" not in titles  # the section names both figures
    section = page[page.index(f"<h2>{html.escape(TITLE)}</h2>"):]
    section = section[:section.index("</section>")]
    assert section.count("<img ") == 2 and 'alt="explainvis"' in section and 'alt="words"' in section
    for s in summaries.values():
        for r in s["explainers"]:
            assert f"<td>{r['explainer']}</td><td>{r['aopc_morf']:.4g}</td>" in section
        for r in s["anchors"]["examples"]:
            assert html.escape(r["rule"] or "(empty: any input)") in section
    assert "training mean" in section and "UNK" in section and "Higher MoRF AOPC is better" in section
    assert 'class="finding' not in section  # plain text, no findings
    md = write_report(_doc({"text": summaries["text"]}), tmp_path / "report.md").read_text()
    assert f"## {TITLE}" in md and "words.png" in md and "explainvis.png" not in md
    assert TITLE not in [s.title for s in sections({**_doc({}), "branches": {}})]


def test_make_figures_draws_the_branches_that_ran_and_skips_the_others(built, tmp_path, monkeypatch):
    import xarray as xr

    from xaicore.report import grids

    hm = xr.Dataset(coords={"sample": [0], "explainer": ["gradient"], "model": ["trained"]})
    monkeypatch.setattr(figures, "open_archive", lambda *a, **k: hm)
    monkeypatch.setattr(figures, "_inputs", lambda paths, samples: None)
    monkeypatch.setattr(grids, "grid_samples", lambda ds: np.array([0]))
    monkeypatch.setattr(grids, "cascade_steps", lambda ds: ["trained"])
    for name in ("aopc_curves_figure", "cascading_figure"):
        monkeypatch.setattr(figures, name, lambda ds, path, *a, **k: path)
    monkeypatch.setattr(grids, "heatmap_grid_figure", lambda ds, x, path, *a, **k: path)
    survey = ["heatmaps_trained.png", "aopc_curves.png", "cascading_randomization.png"]
    bare = Paths(tmp_path / "bare")
    assert [p.name for p in figures.make_figures(bare)] == survey  # no branch ran: nothing, no error
    one = Paths(tmp_path / "one")
    one.root.mkdir()
    (one.root / "tabular").symlink_to(built.branch("tabular"), target_is_directory=True)
    out = figures.make_figures(one)
    assert [p.name for p in out] == [*survey, "explainvis.png"] and out[-1].read_bytes()[:4] == b"\x89PNG"


def test_class_names_come_from_the_archive_else_the_data_set_beside_it_else_class_k(built):
    ds = _open(built, "tabular")
    assert branches.class_names(ds) == ["died", "survived"]  # dataset.npz beside the archive
    alone = ds.copy()
    alone.encoding = {}  # opened from nowhere: no folder to look in
    assert branches.class_names(alone) == ["class 0", "class 1"]
    alone.attrs["class_names"] = json.dumps(["no", "yes"])
    assert branches.class_names(alone) == ["no", "yes"]
    assert "model" not in branches.branch_summary(ds.copy().assign_attrs(), folder=built.root / "nowhere")
