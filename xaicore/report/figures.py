"""The survey's figures as PNG: AOPC perturbation curves (Samek et al. 2017) and the cascading
randomization curve (Adebayo et al. 2018, Fig. 2's shape)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

from xaicore.pipeline.paths import Paths  # noqa: E402
from xaicore.store import SCORES_SCHEMA, open_archive  # noqa: E402

_META = {"Software": "xaicore"}  # no timestamps or versions: figures are reproducible bytes


def aopc_curves_figure(scores: xr.Dataset, path: Path, model: str = "trained") -> Path:
    """Mean drop f(x⁽⁰⁾) − f(x⁽ᵏ⁾) against k, MoRF and LeRF side by side, one line per explainer."""
    curve = scores["aopc_curve"].sel(model=model).isel(perturbation=0).values  # explainer, order, sample, step
    orders = [str(o) for o in scores.order.values]
    fig, axes = plt.subplots(1, len(orders), figsize=(5 * len(orders), 3.8), squeeze=False, sharey=True)
    for oi, (ax, order) in enumerate(zip(axes[0], orders, strict=True)):
        for ei, name in enumerate(str(e) for e in scores.explainer.values):
            drop = (curve[ei, oi, :, :1] - curve[ei, oi]).mean(0)
            aopc = float(drop.mean())
            ax.plot(np.arange(drop.size), drop, label=f"{name} (AOPC {aopc:.2f})",
                    linestyle="--" if name == "random" else "-")
        ax.set_title(f"{order.upper()} — {model}")
        ax.set_xlabel("perturbation step k (regions disabled)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel(f"mean f(x⁽⁰⁾) − f(x⁽ᵏ⁾)  [{scores.attrs.get('score', 'logit')}]")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_META)
    plt.close(fig)
    return path


def cascading_figure(scores: xr.Dataset, path: Path) -> Path:
    """Similarity of each method's heatmaps to the trained model's as layers are randomized top-down."""
    models = [str(m) for m in scores.model.values]
    steps = ["trained"] + [m for m in models if m.startswith("cascade:")]
    sim = scores["sanity_similarity"].sel(model=steps).mean("sample")
    measures = [str(q) for q in scores.measure.values]
    fig, axes = plt.subplots(1, len(measures), figsize=(5 * len(measures), 3.8), squeeze=False, sharey=True)
    for ax, measure in zip(axes[0], measures, strict=True):
        for name in (str(e) for e in scores.explainer.values):
            ax.plot(range(len(steps)), sim.sel(explainer=name, measure=measure).values, marker="o", label=name,
                    linestyle="--" if name == "random" else "-")
        ax.set_xticks(range(len(steps)))
        ax.set_xticklabels(["original"] + [s.split(":", 1)[1] for s in steps[1:]], rotation=30)
        ax.set_title(f"cascading randomization — {measure}")
        ax.set_xlabel("randomized down to layer")
        ax.axhline(0.0, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0][0].set_ylabel("rank correlation with the trained model's heatmap")
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata=_META)
    plt.close(fig)
    return path


def make_figures(paths: Paths) -> list[Path]:
    """Write every figure under ``paths.figures``; returns their paths."""
    scores = open_archive(paths.scores, schema=SCORES_SCHEMA)
    paths.figures.mkdir(parents=True, exist_ok=True)
    return [aopc_curves_figure(scores, paths.figures / "aopc_curves.png"),
            cascading_figure(scores, paths.figures / "cascading_randomization.png")]
