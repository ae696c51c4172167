"""The report's pieces without a survey: the red/blue heatmap colours, the grids, and report.html."""

from __future__ import annotations

import base64
import html
import re

import numpy as np
import xarray as xr

from xaicore.report.document import sections
from xaicore.report.grids import explained_methods, grid_samples, heatmap_grid_figure, heatmap_rgb, input_rgb
from xaicore.report.html import write_html


def test_heatmaps_are_red_positive_blue_negative_white_at_zero():
    rel = np.array([[[2.0, -2.0, 0.0, 1.0]]])  # (C, H, W) = (1, 1, 4); max |R| = 2
    rgb = heatmap_rgb(rel)[0]
    np.testing.assert_allclose(rgb[0], [1.0, 0.0, 0.0], atol=1e-6)  # +max: red
    np.testing.assert_allclose(rgb[1], [0.0, 0.0, 1.0], atol=1e-6)  # -max: blue
    np.testing.assert_allclose(rgb[2], [1.0, 1.0, 1.0], atol=0.01)  # 0: white (bwr's centre)
    assert rgb[3][0] == 1.0 and 0.4 < rgb[3][1] < 0.6  # half way: light red
    # channels are summed; a heatmap that was never computed is grey
    np.testing.assert_allclose(heatmap_rgb(np.ones((3, 2, 2)) * [[[1]], [[-1]], [[1]]]),
                               heatmap_rgb(np.ones((1, 2, 2))))
    assert np.all(heatmap_rgb(np.full((1, 2, 2), np.nan)) == 0.85)


def test_inputs_are_shown_in_pixel_space():
    grey = input_rgb(np.array([[[0.0, 0.5, 1.0]]]))
    np.testing.assert_allclose(grey[0], [[0, 0, 0], [0.5, 0.5, 0.5], [1, 1, 1]])
    rgb = input_rgb(np.stack([np.full((1, 1), v) for v in (0.2, 1.5, -1.0)]))
    np.testing.assert_allclose(rgb[0, 0], [0.2, 1.0, 0.0])


def _heatmaps(n_methods: int = 3, n: int = 4) -> xr.Dataset:
    rng = np.random.default_rng(0)
    rel = rng.normal(size=(1, n_methods, n, 1, 8, 8)).astype(np.float32)
    rel[0, 2] = np.nan  # a method not applicable to this model: left out of the grid
    return xr.Dataset(
        {"relevance": (("model", "explainer", "sample", "channel", "y", "x"), rel),
         "positive_fraction": (("model", "explainer", "sample"),
                               np.where(np.isnan(rel).all((3, 4, 5)), np.nan, (rel > 0).mean((3, 4, 5)))
                               .astype(np.float32))},
        coords={"model": ["trained"], "explainer": ["gradient", "lrp.z", "gradcam"], "sample": np.arange(n) * 3,
                "label": ("sample", np.arange(n)), "prediction": (("model", "sample"), np.arange(n)[None]),
                "n_explained": ("model", [n])})


def test_heatmap_grid_draws_the_explained_methods(tmp_path):
    hm = _heatmaps()
    assert explained_methods(hm, "trained") == ["gradient", "lrp.z"]  # gradcam is all NaN here
    pos = grid_samples(hm, n=3)
    path = heatmap_grid_figure(hm, np.random.default_rng(1).random((3, 1, 8, 8)), tmp_path / "grid.png", pos)
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_the_grid_shows_one_sample_of_each_label_in_turn():
    hm = _heatmaps(n=7).assign_coords(label=("sample", [3, 3, 1, 3, 1, 0, 0]))
    assert grid_samples(hm, n=3).tolist() == [0, 2, 5]  # the first 3, the first 1 and the first 0
    assert grid_samples(hm, n=5).tolist() == [0, 2, 4, 5, 6]  # then the second of labels 0 and 1
    hm["n_explained"] = ("model", [2])  # only what the model explained
    assert grid_samples(hm, n=5).tolist() == [0, 1]


def _doc() -> dict:
    row = {"model": "trained", "explainer": "gradient", "test_accuracy": 0.9, "aopc_morf_uniform": 1.5}
    ctrl = {"model": "cascade:fc2", "explainer": "gradient", "similarity_ssim": 0.25}
    finding = {"claim": "A <b>claim</b>", "source": "Someone 2020", "holds": False, "rule": "x > 1",
               "reason": "x = 0.5", "evidence": {"x": 0.5}}
    return {"dataset": "digits", "n_samples": 4, "rows": [row, ctrl], "findings": [finding],
            "reliability": [{"metric": "aopc", "set": "full", "inter_rater_alpha": 0.3}],
            "internal_consistency": {"mean": 0.1}}


def test_report_html_embeds_every_figure_and_escapes_text(tmp_path):
    png = {name: (tmp_path / name) for name in ("heatmaps_trained.png", "aopc_curves.png", "later_stage.png")}
    for i, p in enumerate(png.values()):
        p.write_bytes(b"\x89PNG fake " + bytes([i]))
    page = write_html(_doc(), list(png.values()), tmp_path / "report.html", meta={"git revision": "abc"})
    text = page.read_text()
    assert not (tmp_path / "report.html.partial").exists()
    embedded = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="([^"]+)"', text)
    assert {alt: base64.b64decode(data) for data, alt in embedded} == \
        {p.stem: p.read_bytes() for p in png.values()}
    assert "A &lt;b&gt;claim&lt;/b&gt;" in text and "<b>claim</b>" not in text
    assert 'class="finding does-not-hold"' in text and "git revision: abc" in text
    titles = [html.unescape(t) for t in re.findall(r"<h2>([^<]+)</h2>", text)]
    assert titles == [s.title for s in sections(_doc())] + ["Other figures"]  # a figure no section names
    assert "<script" not in text  # static: nothing to fail in a browser
    # the similarity table: the control's SSIM in the control's column
    assert "<th>cascade:fc2</th>" in text and "<td>0.25</td>" in text
