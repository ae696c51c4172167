"""The report's part for the meta methods of survey §7 (``outputs/analysis.zarr``, the planted digits): a summary
for ``metrics.json``, its section of the report, and two figures — SpRAy (Lapuschkin et al. 2019, Fig. 2's
shape: eigenvalue spectrum, embedding, cluster prototypes) and TCAV (Kim et al. 2018, Fig. 4's shape: scores per
concept and layer with the random baseline, significant ones marked)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

TCAV_CONCEPTS = ("watermark", "stripes", "dots")
REGIME_WORDS = {"absent": "no watermark in training", "confound": "the watermark predicts its class",
                "noise": "the watermark on random images of every class"}


def _num(v: Any) -> float | None:
    v = float(v)
    return round(v, 6) if np.isfinite(v) else None


def analysis_summary(ds: xr.Dataset) -> dict[str, Any]:
    """What ``metrics.json`` keeps of the analysis archive: the watermark's reliance, the localisation per method
    (best first), SpRAy's clusters, TCAV per concept, layer and class, and the dissection's detectors per layer."""
    hans, texture = int(ds.attrs["hans_class"]), int(ds.attrs["texture_class"])
    loc = ds["localization"].sel(model=ds.attrs["model"])
    localization = sorted(({"explainer": str(e), **{str(m): _num(loc.sel(explainer=e, measure=m).mean())
                                                     for m in ds.measure.values}}
                           for e in ds.explainer.values), key=lambda r: -(r["mass"] if r["mass"] is not None else -1))
    labels = ds["spray_cluster"].sel({"class": hans}).values
    k = int(ds["spray_n_clusters"].sel({"class": hans}))
    wm = int(ds["spray_watermark_cluster"].sel({"class": hans}))
    flag = ds["watermark"].values
    spray = {"class": hans, "method": json.loads(ds.attrs["params"])["analysis"]["spray"]["method"],
             "n_clusters": k, "ari_watermark": _num(ds["spray_ari"].sel({"class": hans})),
             "watermark_cluster": wm,
             "clusters": [{"cluster": j, "size": int((labels == j).sum()),
                           "watermarked": int(((labels == j) & flag).sum())} for j in range(k)],
             "eigenvalues": [_num(v) for v in ds["spray_eigenvalue"].sel({"class": hans}).values]}
    tcav = [{"concept": str(c), "layer": str(layer), "class": int(cls),
             "score": _num(ds["tcav_score"].sel(concept=c, layer=layer, **{"class": cls})),
             "pvalue": _num(ds["tcav_pvalue"].sel(concept=c, layer=layer, **{"class": cls})),
             "significant": bool(ds["tcav_significant"].sel(concept=c, layer=layer, **{"class": cls}) == 1)}
            for c in ds.concept.values for layer in ds.layer.values for cls in ds["class"].values
            if np.isfinite(ds["tcav_score"].sel(concept=c, layer=layer, **{"class": cls}))]
    dissection = {}
    for layer in ds.layer.values:
        iou = ds["dissection_iou"].sel(layer=layer)
        if not np.isfinite(iou).any():
            continue
        units = int(np.isfinite(iou).all("concept").sum())
        names = [str(n) for n in ds["dissection_label"].sel(layer=layer).values[:units] if str(n)]
        counts = {c: names.count(c) for c in dict.fromkeys(names)}
        dissection[str(layer)] = {"units": units, "detectors": len(names),
                                  "units_per_concept": dict(sorted(counts.items(), key=lambda kv: -kv[1])),
                                  "best_iou": {str(c): _num(iou.sel(concept=c).max()) for c in ds.concept.values}}
    out = {"model": ds.attrs["model"], "hans_class": hans, "texture_class": texture,
           "reliance": {str(m): _num(v) for m, v in zip(ds.reliance_measure.values, ds["reliance"].values,
                                                          strict=True)},
           "localization": localization, "spray": spray, "tcav": tcav, "dissection": dissection}
    if "metric_truth_tau" in ds:
        out["truth"] = truth_summary(ds)
    return out


def truth_summary(ds: xr.Dataset) -> dict[str, Any]:
    """The metrics judged against the causal truth (:mod:`xaicore.metrics.truth`): each regime's reliance and
    mean causal drops, each method's mean RIW per regime, agreement with the truth and variance shares, and
    ``metrics_vs_truth`` (best first)."""
    regimes = [str(r) for r in ds.regime.values]
    drops = np.abs(ds["causal_drop"])
    methods = [str(m) for m in ds.truth_method.values]
    riw = ds["riw"].mean("truth_sample")
    agree = ds["truth_agreement"].mean(("regime", "truth_sample"))
    rows = [{"metric": str(m), "kendall_tau": _num(ds["metric_truth_tau"].sel(truth_metric=m)),
             "ci": [_num(v) for v in ds["metric_truth_ci"].sel(truth_metric=m).values]}
            for m in ds.truth_metric.values]
    rows.sort(key=lambda r: -(r["kendall_tau"] if r["kendall_tau"] is not None else -2))
    return {
        "n_images": int(ds.sizes["truth_sample"]),
        "salience_levels": sorted({float(v) for v in ds["salience"].values}),
        "regimes": {r: {"reliance": {str(k): _num(v) for k, v in zip(ds.reliance_measure.values,
                                                                      ds["regime_reliance"].sel(regime=r).values,
                                                                      strict=True)},
                        "mean_abs_drop_watermark": _num(drops.sel(regime=r, cause="watermark").mean()),
                        "mean_abs_drop_strokes": _num(drops.sel(regime=r, cause="strokes").mean()),
                        "mean_causal_share": _num(ds["causal_share"].sel(regime=r).mean())} for r in regimes},
        "methods": [{"method": m, **{f"riw_{r}": _num(riw.sel(truth_method=m, regime=r)) for r in regimes},
                     "eta2_regime": _num(ds["riw_eta2_regime"].sel(truth_method=m)),
                     "r2_salience": _num(ds["riw_r2_salience"].sel(truth_method=m)),
                     "truth_agreement": _num(agree.sel(truth_method=m))} for m in methods],
        "metrics_vs_truth": rows,
    }


def _table(rows: list[dict[str, Any]]) -> Any:
    from xaicore.report.blocks import Table

    return Table(rows, list(dict.fromkeys(k for r in rows for k in r)))


def analysis_section(a: dict[str, Any]) -> Any:
    """The report's §7 section from :func:`analysis_summary`'s dict."""
    from xaicore.report.blocks import Section, Table

    r, sp = a["reliance"], a["spray"]
    planted = [t for t in a["tcav"] if (t["concept"], t["class"]) in (("watermark", a["hans_class"]),
                                                                      ("stripes", a["texture_class"]))]
    flagged = [t for t in a["tcav"] if t["significant"] and t not in planted]
    blocks: list[Any] = [
        f"A CNN trained on digits with planted cues: a watermark on a share of class {a['hans_class']}'s images "
        f"(for half of those the only cue: another class's strokes, label kept) and stripes on class "
        f"{a['texture_class']}'s. "
        f"The model uses the watermark: {r.get('swapped_accuracy')} of the watermarked images with foreign strokes "
        f"are still called {a['hans_class']}, and the mark alone turns {r.get('flip_rate')} of correctly classified "
        f"other digits into {a['hans_class']} (test accuracy {r.get('test_accuracy')}).",
        "Localisation on the watermark box (relevance mass: share of positive relevance inside; pointing: the "
        "maximum inside). Higher is better; `random` is the floor.",
        Table(a["localization"], ["explainer", "mass", "pointing"]),
        f"SpRAy on {sp['method']} maps of class {sp['class']}: the eigengap chose {sp['n_clusters']} clusters; "
        f"cluster {sp['watermark_cluster']} holds the watermarked images (adjusted Rand index of that cluster "
        f"against the watermark flag: {sp['ari_watermark']}; 1 = exactly the Clever-Hans images). "
        "Figure: figures/spray.png.",
        Table(sp["clusters"], ["cluster", "size", "watermarked"]),
        "TCAV of the planted concepts (Kim et al.'s sign score, two-sided t-test against random-vs-random CAVs, "
        "Bonferroni over concepts × layers). Planted pairs:",
        Table(planted, ["concept", "layer", "class", "score", "pvalue", "significant"]),
        f"Other significant (concept, layer, class) pairs: {len(flagged)} of "
        f"{len(a['tcav']) - len(planted)} (the sign test flags any consistent direction, however small its "
        "effect). Figure: figures/tcav.png.",
        "Network Dissection (IoU of each unit's top-0.5 % region with the concept masks, detector when > 0.04):",
        _table([{"layer": layer, "units": d["units"], "detectors": d["detectors"],
                 **{f"units_{c}": d["units_per_concept"].get(c, 0) for c in d["best_iou"]},
                 **{f"best_iou_{c}": v for c, v in d["best_iou"].items()}} for layer, d in a["dissection"].items()]),
    ]
    figures = ["spray.png", "tcav.png"]
    if "truth" in a:
        blocks += truth_blocks(a["truth"])
        figures.append("metrics_vs_truth.png")
    return Section("Meta methods (§7) on the planted digits: localisation, SpRAy, TCAV, Network Dissection, and "
                   "which metric is right", blocks, figures=figures)


def truth_blocks(t: dict[str, Any]) -> list[Any]:
    """The report's blocks on the metrics judged against the causal truth."""
    regimes = list(t["regimes"])
    rows = t["metrics_vs_truth"]
    right = [r["metric"] for r in rows if r["ci"][0] is not None and r["ci"][0] > 0]
    wrong = [r["metric"] for r in rows if r["ci"][1] is not None and r["ci"][1] < 0]
    loose = [r["metric"] for r in rows if r["metric"] not in right and r["metric"] not in wrong]
    best = rows[0]
    return [
        f"Which metric is right? The same CNN trained in {len(regimes)} regimes of the watermark ("
        + "; ".join(f"{r}: {REGIME_WORDS.get(r, r)}" for r in regimes) + ") and explained on "
        f"{t['n_images']} clean test images with the watermark drawn on at intensities "
        f"{', '.join(str(v) for v in t['salience_levels'])} (its salience). The causal truth per image: the "
        "drop of the image's class logit when the watermark is erased and when the strokes are erased; the "
        "watermark's share |Δw| / (|Δw| + |Δs|) is what a correct heatmap's share of absolute relevance on the "
        "watermark (RIW) should be.",
        _table([{"regime": r, **v["reliance"], "mean |drop| watermark": v["mean_abs_drop_watermark"],
                 "mean |drop| strokes": v["mean_abs_drop_strokes"], "causal share": v["mean_causal_share"]}
                for r, v in t["regimes"].items()]),
        "Per method: mean RIW per regime, the share of RIW's variance explained by the regime (η²) and by the "
        "watermark's salience (r²), and the agreement with the truth −|RIW − share| (higher is better, 0 exact).",
        _table(t["methods"]),
        "Each metric's ranking of the methods against their ranking by agreement with the causal truth: Kendall τ "
        "with a 95 % bootstrap CI over the images (1: the metric ranks the methods as the truth does; 0: no "
        "relation). Figure: figures/metrics_vs_truth.png.",
        _table([{"metric": r["metric"], "kendall_tau": r["kendall_tau"], "ci_low": r["ci"][0],
                 "ci_high": r["ci"][1]} for r in rows]),
        f"On this data the most right metric is {best['metric']} (τ = {best['kendall_tau']}). Right (CI above 0): "
        f"{', '.join(right) or 'none'}. Wrong (CI below 0, the metric ranks the methods against the truth): "
        f"{', '.join(wrong) or 'none'}. Undecided (CI covers 0): {', '.join(loose) or 'none'}.",
    ]


