"""The report's content, once, from ``metrics.json``: a list of sections that ``report.md`` and ``report.html``
render alike. A section is a title and blocks: a paragraph, a finding, a table (rows and the keys to show) or a
figure (a file under ``figures/``: the HTML page shows it, the Markdown page names it in its text)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xaicore.atomic import write_text
from xaicore.report.blocks import Section, Table, cell  # noqa: F401  (re-exported)
from xaicore.report.findings import VERDICTS


def _with(rows: list[dict[str, Any]], keys: list[str]) -> Table:
    return Table(rows, [k for k in keys if any(k in r for r in rows)] if rows else keys)


def similarity_rows(doc: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Mean SSIM of each method's heatmaps to the trained model's, per control model (columns)."""
    controls = list(dict.fromkeys(r["model"] for r in doc["rows"] if r["model"] != "trained"))
    by = {(r["model"], r["explainer"]): r.get("similarity_ssim") for r in doc["rows"]}
    explainers = list(dict.fromkeys(r["explainer"] for r in doc["rows"]))
    rows = [{"explainer": e, **{m: by.get((m, e)) for m in controls}} for e in explainers]
    return rows, ["explainer", *controls]


def sections(doc: dict[str, Any]) -> list[Section]:
    """The report's sections in reading order."""
    out = [Section("Heatmaps", [
        "Every method's heatmaps of the trained model on a test sample of each class in turn "
        "(figures/heatmaps_trained.png) and along the cascading randomization (figures/cascading_grid.png): "
        "red = positive, blue = negative relevance, white = 0."], figures=["heatmaps_trained.png"])]
    out.append(Section("Published findings, checked on this run", list(doc["findings"])))
    trained = [r for r in doc["rows"] if r["model"] == "trained"]
    keys = [k for k in (trained[0] if trained else {}) if k.startswith(("aopc_", "faithfulness_"))
            and k.count("_") >= 2]
    keys = ["explainer"] + keys + ["conservation_error", "positive_fraction", "invariance", "roar_accuracy",
                                   "kar_accuracy"]
    out.append(Section("Trained model, per method", [
        "AOPC MoRF and faithfulness: higher is better; AOPC LeRF, the conservation error and the invariance error: "
        "lower is better; ROAR accuracy lower, KAR accuracy higher is better.",
        _with(trained, keys)], figures=["aopc_curves.png", "roar_kar.png", "roar_fills.png", "input_invariance.png"]))
    sim, sim_keys = similarity_rows(doc)
    out.append(Section("Sanity checks: similarity to the trained model's heatmaps", [
        "Mean SSIM of each method's heatmaps on a control (randomized weights or labels) to its heatmaps on the "
        "trained model (Adebayo et al.): lower is better, a method that passes depends on what was randomized.",
        Table(sim, sim_keys)], figures=["cascading_grid.png", "cascading_randomization.png"]))
    rel = [Section("Sanity checks for metrics (Tomsett et al.)")]
    sets = doc.get("reliability_sets", {})
    if sets.get("duplicates_dropped"):
        rel[0].blocks.append(
            "Method sets: `full` (every method), `deduplicated` (without "
            + ", ".join(f"{d} (= {k})" for d, k in sets["duplicates_dropped"].items())
            + f", equal to within {sets.get('duplicate_tolerance')} of the larger max |R|) and `tomsett_like` "
            f"({', '.join(sets.get('tomsett_like', []))}).")
    rel[0].blocks += [
        "Krippendorff's α over samples as raters (inter-rater) and the mean Spearman ρ between methods' rankings "
        "(inter-method): higher is better (1: the metric ranks the methods alike every time).",
        Table(doc["reliability"], ["metric", "set", "raters", "n_raters", "n_methods", "inter_rater_alpha",
                                   "inter_method_rho"])]
    out += rel
    if doc.get("perturbation_methods"):
        pm = doc["perturbation_methods"]
        out.append(Section("Perturbation methods (§6): rank among all methods", [
            "AOPC MoRF on the trained model per perturbation (rank 1 = highest AOPC = best; beats_random: above the "
            "uniform-noise baseline), and the cascading randomization check at the fully randomized model (mean "
            "similarity to the trained model's heatmap; rank 1 = least similar = most model-dependent). "
            "surrogate_r2: LIME's weighted fidelity on its neighbourhood.",
            Table(pm, list(dict.fromkeys(k for r in pm for k in r)))]))
    cem = {e: v for e, v in doc.get("extras", {}).items() if e.startswith("cem.")}
    if cem:
        out.append(Section("CEM (§6.3): pertinent positives and negatives of the trained model", [
            "found: the fraction of samples with a valid PP/PN (class condition with margin κ); l0: the mean number "
            "of pixels kept (PP) or added (PN); c: the mean constant of the best iterate. Figure: figures/cem.png.",
            Table([{"explainer": e, **{k: v.get(k) for k in ("found", "l0", "c")}} for e, v in cem.items()],
                  ["explainer", "found", "l0", "c"])], figures=["cem.png"]))
    if doc.get("maximize"):
        out.append(Section("Activation maximisation (§6.6): class maximisers of the trained model and its controls", [
            "own_class_rate: the fraction of classes whose maximiser the model itself assigns to that class (higher: "
            "the optimisation worked); trained_class_rate: the fraction the *trained* model recognises (a randomized "
            "control's maximisers should not look like the data: lower is the sane outcome for the controls); "
            "reconstruction_error: the autoencoder's mean squared error on the maximisers (lower looks more like "
            "the training images). Figure: figures/maximize.png.",
            Table([{"model": m, "parameterization": p, **v} for m, ps in doc["maximize"].items()
                   for p, v in ps.items()],
                  ["model", "parameterization", "own_class_rate", "trained_class_rate", "reconstruction_error"])],
            figures=["maximize.png"]))
    if doc.get("branches"):
        from xaicore.report.branches import branch_section

        out.append(branch_section(doc["branches"].get("tabular"), doc["branches"].get("text")))
    if doc.get("analysis"):
        from xaicore.report.analysis import analysis_section

        out.append(analysis_section(doc["analysis"]))
    ic = doc["internal_consistency"]
    notes = [f"Internal consistency (mean Spearman ρ between metrics, signed so that + is agreement): {ic['mean']}"
             if ic["mean"] is not None else f"Internal consistency: {ic['note']}."]
    if any("roar_accuracy" in r for r in trained):
        notes.append(
            "Reading ROAR/KAR: pixels are replaced by the training set's per-channel mean, which differs from "
            + ("an empty background (digits: mean ≈ 0.16 on a 0 background)" if doc.get("dataset") in
               ("digits", "mnist") else "most of the pixels around them")
            + ". The replaced pixels then keep the *shape* of what was removed, and a retrained model can read the "
            "class from that silhouette — high accuracy at 90 % removal says the removal pattern leaks the label, "
            "not that the heatmap missed what matters (Hooker et al. discuss what degraded inputs reveal).")
    out.append(Section("Notes", notes))
    if doc.get("pattern_quality"):
        quality = [{"model": m, "layer": layer, **{e: q[e].get(layer) for e in q}}
                   for m, q in doc["pattern_quality"].items() for layer in next(iter(q.values()))]
        out.append(Section("Signal estimators of PatternNet/PatternAttribution (Kindermans et al. 2018)", [
            "ρ(S) = 1 − max_v corr(y, vᵀ(x − S(x))) per layer (mean over its units; 1 = the distractor holds no "
            "linear trace of the output; higher is better): patterns and v fitted on the training set, the "
            "correlation measured on the test set. S_a is the optimum of this linear criterion on its fitting "
            "data (ρ = 1 there); S_w keeps the output's trace in its distractor.",
            Table(quality, ["model", "layer", "filter", "linear", "two_component"])]))
    models = sorted({r["model"] for r in doc["rows"]}, key=lambda m: (m != "trained", m))
    grad = {r["model"]: r for r in doc["rows"] if r["explainer"] == "gradient"}
    out.append(Section("Models", [Table([{"model": m, "test_accuracy": grad.get(m, {}).get("test_accuracy")}
                                         for m in models], ["model", "test_accuracy"])]))
    return out


