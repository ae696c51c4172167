"""The report's part for the tabular and text branches of survey §6 (``outputs/<kind>/features.zarr``, schema
``xaicore.features/1``, :mod:`xaicore.pipeline.branch_step`): a summary per branch for ``metrics.json``, their
section of the report, and two figures — explainVis of the tabular rows (Robnik-Šikonja & Kononenko 2008, the
survey's Fig. 9) and per-word heatmaps of the sentences. The anchors' rules are shown as a table: a rule is text,
and a table of rules with their precision and coverage reads better than any drawing of them."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from xaicore.errors import XaiCoreError  # noqa: E402
from xaicore.report.explainvis import MEASURE_LABELS, explainvis, model_explanation  # noqa: E402
from xaicore.store import open_archive  # noqa: E402
from xaicore.store.schemas import FEATURES_SCHEMA

# those of :mod:`xaicore.pipeline.branch_step`, which the report does not import (torch, the explainers)

N_ANCHORS = 10  # the anchors shown per branch
WRAP = 20  # characters per line of a sentence in the words figure
_CHAR_IN = 9 * 0.6 / 72  # the width of a monospace character at 9 pt, in inches
Save = Callable[[Any, Path], Path]


def _num(v: Any) -> float | None:
    v = float(v)
    return round(v, 6) if np.isfinite(v) else None


def _model(ds: xr.Dataset) -> str:
    return str(ds.model.values[0])


def _folder(ds: xr.Dataset, folder: str | Path | None = None) -> Path | None:
    """The branch's folder: ``folder``, else the one holding the archive the dataset was opened from."""
    if folder is not None:
        return Path(folder)
    source = ds.encoding.get("source")
    return Path(source).parent if source else None


def class_names(ds: xr.Dataset, folder: str | Path | None = None) -> list[str]:
    """The class names: the archive's ``class_names`` attribute, else those of ``dataset.npz`` beside it, else
    ``class k``."""
    names = ds.attrs.get("class_names")
    if isinstance(names, str):
        names = json.loads(names)
    where = _folder(ds, folder)
    if not names and where is not None and (where / "dataset.npz").is_file():
        try:
            with np.load(where / "dataset.npz", allow_pickle=False) as z:
                names = json.loads(str(z["dataset_meta"])).get("class_names") if "dataset_meta" in z.files else None
        except (OSError, ValueError, KeyError):
            names = None
    k = int(max(ds["target"].max(), ds["label"].max(), ds["prediction"].max())) + 1
    names = [str(n) for n in names or []]
    return names if len(names) >= k else [f"class {c}" for c in range(k)]


def explained(ds: xr.Dataset) -> list[str]:
    """The explainers with relevance values (not all NaN), ``random`` last."""
    rel = ds["relevance"].sel(model=_model(ds)).values
    names = [str(e) for i, e in enumerate(ds.explainer.values) if np.isfinite(rel[i]).any()]
    return [e for e in names if e != "random"] + [e for e in names if e == "random"]


def measure(ds: xr.Dataset, method: str) -> str | None:
    """The method's ``measure`` (pda) as the archive's ``method_params`` record it (params.yaml's); None when
    params.yaml left it to the method's default."""
    params = json.loads(ds.attrs.get("method_params", "{}")).get(method, {})
    return str(params["measure"]) if "measure" in params else None


def explainvis_method(ds: xr.Dataset) -> str | None:
    """What explainVis shows: ``pda`` (the survey's Fig. 9), else the first other explained method."""
    names = explained(ds)
    return "pda" if "pda" in names else next((e for e in names if e not in ("random", "anchors")), None)