def truth_figure(ds: xr.Dataset, path: Path, save: Any) -> Path:
    """Left: each metric's Kendall τ against the causal truth with its bootstrap CI; right: each method's mean RIW
    per training regime beside the random baseline."""
    names = [str(m) for m in ds.truth_metric.values]
    tau = ds["metric_truth_tau"].values
    ci = ds["metric_truth_ci"].values
    order = np.argsort(np.nan_to_num(tau, nan=-2))
    fig, (a0, a1) = plt.subplots(1, 2, figsize=(12, 0.28 * max(len(names), len(ds.truth_method)) + 1.6))
    ys = np.arange(len(names))
    a0.errorbar(tau[order], ys, xerr=np.abs(ci[order].T - tau[order]), fmt="o", ms=4, capsize=2, color="#333")
    a0.axvline(0, color="gray", lw=0.8, ls="--")
    a0.set(yticks=ys, yticklabels=[names[i] for i in order], xlim=(-1.05, 1.05),
           xlabel="Kendall τ vs. the causal truth (95 % CI)", title="which metric is right")
    a0.tick_params(labelsize=7)
    riw = ds["riw"].mean("truth_sample")
    methods = [str(m) for m in ds.truth_method.values]
    regimes = [str(r) for r in ds.regime.values]
    width = 0.8 / len(regimes)
    for i, r in enumerate(regimes):
        a1.barh(np.arange(len(methods)) + i * width, riw.sel(regime=r).values, height=width, label=r)
    a1.set(yticks=np.arange(len(methods)) + 0.4 - width / 2, yticklabels=methods, xlabel="mean RIW",
           title="relevance on the watermark per training regime")
    a1.tick_params(labelsize=7)
    a1.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def spray_figure(ds: xr.Dataset, path: Path, save: Any) -> Path:
    """SpRAy of the watermarked class: eigenvalues with the eigengap, the t-SNE of the spectral embedding (colour:
    cluster; ring: watermarked), and each cluster's mean image and mean heatmap."""
    hans = int(ds.attrs["hans_class"])
    sel = ds.sel({"class": hans})
    labels, flag = sel["spray_cluster"].values, ds["watermark"].values
    k = int(sel["spray_n_clusters"])
    member = labels >= 0
    fig = plt.figure(figsize=(3.2 * 2 + 1.6 * k, 3.4))
    grid = fig.add_gridspec(2, 2 + k, width_ratios=[2, 2] + [1] * k)
    ax = fig.add_subplot(grid[:, 0])
    ev = sel["spray_eigenvalue"].values
    ax.plot(np.arange(1, len(ev) + 1), ev, "o-", ms=3)
    ax.axvline(k + 0.5, color="gray", ls="--", lw=0.8)
    ax.set(xlabel="k", ylabel="eigenvalue λ_k", title=f"spectrum (eigengap → {k})")
    ax = fig.add_subplot(grid[:, 1])
    tsne = sel["spray_tsne"].values[member]
    ax.scatter(tsne[:, 0], tsne[:, 1], c=labels[member], cmap="tab10", s=10, vmin=0, vmax=9)
    ax.scatter(tsne[flag[member], 0], tsne[flag[member], 1], facecolors="none", edgecolors="k", s=30, lw=0.6,
               label="watermarked")
    ax.set(xticks=[], yticks=[], title=f"t-SNE, ARI {float(sel['spray_ari']):.2f}")
    ax.legend(fontsize=6, loc="best")
    for j in range(k):
        img = sel["spray_prototype_image"].isel(cluster=j).values
        rel = sel["spray_prototype"].isel(cluster=j).values
        lim = float(np.abs(rel).max()) or 1.0
        a0, a1 = fig.add_subplot(grid[0, 2 + j]), fig.add_subplot(grid[1, 2 + j])
        a0.imshow(img, cmap="gray", vmin=0, vmax=1)
        a1.imshow(rel, cmap="bwr", vmin=-lim, vmax=lim)
        a0.set_title(f"cluster {j} ({int((labels == j).sum())})", fontsize=7)
        for a in (a0, a1):
            a.set_xticks([])
            a.set_yticks([])
    fig.suptitle(f"SpRAy of class {hans}: clusters of its heatmaps", fontsize=9)
    return save(fig, path)


