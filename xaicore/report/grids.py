"""Heatmap grids as the survey draws them: red for positive relevance, blue for negative, white at 0, each heatmap
scaled to its own max |R| (Bach et al. 2015; Samek et al. 2017's figures), with the input beside it.

- ``heatmap_grid_figure``: methods (columns) × samples (rows) of one model;
- ``cascading_grid_figure``: the cascading randomization (rows, original model first) × methods (columns) for a
  few samples (Adebayo et al. 2018, Fig. 2, transposed).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from xaicore.report.canvas import save as _save  # noqa: E402
from xaicore.store import explained_counts  # noqa: E402

CMAP = "bwr"  # blue - white - red, the survey's diverging map; centred at 0 by symmetric limits
PAD = 0.75  # grey between tiles, so that white (R = 0) backgrounds stay apart


def input_rgb(img: np.ndarray) -> np.ndarray:
    """A (C, H, W) image in pixel space as (H, W, 3) RGB in [0, 1]: grey for one channel (its range widened to
    [0, 1]), the first three channels clipped otherwise."""
    if img.shape[0] == 1:
        lo, hi = float(min(img.min(), 0.0)), float(max(img.max(), 1.0))
        return np.repeat(((img[0] - lo) / (hi - lo))[..., None], 3, -1)
    return np.clip(np.moveaxis(img[:3], 0, -1), 0.0, 1.0)


def heatmap_rgb(rel: np.ndarray) -> np.ndarray:
    """A (C, H, W) heatmap summed over channels as (H, W, 3) RGB: the diverging map with limits ±max|R|, so that
    0 is white, positive red and negative blue; a heatmap without finite values (not explained) is grey."""
    r = rel.sum(0)
    if not np.isfinite(r).any():
        return np.full((*r.shape, 3), 0.85)
    lim = float(np.nanmax(np.abs(r))) or 1.0
    return plt.get_cmap(CMAP)((np.nan_to_num(r) / lim + 1.0) / 2.0)[..., :3]


def _mosaic(tiles: list[list[np.ndarray | None]], pad: int = 2) -> np.ndarray:
    """Rows of (H, W, 3) tiles (None: left blank) as one image with ``pad`` grey pixels between them."""
    h, w = next(t for row in tiles for t in row if t is not None).shape[:2]
    out = np.full((len(tiles) * (h + pad) + pad, len(tiles[0]) * (w + pad) + pad, 3), PAD)
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            out[y:y + h, x:x + w] = 1.0 if t is None else t
    return out


def _draw(tiles: list[list[np.ndarray | None]], cols: list[str], rows: list[str], title: str, path: Path) -> Path:
    """The mosaic of ``tiles`` in one axes, the column labels on top and the row labels on the left."""
    img = _mosaic(tiles)
    n_rows, n_cols = len(tiles), len(tiles[0])
    fig, ax = plt.subplots(figsize=(1.0 * n_cols + 1.2, 1.0 * n_rows + 1.4))
    ax.imshow(img, interpolation="nearest")
    ty, tx = img.shape[0] / n_rows, img.shape[1] / n_cols
    ax.set_xticks([(j + 0.5) * tx for j in range(n_cols)], cols, fontsize=9, rotation=50, ha="left")
    ax.set_yticks([(i + 0.5) * ty for i in range(n_rows)], rows, fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for side in ax.spines.values():
        side.set_visible(False)
    # below: the rotated method names fill the top; wrapped to the figure's width (~9 characters an inch at 11 pt)
    # so that a grid of few methods does not cut its caption at the edges
    width = fig.get_size_inches()[0]
    ax.set_xlabel(textwrap.fill(title, max(24, int(width * 9))), fontsize=11, labelpad=8)
    return _save(fig, path)


def explained_methods(heatmaps: xr.Dataset, model: str) -> list[str]:
    """The explainers with at least one heatmap for ``model`` (not-applicable methods are all NaN)."""
    frac = heatmaps["positive_fraction"].sel(model=model)
    return [str(e) for e in heatmaps.explainer.values if np.isfinite(frac.sel(explainer=e).values).any()]


def grid_samples(heatmaps: xr.Dataset, n: int = 6, model: str = "trained") -> np.ndarray:
    """Positions (along ``sample``) of up to ``n`` samples ``model`` explained: the first of each label in turn,
    so that the grid shows as many classes as it has rows."""
    count = int(explained_counts(heatmaps)[list(heatmaps.model.values).index(model)])
    label = heatmaps["label"].values[:count]
    per_label = [np.flatnonzero(label == lb) for lb in np.unique(label)]
    picked: list[int] = []
    for r in range(max((len(p) for p in per_label), default=0)):  # round r: the r-th sample of every label
        picked += [int(p[r]) for p in per_label if r < len(p)]
    return np.sort(np.array(picked[:n], dtype=int))


def heatmap_grid_figure(heatmaps: xr.Dataset, x: np.ndarray, path: Path, positions: np.ndarray,
                        model: str = "trained") -> Path:
    """The samples at ``positions`` (rows; :func:`grid_samples`) of ``model``: the input, then every method's
    heatmap (columns). ``x`` holds those samples' inputs in pixel space."""
    methods = explained_methods(heatmaps, model)
    n = len(positions)
    rel = heatmaps["relevance"].sel(model=model, explainer=methods).isel(sample=positions).values
    pred = heatmaps["prediction"].sel(model=model).values[positions]
    label = heatmaps["label"].values[positions]
    tiles = [[input_rgb(x[i])] + [heatmap_rgb(rel[j, i]) for j in range(len(methods))] for i in range(n)]
    rows = [f"sample {int(s)}: label {int(lb)}, pred. {int(p)}"
            for s, lb, p in zip(heatmaps.sample.values[positions], label, pred, strict=True)]
    return _draw(tiles, ["input", *methods], rows,
                 f"heatmaps of the {model} model for the target class: red = positive, blue = negative relevance, "
                 "white = 0 (each scaled to its own max |R|)", path)