def explainvis_data(ds: xr.Dataset, *, method: str = "pda", n: int = 3) -> dict[str, Any]:
    """What :func:`explainvis_figure` draws: ``relevance``/``bins`` (n, F) of the first ``n`` explained rows,
    ``model_expl`` (per column, the mean relevance of each bin over every explained row), ``names``,
    ``value_names``, ``p_class`` (n,), ``classes`` (the target's name per row), ``labels``, ``samples`` and
    ``measure``."""
    if "bin" not in ds.coords:
        raise XaiCoreError("explainVis needs a tabular branch archive (its bin and value coordinates)")
    if method not in explained(ds):
        raise XaiCoreError(f"explainVis: the archive has no {method} relevance (explained: {explained(ds)})")
    rel_all = ds["relevance"].sel(model=_model(ds), explainer=method).values.astype(np.float64)
    bins_all = ds["bin"].values.astype(np.int64)
    values = ds["value"].values
    n_bins = [int(bins_all[:, j].max()) + 1 for j in range(bins_all.shape[1])]
    value_names: list[list[str]] = [[f"bin {b}" for b in range(m)] for m in n_bins]
    for i, j in np.ndindex(bins_all.shape):
        value_names[j][bins_all[i, j]] = str(values[i, j])
    n = min(n, rel_all.shape[0])
    names = class_names(ds)
    target = ds["target"].values[:n]
    return {"relevance": rel_all[:n], "bins": bins_all[:n], "names": [str(f) for f in ds.feature.values],
            "model_expl": model_explanation(rel_all, bins_all, n_bins), "value_names": value_names,
            "p_class": ds["score"].sel(model=_model(ds)).values[:n].astype(np.float64),
            "classes": [names[int(t)] for t in target], "labels": [names[int(c)] for c in ds["label"].values[:n]],
            "samples": [int(s) for s in ds.sample.values[:n]], "measure": measure(ds, method), "n_rows": len(rel_all)}


def explainvis_figure(ds_tabular: xr.Dataset, path: Path, save: Save, *, method: str = "pda", n: int = 3) -> Path:
    """explainVis (the survey's Fig. 9) of the first ``n`` explained rows with ``method``'s relevance for the
    model's prediction: per attribute the row's relevance (dark) beside the model explanation of its value (light:
    the mean relevance of that value over every explained row); p(class|x) of the predicted class on top."""
    d = explainvis_data(ds_tabular, method=method, n=n)
    rel, k = d["relevance"], len(d["names"])
    fig, axes = plt.subplots(1, rel.shape[0], figsize=(4.6 * rel.shape[0], 1.8 + 0.42 * k), squeeze=False,
                             sharex=True)
    label = d["measure"] if d["measure"] in MEASURE_LABELS else f"{method} relevance"
    for i, ax in enumerate(axes[0]):
        explainvis(ax, rel[i], d["bins"][i], d["model_expl"], names=d["names"], value_names=d["value_names"],
                   p_class=float(d["p_class"][i]), class_name=d["classes"][i], measure=label)
        ax.set_title(f"sample {d['samples'][i]} (label {d['labels'][i]})\n{ax.get_title()}", fontsize=9)
    what = MEASURE_LABELS.get(str(d["measure"]), str(d["measure"])) if d["measure"] else \
        "its default measure" if method == "pda" else "relevance"
    fig.suptitle(f"explainVis — {method}, {what}, {ds_tabular.attrs.get('dataset', 'tabular')}: model explanation "
                 f"= mean over the {d['n_rows']} explained rows", fontsize=9)
    return save(fig, Path(path))


def word_colours(relevance: np.ndarray) -> np.ndarray:
    """(T, 4) RGBA of one sentence's words (``bwr``: red positive, blue negative, white 0), scaled to the
    sentence's max |R| (NaN, e.g. padding: grey)."""
    rel = np.asarray(relevance, dtype=np.float64)
    finite = np.isfinite(rel)
    lim = float(np.abs(rel[finite]).max()) if finite.any() else 0.0
    lim = lim or 1.0
    out = plt.get_cmap("bwr")(np.clip(0.5 + 0.5 * np.where(finite, rel, 0.0) / lim, 0.0, 1.0))
    out[~finite] = (0.85, 0.85, 0.85, 1.0)
    return out


