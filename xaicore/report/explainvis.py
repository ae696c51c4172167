"""explainVis (Robnik-Šikonja & Kononenko 2008; survey §6.4, Fig. 9): the prediction difference of each attribute
of one instance as a horizontal bar, beside the model explanation of the attribute's value.

One row per attribute, labelled ``attribute = value``: the instance's explanation (dark bar; positive: the value
speaks for the class, negative: against it) and the *model explanation* of that value (light bar), the mean
explanation over all instances having the same value (:func:`model_explanation`), which shows the model's overall
trend for it. The model's p(class|x) is on top.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from xaicore.errors import XaiCoreError  # noqa: E402

#: the axis label of each measure of :mod:`xaicore.explain.perturbation.pda` (eqs. 17–20)
MEASURE_LABELS = {"info_diff": "information difference (eq. 17)",
                  "weight_of_evidence": "weight of evidence (eq. 19)",
                  "prob_diff": "difference of probabilities (eq. 20)"}
_DARK, _LIGHT = "0.25", "0.75"


def model_explanation(relevance: np.ndarray, bins: np.ndarray, n_bins: Sequence[int]) -> list[np.ndarray]:
    """Per column j, an (n_bins[j],) array: the mean of ``relevance[:, j]`` over the instances whose
    ``bins[:, j]`` is each value; NaN for a value no instance has. ``relevance`` (N, F) float, ``bins`` (N, F)
    int (e.g. :meth:`xaicore.features.ColumnStats.discretize` of the explained rows)."""
    relevance = np.asarray(relevance, dtype=np.float64)
    bins = np.asarray(bins)
    if relevance.ndim != 2 or bins.shape != relevance.shape:
        raise XaiCoreError(f"model_explanation: relevance {relevance.shape} and bins {bins.shape} must both be "
                           "(N, F)")
    if len(n_bins) != relevance.shape[1]:
        raise XaiCoreError(f"model_explanation: {len(n_bins)} n_bins for {relevance.shape[1]} columns")
    if bins.size and (not np.issubdtype(bins.dtype, np.integer) or bins.min() < 0
                      or (bins >= np.asarray(n_bins)[None]).any()):
        raise XaiCoreError("model_explanation: bins must be integers in 0..n_bins[j]-1 of their column")
    out = []
    for j, m in enumerate(n_bins):
        count = np.bincount(bins[:, j], minlength=m)
        total = np.bincount(bins[:, j], weights=relevance[:, j], minlength=m)
        out.append(np.where(count > 0, total / np.maximum(count, 1), np.nan))
    return out


def _label(name: str, value: str) -> str:
    """``name = value``; a value that already names its attribute (a predicate of
    :meth:`ColumnStats.bin_names`, ``sex = female``, ``2.50 < age <= 7.00``) is the label as it is."""
    return value if re.search(rf"(^|\s){re.escape(name)}(\s|$)", value) else f"{name} = {value}"


def explainvis(ax: Any, relevance_row: np.ndarray, bins_row: np.ndarray, model_expl: Sequence[np.ndarray], *,
               names: Sequence[str], value_names: Sequence[Sequence[str]] | None = None, p_class: float,
               class_name: str, measure: str = "info_diff") -> Any:
    """Draw one instance's explainVis on ``ax`` and return it: per attribute j (top to bottom) the dark bar
    ``relevance_row[j]`` and the light bar ``model_expl[j][bins_row[j]]``, labelled ``names[j] = value`` (the
    value from ``value_names[j][bins_row[j]]``, else the bin index); title ``p(class_name|x) = p_class``."""
    rel = np.asarray(relevance_row, dtype=np.float64).reshape(-1)
    bins = np.asarray(bins_row).reshape(-1).astype(np.int64)
    f = rel.size
    if bins.size != f or len(model_expl) != f or len(names) != f or (value_names is not None
                                                                      and len(value_names) != f):
        raise XaiCoreError(f"explainvis: relevance ({f}), bins ({bins.size}), model explanation "
                           f"({len(model_expl)}), names ({len(names)}) and value_names need one entry per attribute")
    if any(not 0 <= b < len(model_expl[j]) for j, b in enumerate(bins)):
        raise XaiCoreError("explainvis: a bin of the instance is outside its column's model explanation")
    model = np.array([model_expl[j][b] for j, b in enumerate(bins)], dtype=np.float64)
    values = [value_names[j][b] if value_names is not None else str(b) for j, b in enumerate(bins)]
    y = np.arange(f)
    h = 0.38
    ax.barh(y - h / 2, rel, height=h, color=_DARK, label="this instance")
    ax.barh(y + h / 2, model, height=h, color=_LIGHT, label="model: instances with this value")
    ax.axvline(0.0, color="black", lw=0.8)
    ax.set_yticks(y)
    ax.set_yticklabels([_label(n, v) for n, v in zip(names, values, strict=True)], fontsize=8)
    ax.set_ylim(f + 0.5, -0.5)  # the first attribute on top; an empty row at the bottom holds the legend
    ax.set_xlabel(MEASURE_LABELS.get(measure, measure), fontsize=8)
    ax.set_title(f"p({class_name}|x) = {p_class:.2f}", fontsize=9)
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=6, loc="lower center", ncol=2, frameon=False)
    return ax


def plot_explainvis(path: str | Path, relevance: np.ndarray, bins: np.ndarray, model_expl: Sequence[np.ndarray], *,
                    names: Sequence[str], value_names: Sequence[Sequence[str]] | None = None,
                    p_class: Sequence[float] | float, class_name: str, measure: str = "info_diff",
                    titles: Sequence[str] = (), save: Callable[[Any, Path], Path] | None = None) -> Path:
    """A PNG of the explainVis of one instance (``relevance``, ``bins`` (F,)) or several side by side ((n, F),
    ``p_class`` (n,)), sharing the x scale; ``titles``: a line per panel above p(class|x) (e.g. the sample
    index); ``save``: the report's figure writer (default :mod:`xaicore.report.figures`' one)."""
    rel = np.atleast_2d(np.asarray(relevance, dtype=np.float64))
    b = np.atleast_2d(np.asarray(bins))
    p = np.atleast_1d(np.asarray(p_class, dtype=np.float64))
    n = rel.shape[0]
    if b.shape != rel.shape or p.shape != (n,) or (titles and len(titles) != n):
        raise XaiCoreError(f"plot_explainvis: relevance {rel.shape}, bins {b.shape}, p_class {p.shape} and titles "
                           f"({len(titles)}) must describe the same {n} instances")
    if save is None:
        from xaicore.report.canvas import save
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 1.4 + 0.42 * rel.shape[1]), squeeze=False, sharex=True,
                             sharey=False)
    for i, ax in enumerate(axes[0]):
        explainvis(ax, rel[i], b[i], model_expl, names=names, value_names=value_names, p_class=float(p[i]),
                   class_name=class_name, measure=measure)
        if titles:
            ax.set_title(f"{titles[i]}\n{ax.get_title()}", fontsize=9)
    return save(fig, Path(path))