def cascade_steps(heatmaps: xr.Dataset) -> list[str]:
    """``trained`` and the cascading controls in the order the layers were randomized (top layer first)."""
    models = [str(m) for m in heatmaps.model.values]
    return ["trained"] + [m for m in models if m.startswith("cascade:")]


def cascading_grid_figure(heatmaps: xr.Dataset, x: np.ndarray, path: Path, n: int = 2) -> Path:
    """For each of the first ``n`` samples that every cascade step explained: one row per step (the original
    model, then each randomization, top layer first) and one column per method, the input on the left
    (Adebayo et al.'s figure, transposed so that the methods line up with the heatmap grid)."""
    steps = cascade_steps(heatmaps)
    methods = explained_methods(heatmaps, "trained")
    counts = dict(zip((str(m) for m in heatmaps.model.values), explained_counts(heatmaps), strict=True))
    n = min(n, *(int(counts[s]) for s in steps))
    n = min(n, x.shape[0])
    rel = heatmaps["relevance"].sel(model=steps, explainer=methods).isel(sample=slice(0, n)).values
    tiles, rows = [], []
    for s in range(n):
        for k, step in enumerate(steps):
            tiles.append([input_rgb(x[s]) if k == 0 else None] + [heatmap_rgb(rel[k, j, s])
                                                                  for j in range(len(methods))])
            where = "original" if step == "trained" else f"randomized from {step.split(':', 1)[1]}"
            rows.append(f"sample {int(heatmaps.sample.values[s])}: {where}")
    return _draw(tiles, ["input", *methods], rows,
                 "cascading randomization (Adebayo et al.): top to bottom, the layers are randomized from the output "
                 "down; a method that depends on the weights changes (red = positive, blue = negative)", path)


__all__ = ["CMAP", "cascade_steps", "cascading_grid_figure", "explained_methods", "grid_samples", "heatmap_grid_figure",
           "heatmap_rgb", "input_rgb"]