def _lines(words: Sequence[str], width: int = WRAP) -> list[list[tuple[int, str, int]]]:
    """The sentence's words wrapped to ``width`` characters: per line (token, word, first character)."""
    lines: list[list[tuple[int, str, int]]] = [[]]
    x = 0
    for t, w in enumerate(words):
        if not w:
            continue
        w = w if len(w) <= width else w[:width - 1] + "…"
        if x and x + len(w) > width:
            lines.append([])
            x = 0
        lines[-1].append((t, w, x))
        x += len(w) + 1
    return lines


def words_figure(ds_text: xr.Dataset, path: Path, save: Save, *, methods: Sequence[str] | None = None,
                 n: int = 6) -> Path:
    """Per-word heatmaps of the first ``n`` sentences (rows) for each method (columns; default every explained
    method, ``random`` last): each word on a box coloured by its relevance for the model's prediction, red
    positive, blue negative, scaled per sentence and method; padding left out."""
    if "word" not in ds_text.coords:
        raise XaiCoreError("the words figure needs a text branch archive (its word coordinate)")
    methods = list(methods) if methods is not None else explained(ds_text)
    if not methods:
        raise XaiCoreError("the words figure: no method has relevance values")
    n = min(n, ds_text.sizes["sample"])
    words = [[str(w) for w in row] for row in ds_text["word"].values[:n]]
    rel = ds_text["relevance"].sel(model=_model(ds_text), explainer=methods).values[:, :n].astype(np.float64)
    names = class_names(ds_text)
    target, label = ds_text["target"].values[:n], ds_text["label"].values[:n]
    score = ds_text["score"].sel(model=_model(ds_text)).values[:n]
    lines = [_lines(w) for w in words]
    heights = [max(len(li), 1) for li in lines]
    col_in = WRAP * _CHAR_IN * 1.12 + 0.25
    fig, axes = plt.subplots(n, len(methods), figsize=(1.4 + col_in * len(methods), 0.5 + 0.3 * sum(heights)),
                             squeeze=False, gridspec_kw={"height_ratios": heights})
    for i in range(n):
        for m, method in enumerate(methods):
            ax = axes[i][m]
            row = rel[m, i]
            colours = word_colours(np.where([bool(w) for w in words[i]], row, np.nan))
            strength = np.abs(np.nan_to_num(row)) / (np.nanmax(np.abs(row)) or 1.0)
            for line, items in enumerate(lines[i]):
                for t, w, x0 in items:
                    txt = ax.text(x0, line + 0.5, w, family="monospace", fontsize=9, va="center", ha="left",
                                  color="white" if strength[t] > 0.7 else "black",
                                  bbox={"boxstyle": "square,pad=0.15", "facecolor": colours[t], "edgecolor": "none"})
                    txt.set_gid(f"{i}:{m}:{t}")
            ax.set_xlim(-0.3, WRAP * 1.12)
            ax.set_ylim(heights[i], 0)
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_visible(False)
            if i == 0:
                ax.set_title(method, fontsize=9)
        axes[i][0].set_ylabel(f"#{int(ds_text.sample.values[i])}\n→ {names[int(target[i])]} ({float(score[i]):.2f})"
                              f"\nlabel {names[int(label[i])]}", rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"relevance of each word for the predicted class — {ds_text.attrs.get('dataset', 'text')} (red: "
                 "for, blue: against; per sentence and method scaled to its max |R|)", fontsize=9)
    return save(fig, Path(path))