def _md_table(t: Table) -> list[str]:
    out = ["| " + " | ".join(t.keys) + " |", "|" + "---|" * len(t.keys)]
    out += ["| " + " | ".join(cell(r.get(k)) for k in t.keys) + " |" for r in t.rows]
    return out + [""]


def _md_finding(f: dict[str, Any]) -> list[str]:
    lines = [f"- {f['claim']} ({f['source']}): **{VERDICTS[f['holds']]}**.", f"  Rule: {f.get('rule', '-')}."]
    if f.get("reason") and f["reason"] != f.get("rule"):
        lines.append(f"  Why: {f['reason']}.")
    if f.get("divergence"):
        lines.append(f"  What could explain it: {f['divergence']}")
    return lines + [f"  Evidence: `{f['evidence']}`", ""]


def write_report(doc: dict[str, Any], path: Path) -> Path:
    """``report.md``: the sections of :func:`sections` as Markdown (the figures are in the HTML page)."""
    lines = [f"# xaicore survey report — {doc['dataset']}, {doc['n_samples']} test samples", ""]
    for s in sections(doc):
        lines += [f"## {s.title}", ""]
        for b in s.blocks:
            lines += _md_table(b) if isinstance(b, Table) else _md_finding(b) if isinstance(b, dict) else [b, ""]
    return write_text(path, "\n".join(lines))


__all__ = ["Section", "Table", "cell", "sections", "similarity_rows", "write_report"]
