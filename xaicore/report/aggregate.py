"""``metrics.json``/``metrics.csv`` (one row per model × explainer, every score with its direction),
``reliability.csv`` (Tomsett et al.'s sanity checks for metrics) and ``report.md`` (the published findings,
checked against this run's numbers)."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xaicore.atomic import write_text
from xaicore.metrics import METRICS, inter_method_reliability, inter_rater_reliability, internal_consistency
from xaicore.outputs import TRAINED, Paths, read_index
from xaicore.report.document import write_report
from xaicore.report.findings import findings, perturbation_methods
from xaicore.store import HEATMAP_SCHEMA, SCORES_SCHEMA, explained_counts, open_archive

#: metrics.json's ``directions``: per column (pattern) of metrics.csv/reliability.csv, the declared metric's note
#: (xaicore.metrics.declarations), or what a column that is no metric holds
DIRECTIONS = {column: METRICS[name].note if name in METRICS else name for column, name in {
    "aopc_morf*": "aopc_morf",
    "aopc_lerf*": "aopc_lerf",
    "faithfulness*": "faithfulness",
    "conservation_error": "conservation_error",
    "positive_fraction": "positive_fraction",
    "consistent_fraction": "share of heatmaps both conservative (error < 1e-2) and positive",
    "similarity_*": "sanity_similarity",
    "invariance": "invariance",
    "roar_accuracy": "roar_accuracy",
    "kar_accuracy": "kar_accuracy",
    "inter_rater_alpha": "inter_rater_reliability",
    "inter_method_rho": "inter_method_reliability",
    "test_accuracy": "of the model on the test split",
}.items()}


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 6)


def _nanmean(a: np.ndarray) -> float:
    return float(np.nanmean(a)) if np.isfinite(a).any() else float("nan")


def _rows(hm, sc, roar, accuracy: dict[str, float]) -> list[dict[str, Any]]:
    cons, pos = hm["conservation_error"].values, hm["positive_fraction"].values
    aopc, sim = sc["aopc"].values, sc["sanity_similarity"].values
    perts, orders = [str(p) for p in sc.perturbation.values], [str(o) for o in sc.order.values]
    measures = [str(m) for m in sc.measure.values]
    faith = sc["faithfulness"].values if "faithfulness" in sc else None
    inv = sc["invariance"] if "invariance" in sc else None
    explained = explained_counts(hm)
    rows = []
    for mi, model in enumerate(str(m) for m in hm.model.values):
        for ei, explainer in enumerate(str(e) for e in hm.explainer.values):
            row: dict[str, Any] = {"model": model, "explainer": explainer,
                                   "test_accuracy": _num(accuracy.get(model, float("nan")))}
            for oi, o in enumerate(orders):
                row[f"aopc_{o}"] = _num(aopc[mi, ei, 0, oi])  # the first perturbation (uniform by default)
            for pi, p in enumerate(perts):
                for oi, o in enumerate(orders):
                    row[f"aopc_{o}_{p}"] = _num(aopc[mi, ei, pi, oi])
                if faith is not None:
                    row[f"faithfulness_{p}"] = _num(_nanmean(faith[mi, ei, pi]))
            row["conservation_error"] = _num(np.nanmedian(cons[mi, ei]) if np.isfinite(cons[mi, ei]).any()
                                             else float("nan"))
            row["positive_fraction"] = _num(_nanmean(pos[mi, ei]))
            n = explained[mi]  # of the samples the model explained
            row["consistent_fraction"] = _num(((cons[mi, ei, :n] < 1e-2) & (pos[mi, ei, :n] == 1.0)).mean())
            for qi, q in enumerate(measures):
                row[f"similarity_{q}"] = _num(_nanmean(sim[mi, ei, qi]))
            if inv is not None and model == TRAINED:
                row["invariance"] = _num(_nanmean(inv.sel(explainer=explainer).values))
            if roar is not None and model == TRAINED and explainer in roar.explainer.values:
                for mode in (str(m) for m in roar.mode.values):
                    acc = roar["roar_accuracy"].sel(mode=mode, explainer=explainer).values
                    row[f"{mode}_accuracy"] = _num(acc.mean())
            rows.append(row)
    return rows


#: distinct method families, as in Tomsett et al.'s comparison (those of explain.methods that ran)
TOMSETT_LIKE = ("gradient", "gradient_x_input", "integrated_gradients", "guided_backprop", "lrp.epsilon",
                "deeplift", "random")
DUPLICATE_TOL = 1e-6


def duplicate_methods(relevance: np.ndarray, names: list[str], tol: float = DUPLICATE_TOL) -> dict[str, str]:
    """``{method: the earlier method whose heatmaps it equals}`` for ``relevance`` (explainer, sample, ...): equal
    means max |a − b| ≤ tol · max(|a|, |b|) over all samples (e.g. ``lrp.z`` and Gradient×Input on ReLU nets).
    Methods with NaN heatmaps (not applicable) never match; the first of equal methods, in ``names`` order, stays."""
    dropped: dict[str, str] = {}
    kept: list[int] = []
    for j, name in enumerate(names):
        a = relevance[j]
        if np.isfinite(a).all():
            for i in kept:
                b = relevance[i]
                scale = max(float(np.abs(a).max()), float(np.abs(b).max()))
                if float(np.abs(a.astype(np.float64) - b).max()) <= tol * scale:
                    dropped[name] = names[i]
                    break
        if name not in dropped:
            kept.append(j)
    return dropped


def method_sets(hm, explainers: list[str]) -> tuple[dict[str, list[str]], dict[str, str]]:
    """The method sets the reliability is judged on: ``full`` (every method), ``deduplicated`` (without methods
    whose trained-model heatmaps equal an earlier one's) and ``tomsett_like`` (distinct families); and the
    dropped duplicates."""
    rel = hm["relevance"].sel(model=TRAINED, explainer=explainers).values
    dropped = duplicate_methods(rel, explainers)
    return {"full": list(explainers), "deduplicated": [e for e in explainers if e not in dropped],
            "tomsett_like": [e for e in TOMSETT_LIKE if e in explainers]}, dropped


def reliability(sc, roar, sets: dict[str, list[str]] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Tomsett et al.'s inter-rater (Krippendorff α) and inter-method (Spearman ρ) reliability of each metric
    on the trained model, for each method set of ``sets`` (default: every method as ``full``; the ``set`` column),
    plus the internal consistency between metrics (every method). For ROAR/KAR (``full`` only) the "raters" are
    the retrained models (fraction × repeat), which each rank the methods by accuracy."""
    explainers = [str(e) for e in sc.explainer.values]
    sets = sets or {"full": explainers}
    per_sample: dict[str, np.ndarray] = {}
    for p in (str(p) for p in sc.perturbation.values):
        for o in (str(o) for o in sc.order.values):
            per_sample[f"aopc_{o}_{p}"] = sc["aopc_per_sample"].sel(model=TRAINED, perturbation=p, order=o).values.T
        if "faithfulness" in sc:
            per_sample[f"faithfulness_{p}"] = sc["faithfulness"].sel(model=TRAINED, perturbation=p).values.T
    usable = [j for j, e in enumerate(explainers) if all(np.isfinite(a[:, j]).any() for a in per_sample.values())]
    if usable:  # the samples the trained model explained (all, unless explain.samples budgets it)
        scored = np.all([np.isfinite(a[:, usable]).any(1) for a in per_sample.values()], axis=0)
        per_sample = {k: v[scored] for k, v in per_sample.items()}
    rows = []
    for set_name, members in sets.items():
        cols = [j for j in usable if explainers[j] in members]
        if len(cols) < 2:
            continue
        for name, scores in per_sample.items():
            rows.append({"metric": name, "set": set_name, "raters": "samples", "n_raters": int(scores.shape[0]),
                         "n_methods": len(cols),
                         "inter_rater_alpha": _num(inter_rater_reliability(scores[:, cols])),
                         "inter_method_rho": _num(inter_method_reliability(scores[:, cols]).mean)})
    per_sample = {k: v[:, usable] for k, v in per_sample.items()}
    if roar is not None:
        for mode in (str(m) for m in roar.mode.values):
            acc = roar["roar_accuracy"].sel(mode=mode).values  # explainer, fraction, repeat
            cells = acc.reshape(acc.shape[0], -1).T  # (fraction x repeat, explainer)
            if cells.shape[0] >= 2:
                rows.append({"metric": f"{mode}_accuracy", "set": "full",
                             "raters": "retrained models (fraction x repeat)",
                             "n_raters": int(cells.shape[0]), "n_methods": int(cells.shape[1]),
                             "inter_rater_alpha": _num(inter_rater_reliability(cells)),
                             "inter_method_rho": _num(inter_method_reliability(cells).mean)})
    from xaicore.metrics import DIRECTIONS as SIGNS

    signs = {k: SIGNS.get(k.rsplit("_", 1)[0], 1) for k in per_sample}
    if len(per_sample) < 2:  # one perturbation, one order, no faithfulness: nothing to compare
        return rows, {"metrics": list(per_sample), "spearman": [], "mean": None,
                      "note": "needs two metrics (score.perturbations x score.orders, faithfulness); one was scored"}
    ic = internal_consistency(per_sample, directions=signs)
    consistency = {"metrics": list(ic.names), "spearman": [[_num(v) for v in r] for r in ic.matrix],
                   "mean": _num(ic.mean), "note": "scores signed so that a positive rho means agreement"}
    return rows, consistency


def aggregate_metrics(paths: Paths) -> dict[str, Any]:
    """Summarize the archives into ``metrics.json``, ``metrics.csv``, ``reliability.csv`` and ``report.md``."""
    hm = open_archive(paths.heatmaps, schema=HEATMAP_SCHEMA)
    sc = open_archive(paths.scores, schema=SCORES_SCHEMA, verify=True)
    roar = open_archive(paths.roar, verify=True) if paths.roar.exists() else None
    accuracy = {**{k: v["test_accuracy"] for k, v in read_index(paths.models).items()},
                **{k: v["test_accuracy"] for k, v in read_index(paths.controls).items()}}
    rows = _rows(hm, sc, roar, accuracy)
    sets, dropped = method_sets(hm, [str(e) for e in sc.explainer.values])
    rel_rows, consistency = reliability(sc, roar, sets)
    doc = {
        "dataset": hm.attrs.get("dataset"),
        "image_shape": [int(hm.sizes[d]) for d in ("channel", "y", "x") if d in hm.sizes],
        "n_samples": int(hm.sizes["sample"]),
        "region": int(sc.attrs.get("region", 0)),
        "score": sc.attrs.get("score"),
        "directions": DIRECTIONS,
        "note": "conservation_error is the median over heatmaps of |sum R - f(x)| / |f(x)|; aopc_morf/aopc_lerf "
                "are those of the first perturbation; null: not computed (score.models) or not applicable",
        "rows": rows,
        # the trained model's AOPC (first perturbation) as nested numbers: what `dvc metrics show/diff` lists
        "aopc": {r["explainer"]: {o: r.get(f"aopc_{o}") for o in ("morf", "lerf") if r.get(f"aopc_{o}") is not None}
                 for r in rows if r.get("model") == TRAINED},
        "reliability": rel_rows,
        "reliability_sets": {**sets, "duplicates_dropped": dropped, "duplicate_tolerance": DUPLICATE_TOL},
        "internal_consistency": consistency,
    }
    if paths.pattern_quality.is_file():  # ρ(S) of PatternNet's signal estimators, per model, estimator and layer
        doc["pattern_quality"] = json.loads(paths.pattern_quality.read_text())
    if roar is not None:
        doc["roar_trained_test_accuracy"] = _num(roar.attrs.get("trained_test_accuracy", float("nan")))
    # sorted: a Zarr store lists its arrays in the file system's order, which metrics.json's bytes must not follow
    extras = sorted(k for k in hm.data_vars if hm[k].dims == ("model", "explainer", "sample")
                    and k not in ("conservation_error", "positive_fraction"))
    doc["extras"] = {str(e): {k: _num(_nanmean(hm[k].sel(model=TRAINED, explainer=e).values)) for k in extras
                              if np.isfinite(hm[k].sel(model=TRAINED, explainer=e).values).any()}
                     for e in hm.explainer.values}
    doc["extras"] = {e: v for e, v in doc["extras"].items() if v}
    if paths.maximize.exists():  # activation maximisation of the class logits, per model and parameterization
        mx = open_archive(paths.maximize, verify=True)
        units = mx.unit.values
        doc["maximize"] = {
            str(m): {str(p): {"own_class_rate": _num(float(mx["own_class"].sel(model=m, parameterization=p).mean())),
                              "trained_class_rate": _num(float((mx["trained_class"].sel(
                                  model=m, parameterization=p).values == units).mean())),
                              "reconstruction_error": _num(float(mx["reconstruction_error"].sel(
                                  model=m, parameterization=p).mean()))}
                     for p in mx.parameterization.values}
            for m in mx.model.values}
    if paths.analysis.exists():  # the meta methods of §7 on the planted digits
        from xaicore.report.analysis import analysis_summary
        from xaicore.store.schemas import ANALYSIS_SCHEMA

        doc["analysis"] = analysis_summary(open_archive(paths.analysis, schema=ANALYSIS_SCHEMA, verify=True))
        if "truth" in doc["analysis"]:  # each metric's Kendall tau against the causal truth (issue: which is right)
            doc["metrics_vs_truth"] = doc["analysis"]["truth"]["metrics_vs_truth"]
    ran = {kind: path for kind in ("tabular", "text") if (path := paths.branch(kind) / "features.zarr").exists()}
    if ran:  # the tabular and text branches of §6: their scores and anchors
        from xaicore.report.branches import branch_summary
        from xaicore.store.schemas import FEATURES_SCHEMA

        doc["branches"] = {kind: branch_summary(open_archive(path, schema=FEATURES_SCHEMA, verify=True))
                           for kind, path in ran.items()}
    from xaicore.explain import get_explainer, methods

    families = {m: get_explainer(m).family for m in methods()}
    doc["findings"] = findings(doc, sc, roar)
    doc["perturbation_methods"] = perturbation_methods(doc, sc, families)
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    write_text(paths.metrics, json.dumps(doc, indent=1))
    _csv(paths.metrics.with_suffix(".csv"), rows)
    _csv(paths.root / "reliability.csv", rel_rows)
    write_report(doc, paths.root / "report.md")
    _plot_tables(paths.plots, sc, roar)
    return doc


#: the tables of :func:`_plot_tables` and their (x, y) columns, every one written (header only where its curve was
#: not computed), as dvc.yaml declares them
PLOT_TABLES = {"aopc_morf": ("step", "drop"), "aopc_lerf": ("step", "drop"), "roar": ("fraction", "accuracy"),
               "kar": ("fraction", "accuracy")}


def _plot_tables(folder: Path, sc: xr.Dataset, roar: xr.Dataset | None) -> None:
    """The curves of the report's figures as long CSV tables for ``dvc plots`` (dvc.yaml; one line per ``method``
    with the template .dvc/plots/by_method.json): ``aopc_<order>.csv``, the trained model's mean drop
    f(x⁽⁰⁾) − f(x⁽ᵏ⁾) per step (first perturbation), and ``roar.csv``/``kar.csv``, the mean test accuracy after
    retraining per fraction."""
    folder.mkdir(parents=True, exist_ok=True)
    tables: dict[str, list[dict[str, Any]]] = {}
    if TRAINED in [str(m) for m in sc.model.values]:
        pert = str(sc.perturbation.values[0])
        for order in (str(o) for o in sc.order.values):
            curve = np.asarray(sc["aopc_curve"].sel(model=TRAINED, perturbation=pert, order=order).values)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a method not scored: no line
                drop = np.nanmean(curve[:, :, :1] - curve, 1)  # (explainer, step)
            tables[f"aopc_{order}"] = [{"step": k, "method": str(e), "drop": _num(drop[i, k])}
                                       for i, e in enumerate(sc.explainer.values) for k in range(drop.shape[1])
                                       if np.isfinite(drop[i, k])]
    if roar is not None:
        for mode in (str(m) for m in roar.mode.values):
            acc = roar["roar_accuracy"].sel(mode=mode)
            mean = np.asarray(acc.mean("repeat").values)  # (explainer, fraction)
            tables[mode] = [{"fraction": float(f), "method": str(e), "accuracy": _num(mean[i, j])}
                            for i, e in enumerate(acc.explainer.values) for j, f in enumerate(roar.fraction.values)
                            if np.isfinite(mean[i, j])]
    for name, (x, y) in PLOT_TABLES.items():
        rows = tables.get(name)
        if rows:
            _csv(folder / f"{name}.csv", rows)
        else:
            write_text(folder / f"{name}.csv", f"{x},method,{y}\n")


def _csv(path: Path, rows: list[dict[str, Any]]) -> None:
    fields = list(dict.fromkeys(k for r in rows for k in r))
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buf.getvalue())


def read_metrics(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def flat_metrics(path: str | Path) -> dict[str, float]:
    """metrics.json as ``{"<model>/<explainer>/<metric>": value}`` for trackers that take flat numbers."""
    doc = read_metrics(path)
    out: dict[str, float] = {}
    for row in doc["rows"]:
        for k, v in row.items():
            if k not in ("model", "explainer") and isinstance(v, int | float):
                out[f"{row['model']}/{row['explainer']}/{k}".replace(":", "_")] = float(v)
    for model, estimators in doc.get("pattern_quality", {}).items():
        for est, layers in estimators.items():
            for layer, rho in layers.items():
                if isinstance(rho, int | float) and rho == rho:
                    out[f"pattern_quality/{model}/{est}/{layer}".replace(":", "_")] = float(rho)
    for row in doc.get("reliability", []):
        for k in ("inter_rater_alpha", "inter_method_rho"):
            if isinstance(row.get(k), int | float):
                where = row["metric"] if row.get("set", "full") == "full" else f"{row['set']}/{row['metric']}"
                out[f"reliability/{where}/{k}"] = float(row[k])
    return out