def anchors_table(ds: xr.Dataset, n: int = N_ANCHORS) -> list[dict[str, Any]]:
    """The anchors of the first ``n`` explained samples of a tabular or text archive: sample, the row's values or
    the sentence, label, prediction, rule, precision, coverage, found and model calls; [] without anchors."""
    if "anchor_rule" not in ds:
        return []
    sel = ds.sel(model=_model(ds)).isel(sample=slice(0, n))
    names = class_names(ds)
    if "value" in ds.coords:
        shown = ("row", [", ".join(str(v) for v in row) for row in sel["value"].values])
    else:
        shown = ("text", [" ".join(str(w) for w in row if str(w)) for row in sel["word"].values])
    return [{"sample": int(s), shown[0]: shown[1][i], "label": names[int(sel["label"].values[i])],
             "prediction": names[int(sel["prediction"].values[i])], "rule": str(sel["anchor_rule"].values[i]),
             "precision": _num(sel["anchor_precision"].values[i]), "coverage": _num(sel["anchor_coverage"].values[i]),
             "found": bool(sel["anchor_found"].values[i] == 1), "model_calls": int(sel["anchor_model_calls"].values[i])}
            for i, s in enumerate(sel.sample.values)]


def _nanmean(v: np.ndarray) -> float | None:
    v = np.asarray(v, dtype=np.float64)
    return _num(v[np.isfinite(v)].mean()) if np.isfinite(v).any() else None


def branch_summary(ds: xr.Dataset, folder: str | Path | None = None) -> dict[str, Any]:
    """What ``metrics.json`` keeps of a branch archive: the data set, the model's accuracies (``model.json`` in
    ``folder``, default beside the archive), per explainer the MoRF/LeRF AOPC and the mean faithfulness (NaN
    left out), the anchors' means and their first rules (:func:`anchors_table`)."""
    model = _model(ds)
    kind = str(ds.attrs.get("kind", "tabular" if "value" in ds.coords else "text"))
    out: dict[str, Any] = {"kind": kind, "dataset": ds.attrs.get("dataset"), "n_explained": int(ds.sizes["sample"]),
                           "classes": class_names(ds, folder)}
    where = _folder(ds, folder)
    if where is not None and (where / "model.json").is_file():
        info = json.loads((where / "model.json").read_text())
        out["model"] = {k: info.get(k) for k in ("arch", "train_accuracy", "test_accuracy") if k in info}
    done = explained(ds)
    aopc = ds["aopc"].sel(model=model)
    out["explainers"] = [{"explainer": e, **{f"aopc_{o}": _num(aopc.sel(explainer=e, order=o))
                                              for o in (str(o) for o in ds.order.values)},
                          "faithfulness": _nanmean(ds["faithfulness"].sel(model=model, explainer=e).values)}
                         for e in done]
    skipped = json.loads(ds.attrs.get("not_applicable", "{}")).get(model, {})
    out["not_applicable"] = {str(e): skipped.get(str(e), "no relevance") for e in ds.explainer.values
                             if str(e) not in done}
    if "pda" in done:
        out["pda_measure"] = measure(ds, "pda")
    if "anchor_rule" in ds:
        sel = ds.sel(model=model)
        out["anchors"] = {"n": int(ds.sizes["sample"]), "precision": _nanmean(sel["anchor_precision"].values),
                          "coverage": _nanmean(sel["anchor_coverage"].values),
                          "found": _nanmean(sel["anchor_found"].values),
                          "model_calls": _nanmean(sel["anchor_model_calls"].values),
                          "examples": anchors_table(ds)}
    return out


def _setting(s: dict[str, Any]) -> str:
    m = s.get("model", {})
    acc = (f", test accuracy {m['test_accuracy']:.3f} (train {m.get('train_accuracy', float('nan')):.3f})"
           if isinstance(m.get("test_accuracy"), int | float) else "")
    skipped = "; not applicable: " + ", ".join(f"{e} ({r})" for e, r in s["not_applicable"].items()) \
        if s.get("not_applicable") else ""
    return (f"The {s['kind']} branch: data set {s['dataset']}, model {m.get('arch', '')}{acc}; {s['n_explained']} "
            f"test samples explained for the model's prediction (classes: {', '.join(s['classes'])}){skipped}.")