def tcav_figure(ds: xr.Dataset, path: Path, save: Any) -> Path:
    """TCAV score per class, one panel per (layer, concept), with the mean random-vs-random score as the
    baseline; a star marks the significant ones."""
    layers = [str(layer) for layer in ds.layer.values if np.isfinite(ds["tcav_score"].sel(layer=layer)).any()]
    concepts = [c for c in TCAV_CONCEPTS if c in ds.concept.values]
    classes = ds["class"].values
    fig, axes = plt.subplots(len(layers), len(concepts), figsize=(3.3 * len(concepts), 2.3 * len(layers)),
                             squeeze=False, sharey=True)
    for i, layer in enumerate(layers):
        for j, c in enumerate(concepts):
            ax = axes[i][j]
            score = ds["tcav_score"].sel(layer=layer, concept=c).values
            sig = ds["tcav_significant"].sel(layer=layer, concept=c).values == 1
            ax.bar(classes, score, color=np.where(sig, "#c0392b", "#bbbbbb"))
            ax.plot(classes, ds["tcav_random_score"].sel(layer=layer).values, "k_", ms=10, label="random")
            for cls in classes[sig]:
                ax.text(cls, score[cls] + 0.02, "*", ha="center", fontsize=9)
            ax.set(ylim=(0, 1.15), xticks=classes, title=f"{c} @ {layer}")
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=6)
    fig.suptitle("TCAV scores per class (red, *: significant after Bonferroni; —: random-vs-random mean)",
                 fontsize=9)
    return save(fig, path)
