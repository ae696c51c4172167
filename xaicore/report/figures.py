"""The survey's figures as PNG: AOPC perturbation curves (Samek et al. 2017), the cascading randomization
curve (Adebayo et al. 2018, Fig. 2's shape), ROAR/KAR accuracy against the fraction removed (Hooker et al.
2019, Fig. 4's shape), input invariance per method (Kindermans et al.) and CEM's pertinent positives and negatives
(Dhurandhar et al. 2018, the survey's Fig. 7) and the class maximisers of the trained model and its controls
(survey §6.6). The heatmap grids are in :mod:`xaicore.report.grids`, the figures of the tabular and text branches
(explainVis, per-word heatmaps) in :mod:`xaicore.report.branches`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xaicore.outputs import Paths
from xaicore.report.canvas import plt
from xaicore.report.canvas import save as _save
from xaicore.store import SCORES_SCHEMA, open_archive


def _style(name: str) -> str:
    return "--" if name == "random" else "-"


def aopc_curves_figure(scores: xr.Dataset, path: Path, model: str = "trained") -> Path:
    """Mean drop f(x⁽⁰⁾) − f(x⁽ᵏ⁾) against k: one panel per perturbation (rows) and order (columns)."""
    perts, orders = [str(p) for p in scores.perturbation.values], [str(o) for o in scores.order.values]
    fig, axes = plt.subplots(len(perts), len(orders), figsize=(5 * len(orders), 3.4 * len(perts)), squeeze=False,
                             sharex=True)
    for pi, p in enumerate(perts):
        for oi, order in enumerate(orders):
            ax = axes[pi][oi]
            curve = scores["aopc_curve"].sel(model=model, perturbation=p, order=order).values  # expl, sample, step
            for ei, name in enumerate(str(e) for e in scores.explainer.values):
                if np.isnan(curve[ei]).all():
                    continue
                drop = np.nanmean(curve[ei, :, :1] - curve[ei], 0)
                ax.plot(np.arange(drop.size), drop, label=f"{name} ({float(drop.mean()):.2f})", ls=_style(name))
            ax.set_title(f"{order.upper()}, {p} — {model}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=6, title="method (AOPC)", title_fontsize=6)
        axes[pi][0].set_ylabel(f"f(x⁽⁰⁾) − f(x⁽ᵏ⁾) [{scores.attrs.get('score', 'logit')}]", fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("perturbation step k (regions disabled)")
    return _save(fig, path)


def cascading_figure(scores: xr.Dataset, path: Path) -> Path:
    """Similarity of each method's heatmaps to the trained model's as layers are randomized top-down."""
    models = [str(m) for m in scores.model.values]
    steps = ["trained"] + [m for m in models if m.startswith("cascade:")]
    sim = scores["sanity_similarity"].sel(model=steps).mean("sample")
    measures = [str(q) for q in scores.measure.values]
    fig, axes = plt.subplots(1, len(measures), figsize=(4.5 * len(measures), 3.8), squeeze=False, sharey=True)
    for ax, measure in zip(axes[0], measures, strict=True):
        for name in (str(e) for e in scores.explainer.values):
            ax.plot(range(len(steps)), sim.sel(explainer=name, measure=measure).values, marker="o", label=name,
                    ls=_style(name), ms=3)
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels(["original"] + [s.split(":", 1)[1] for s in steps[1:]], rotation=30)
        ax.set_title(f"cascading randomization — {measure}", fontsize=9)
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("similarity to the trained model's heatmap")
    axes[0][-1].legend(fontsize=6)
    return _save(fig, path)


def _accuracy_curves(ax: Any, frac: np.ndarray, acc: xr.DataArray) -> None:
    """One line per explainer of ``acc`` (explainer, fraction, repeat): the mean over repeats, ±1 sd shaded."""
    for name in (str(e) for e in acc.explainer.values):
        values = acc.sel(explainer=name).values  # fraction, repeat
        mean, std = values.mean(1), values.std(1)
        ax.plot(frac, mean, marker="o", label=name, ls=_style(name), ms=3)
        ax.fill_between(frac, mean - std, mean + std, alpha=0.15)


def roar_figure(roar: xr.Dataset, path: Path) -> Path:
    """Test accuracy of retrained models against the fraction of pixels replaced: ROAR removes the most
    relevant, KAR the least relevant (keeping the most relevant)."""
    modes = [str(m) for m in roar.mode.values]
    fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 3.8), squeeze=False, sharey=True)
    frac = roar.fraction.values * 100
    for ax, mode in zip(axes[0], modes, strict=True):
        _accuracy_curves(ax, frac, roar["roar_accuracy"].sel(mode=mode))
        what = "most relevant removed" if mode == "roar" else "least relevant removed (most relevant kept)"
        ax.set_title(f"{mode.upper()}: {what}", fontsize=9)
        ax.set_xlabel(f"% of input pixels replaced ({roar.attrs.get('fill', 'mean')} fill)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy after retraining")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def roar_fills_figure(roar: xr.Dataset, path: Path) -> Path:
    """ROAR per fill (Hooker et al.'s finding is judged per fill): test accuracy after retraining against the
    fraction of the most relevant pixels replaced, one panel per fill, ±1 sd over the repeats."""
    fills = [str(f) for f in roar.fill.values]
    fig, axes = plt.subplots(1, len(fills), figsize=(4.5 * len(fills), 3.8), squeeze=False, sharey=True)
    frac = roar.fraction.values * 100
    for ax, fill in zip(axes[0], fills, strict=True):
        _accuracy_curves(ax, frac, roar["roar_accuracy_by_fill"].sel(fill=fill))
        ax.set_title(f"ROAR, {fill} fill", fontsize=9)
        ax.set_xlabel("% of the most relevant pixels replaced")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("test accuracy after retraining")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, path)


def invariance_figure(scores: xr.Dataset, path: Path) -> Path:
    """Mean input-invariance error per method (0 = invariant), log scale."""
    inv = scores["invariance"].mean("sample").to_pandas().dropna()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(inv)), 3.6))
    ax.bar(range(len(inv)), np.maximum(inv.values, 1e-9), color="tab:blue")
    ax.set_xticks(range(len(inv)))
    ax.set_xticklabels(inv.index, rotation=60, ha="right", fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("Σ|R₁(x) − R₂(x+m)| / Σ|R₁(x)|")
    ax.set_title("input invariance (Kindermans et al.): lower is better", fontsize=9)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def cem_figure(heatmaps: xr.Dataset, x: np.ndarray, path: Path, model: str = "trained", n: int = 6) -> Path:
    """The survey's Fig. 7 for the first ``n`` explained samples: the input, its pertinent positive (the pixels
    kept), its pertinent negative (the pixels added, in red over the input) and the PN's new class."""
    rel = heatmaps["relevance"].sel(model=model)
    pp, pn = rel.sel(explainer="cem.pp").values[:n, 0], rel.sel(explainer="cem.pn").values[:n, 0]
    found_pp = heatmaps["found"].sel(model=model, explainer="cem.pp").values[:n]
    found_pn = heatmaps["found"].sel(model=model, explainer="cem.pn").values[:n]
    new = heatmaps["new_class"].sel(model=model, explainer="cem.pn").values[:n]
    label = heatmaps["label"].values[:n]
    n = min(n, pp.shape[0])
    fig, axes = plt.subplots(3, n, figsize=(1.6 * n, 5.2), squeeze=False)
    for i in range(n):
        img = x[i, 0]
        axes[0][i].imshow(img, cmap="gray", vmin=0, vmax=1)
        axes[0][i].set_title(f"input, label {int(label[i])}", fontsize=7)
        axes[1][i].imshow(pp[i], cmap="gray", vmin=0, vmax=1)
        axes[1][i].set_title(f"PP ({int((pp[i] != 0).sum())} px)" if found_pp[i] == 1 else "PP not found", fontsize=7)
        overlay = np.stack([np.clip(img + pn[i], 0, 1), img, img], -1)
        axes[2][i].imshow(overlay)
        axes[2][i].set_title(f"PN → {int(new[i])}" if found_pn[i] == 1 else "PN not found", fontsize=7)
        for row in axes:
            row[i].set_xticks([])
            row[i].set_yticks([])
    axes[1][0].set_ylabel("kept (PP)", fontsize=8)
    axes[2][0].set_ylabel("added (PN, red)", fontsize=8)
    fig.suptitle(f"CEM — {model}: pertinent positives and negatives", fontsize=9)
    return _save(fig, path)