def _anchor_blocks(s: dict[str, Any], what: str) -> list[Any]:
    from xaicore.report.blocks import Table, cell

    a = s.get("anchors")
    if not a:
        return []
    key = "row" if s["kind"] == "tabular" else "text"
    rows = [{**r, "rule": r["rule"] or "(empty: any input)"} for r in a["examples"]]
    found = f"{a['found']:.0%}" if a["found"] is not None else "none"
    return [f"Anchors (Ribeiro et al. 2018) of the {s['kind']} branch: the shortest rule over {what} that keeps the "
            f"prediction with precision ≥ τ on perturbed inputs that satisfy it; coverage: the share of perturbed "
            f"inputs the rule applies to. Over the {a['n']} samples: mean precision {cell(a['precision'])}, mean "
            f"coverage {cell(a['coverage'])}, found for {found} of them (else the most precise rule tried), "
            f"{cell(a['model_calls'])} model calls on average. The first {len(rows)}:",
            Table(rows, ["sample", key, "label", "prediction", "rule", "precision", "coverage", "found",
                         "model_calls"])]


def branch_section(summary_tabular: dict[str, Any] | None, summary_text: dict[str, Any] | None) -> Any:
    """The report's section for the tabular and text branches from :func:`branch_summary`'s dicts (either may be
    None: that branch did not run)."""
    from xaicore.report.blocks import Section, Table

    blocks: list[Any] = [
        "§6's perturbation methods where the survey shows them: on a table and on sentences. Each method explains "
        "the model's prediction; the gradient methods are taken at the embedding of each column or token. Feature "
        "removal scores them as on images, a feature at a time: a column is replaced by its training mean "
        "(numeric) or mode (nominal), a token by the unknown word UNK, most relevant first (MoRF) or least "
        "relevant first (LeRF); AOPC is the mean drop of the predicted class's logit over the steps. Higher MoRF "
        "AOPC is better, lower LeRF AOPC is better; faithfulness is the Pearson ρ between a feature's relevance "
        "and the drop of removing it alone (higher is better, the mean over samples). `random` is the baseline."]
    figures = []
    for s, what in ((summary_tabular, "the row's attribute values"), (summary_text, "the sentence's words")):
        if not s:
            continue
        blocks += [_setting(s), Table(s["explainers"], ["explainer", "aopc_morf", "aopc_lerf", "faithfulness"])]
        if s["kind"] == "tabular":
            pda = f" (pda: the prediction difference, measure {s['pda_measure'] or 'its default'})" \
                if "pda_measure" in s else ""
            blocks.append(
                f"explainVis (Robnik-Šikonja & Kononenko 2008, the survey's Fig. 9){pda}: for each of the first rows, "
                "each attribute's explanation (dark bar: positive speaks for the predicted class, negative against "
                "it) beside the model explanation of its value (light bar: the mean explanation over every "
                "explained row with that value, the model's overall trend), p(class|x) on top. Figure: "
                "figures/explainvis.png.")
            figures.append("explainvis.png")
        else:
            blocks.append(
                "Per-word heatmaps: the first sentences (rows) under each method (columns), each word on a box "
                "coloured by its relevance for the predicted class (red: for, blue: against, white: none), scaled "
                "to the sentence's max |R| per method; padding is left out. Figure: figures/words.png.")
            figures.append("words.png")
        blocks += _anchor_blocks(s, what)
    return Section("Tabular and text data (§6)", blocks, figures=figures)


def open_features(path: str | Path) -> xr.Dataset:
    """A branch's ``features.zarr`` (:func:`xaicore.pipeline.branch_step.open_features`)."""
    return open_archive(path, schema=FEATURES_SCHEMA)


def archive(paths: Any, kind: str) -> Path | None:
    """The branch's ``features.zarr`` under ``paths`` (:class:`xaicore.outputs.Paths`), None when the
    branch did not run."""
    path = paths.branch(kind) / "features.zarr"
    return path if path.exists() else None


__all__ = ["anchors_table", "archive", "branch_section", "branch_summary",
           "class_names", "explained", "explainvis_data", "explainvis_figure", "explainvis_method", "measure",
           "open_features", "word_colours", "words_figure"]
