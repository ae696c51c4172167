"""``metrics.json`` and ``metrics.csv``: one row per model × explainer, with every score's direction."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from xaicore.pipeline.paths import Paths
from xaicore.pipeline.steps import read_index
from xaicore.store import HEATMAP_SCHEMA, SCORES_SCHEMA, open_archive

DIRECTIONS = {
    "aopc_morf": "higher is better (the most relevant regions first destroy the score fastest)",
    "aopc_lerf": "lower is better (the least relevant regions first leave the score intact)",
    "conservation_error": "lower is better (0: conservative, survey eq. 1)",
    "positive_fraction": "1 means positive (survey §4.3)",
    "consistent_fraction": "share of heatmaps both conservative (error < 1e-2) and positive",
    "similarity_spearman": "for controls: lower is better (the method depends on what was randomized)",
    "similarity_spearman_abs": "for controls: lower is better",
    "test_accuracy": "of the model on the test split",
}


def _num(v: Any) -> float | None:
    v = float(v)
    return None if math.isnan(v) else round(v, 6)


def aggregate_metrics(paths: Paths) -> dict[str, Any]:
    """Summarize the heatmap and score archives into ``paths.metrics`` (+ ``.csv``); returns the document."""
    hm = open_archive(paths.heatmaps, schema=HEATMAP_SCHEMA)
    sc = open_archive(paths.scores, schema=SCORES_SCHEMA)
    accuracy = {**{k: v["test_accuracy"] for k, v in read_index(paths.models).items()},
                **{k: v["test_accuracy"] for k, v in read_index(paths.controls).items()}}
    cons = hm["conservation_error"].values
    pos = hm["positive_fraction"].values
    aopc = sc["aopc"].values  # model, explainer, perturbation, order
    sim = sc["sanity_similarity"].values  # model, explainer, measure, sample
    orders = [str(o) for o in sc.order.values]
    perturbations = [str(p) for p in sc.perturbation.values]
    measures = [str(m) for m in sc.measure.values]
    rows = []
    for mi, model in enumerate(str(m) for m in hm.model.values):
        for ei, explainer in enumerate(str(e) for e in hm.explainer.values):
            row: dict[str, Any] = {"model": model, "explainer": explainer,
                                   "test_accuracy": _num(accuracy.get(model, float("nan")))}
            for pi, p in enumerate(perturbations):
                for oi, o in enumerate(orders):
                    key = f"aopc_{o}" if len(perturbations) == 1 else f"aopc_{o}_{p}"
                    row[key] = _num(aopc[mi, ei, pi, oi])
            row["conservation_error"] = _num(np.median(cons[mi, ei]))
            row["positive_fraction"] = _num(pos[mi, ei].mean())
            row["consistent_fraction"] = _num(((cons[mi, ei] < 1e-2) & (pos[mi, ei] == 1.0)).mean())
            for qi, q in enumerate(measures):
                row[f"similarity_{q}"] = _num(np.nanmean(sim[mi, ei, qi]))
            rows.append(row)
    doc = {
        "dataset": hm.attrs.get("dataset"),
        "n_samples": int(hm.sizes["sample"]),
        "region": int(sc.attrs.get("region", 0)),
        "score": sc.attrs.get("score"),
        "directions": DIRECTIONS,
        "note": "conservation_error is the median over heatmaps of |sum R - f(x)| / |f(x)|",
        "rows": rows,
    }
    paths.metrics.parent.mkdir(parents=True, exist_ok=True)
    paths.metrics.write_text(json.dumps(doc, indent=1))
    csv_path = paths.metrics.with_suffix(".csv")
    with csv_path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return doc


def read_metrics(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def flat_metrics(path: str | Path) -> dict[str, float]:
    """metrics.json as ``{"<model>/<explainer>/<metric>": value}`` for trackers that take flat numbers."""
    out: dict[str, float] = {}
    for row in read_metrics(path)["rows"]:
        for k, v in row.items():
            if k not in ("model", "explainer") and isinstance(v, int | float):
                name = f"{row['model']}/{row['explainer']}/{k}".replace(":", "_")
                out[name] = float(v)
    return out