def maximize_figure(maxi: xr.Dataset, path: Path) -> Path:
    """The maximiser of every class logit, one row per (model, parameterization), with the number of classes the
    model itself and the trained model recognise in them and the autoencoder's reconstruction error."""
    rows = [(str(m), str(p)) for m in maxi.model.values for p in maxi.parameterization.values]
    units = [int(u) for u in maxi.unit.values]
    fig, axes = plt.subplots(len(rows), len(units), figsize=(1.1 * len(units), 1.25 * len(rows)), squeeze=False)
    for r, (m, p) in enumerate(rows):
        sel = maxi.sel(model=m, parameterization=p)
        imgs = sel["maximizer"].values
        for u, ax in enumerate(axes[r]):
            ax.imshow(imgs[u, 0], cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"class {units[u]}", fontsize=7)
        own = int(sel["own_class"].values.sum())
        seen = int((sel["trained_class"].values == np.asarray(units)).sum())
        err = float(sel["reconstruction_error"].values.mean())
        axes[r][0].set_ylabel(f"{m}\n{p}\nown {own}/{len(units)}, trained {seen}/{len(units)}\nAE err {err:.3f}",
                              fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle("activation maximisation of the class logits (own: the model's own class; trained: what the "
                 "trained model sees)", fontsize=8)
    return _save(fig, path)


def _inputs(paths: Paths, samples: np.ndarray) -> np.ndarray:
    """The test images of the archive's ``samples`` (ids into the data set), in pixel space."""
    from xaicore.data import DatasetFile

    ds = DatasetFile(paths.dataset)
    return ds.test_images_at(np.searchsorted(ds.idx_test.numpy(), samples)).numpy()


def make_figures(paths: Paths, *, progress: bool = False) -> list[Path]:
    """Write every figure under ``paths.figures``; returns their paths."""
    from tqdm import tqdm

    from xaicore.report import grids

    scores = open_archive(paths.scores, schema=SCORES_SCHEMA)
    heatmaps = open_archive(paths.heatmaps)
    paths.figures.mkdir(parents=True, exist_ok=True)
    fig = paths.figures
    x = _inputs(paths, heatmaps.sample.values[:6])  # the first samples: the cascading grid and CEM's figure
    pos = grids.grid_samples(heatmaps)  # one sample of each label in turn
    x_grid = _inputs(paths, heatmaps.sample.values[pos])
    todo = [lambda: grids.heatmap_grid_figure(heatmaps, x_grid, fig / "heatmaps_trained.png", pos),
            lambda: aopc_curves_figure(scores, fig / "aopc_curves.png"),
            lambda: cascading_figure(scores, fig / "cascading_randomization.png")]
    if len(grids.cascade_steps(heatmaps)) > 1:
        todo.append(lambda: grids.cascading_grid_figure(heatmaps, x, fig / "cascading_grid.png"))
    if "invariance" in scores:
        todo.append(lambda: invariance_figure(scores, fig / "input_invariance.png"))
    if paths.roar.exists():
        roar = open_archive(paths.roar)
        todo.append(lambda: roar_figure(roar, fig / "roar_kar.png"))
        if "roar_accuracy_by_fill" in roar:
            todo.append(lambda: roar_fills_figure(roar, fig / "roar_fills.png"))
    if {"cem.pp", "cem.pn"} <= {str(e) for e in heatmaps.explainer.values} and "trained" in heatmaps.model:
        todo.append(lambda: cem_figure(heatmaps, x, fig / "cem.png"))
    if paths.maximize.exists():
        todo.append(lambda: maximize_figure(open_archive(paths.maximize), fig / "maximize.png"))
    if paths.analysis.exists():
        from xaicore.report.analysis import spray_figure, tcav_figure, truth_figure
        from xaicore.store.schemas import ANALYSIS_SCHEMA

        meta = open_archive(paths.analysis, schema=ANALYSIS_SCHEMA)
        todo += [lambda: spray_figure(meta, fig / "spray.png", _save),
                 lambda: tcav_figure(meta, fig / "tcav.png", _save)]
        if "metric_truth_tau" in meta:
            todo.append(lambda: truth_figure(meta, fig / "metrics_vs_truth.png", _save))
    todo += branch_figures(paths)
    return [draw() for draw in tqdm(todo, desc="figures", unit="figure", disable=not progress)]


def branch_figures(paths: Paths) -> list[Any]:
    """The figures of the tabular and text branches (survey §6) still to draw, one callable each: explainVis of
    ``outputs/tabular/features.zarr`` and the per-word heatmaps of ``outputs/text/features.zarr``; a branch that
    did not run has none."""
    from xaicore.report import branches

    fig, todo = paths.figures, []
    tabular, text = branches.archive(paths, "tabular"), branches.archive(paths, "text")
    if tabular is not None:
        ds_tab = branches.open_features(tabular)
        method = branches.explainvis_method(ds_tab)
        if method is not None:
            todo.append(lambda: branches.explainvis_figure(ds_tab, fig / "explainvis.png", _save, method=method))
    if text is not None:
        ds_text = branches.open_features(text)
        if branches.explained(ds_text):
            todo.append(lambda: branches.words_figure(ds_text, fig / "words.png", _save))
    return todo
