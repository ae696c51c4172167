"""Sanity checks for metrics: the psychometric reliability tests of Tomsett et al. 2020 (survey §4.5.4).

Inputs are one metric's per-heatmap scores as an (n_samples, n_methods) array (torch or numpy).

* ``inter_rater_reliability`` — do the samples rank the methods alike? Krippendorff's α (ordinal) with the
  samples as raters and the methods as units, each rater's values being its ranks of the methods (average ranks
  for ties). α = 1: every sample ranks the methods identically; α ≈ 0: rankings are as good as random.
* ``inter_method_reliability`` — Spearman ρ of the per-sample scores between each pair of methods.
* ``internal_consistency`` — Spearman ρ between metrics over the same heatmaps (all (sample, method) pairs).

NaN scores count as missing: α skips them (Krippendorff's α handles missing values), the Spearman
correlations drop the samples (rows) that hold any.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np
import torch

from xaicore.errors import XaiCoreError

# scipy.stats and krippendorff are imported where they are used: together 1.3 s, which every process importing
# xaicore (each Dask worker among them) would otherwise pay


@dataclasses.dataclass(frozen=True)
class Correlations:
    """``matrix`` (k, k) Spearman ρ between ``names``; ``mean``: the mean over pairs (upper triangle)."""

    names: tuple[str, ...]
    matrix: np.ndarray
    mean: float
    #: internal consistency only: (n_methods, k, k), the correlation within each method's heatmaps
    per_method: np.ndarray | None = None


def _scores(scores: np.ndarray | torch.Tensor, what: str = "scores") -> np.ndarray:
    a = scores.detach().cpu().double().numpy() if isinstance(scores, torch.Tensor) else np.asarray(scores, float)
    if a.ndim != 2 or a.shape[0] < 2 or a.shape[1] < 2:
        raise XaiCoreError(f"{what} must be (n_samples, n_methods) with at least 2 of each, got {a.shape}")
    return a


def method_ranks(scores: np.ndarray | torch.Tensor) -> np.ndarray:
    """(n_samples, n_methods) rank of each method within its sample (1 = lowest score; ties averaged)."""
    from scipy.stats import rankdata

    return rankdata(_scores(scores), axis=1, method="average", nan_policy="omit")


def inter_rater_reliability(scores: np.ndarray | torch.Tensor) -> float:
    """Krippendorff's α (ordinal) of the per-sample rankings of methods (Tomsett et al. 2020, §3.1):
    raters = samples, units = methods. NaN where α is undefined: every rater ties every method (one rank value,
    e.g. a metric that scores all methods alike), which leaves no disagreement to compare with chance."""
    ranks = method_ranks(scores)
    if np.unique(ranks[np.isfinite(ranks)]).size < 2:
        return float("nan")
    import krippendorff

    return float(krippendorff.alpha(reliability_data=ranks, level_of_measurement="ordinal"))


def spearman_matrix(columns: np.ndarray) -> np.ndarray:
    """(k, k) Spearman ρ between the columns of (n, k), rows with a NaN dropped; constant columns give NaN."""
    columns = columns[~np.isnan(columns).any(1)]
    from scipy.stats import rankdata

    r = rankdata(columns, axis=0, method="average")
    r -= r.mean(0)
    norm = np.sqrt((r * r).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (r.T @ r) / np.outer(norm, norm)


def _mean_pairs(matrix: np.ndarray) -> float:
    iu = np.triu_indices(matrix.shape[-1], 1)
    return float(np.nanmean(matrix[iu])) if np.isfinite(matrix[iu]).any() else float("nan")


def inter_method_reliability(scores: np.ndarray | torch.Tensor, names: tuple[str, ...] | None = None
                             ) -> Correlations:
    """Spearman ρ of one metric's per-sample scores between each pair of methods (Tomsett et al. 2020, §3.2)."""
    a = _scores(scores)
    if names is not None and len(names) != a.shape[1]:
        raise XaiCoreError(f"names has {len(names)} entries for {a.shape[1]} methods (the columns of scores)")
    m = spearman_matrix(a)
    return Correlations(tuple(names) if names else tuple(f"method{i}" for i in range(a.shape[1])), m,
                        _mean_pairs(m))


def internal_consistency(metric_scores: Mapping[str, np.ndarray | torch.Tensor], *,
                         directions: Mapping[str, int] | None = None) -> Correlations:
    """Spearman ρ between metrics over the same heatmaps (Tomsett et al. 2020, §3.3).

    ``metric_scores``: name → (n_samples, n_methods), the same heatmaps in the same order for every metric.
    ``directions`` (e.g. :data:`xaicore.metrics.DIRECTIONS`): scores are multiplied by them first, so a
    positive ρ means the metrics agree on which heatmaps are better. ``matrix`` pools all heatmaps;
    ``per_method`` correlates within each method's heatmaps."""
    if len(metric_scores) < 2:
        raise XaiCoreError("internal consistency compares at least two metrics")
    names = tuple(metric_scores)
    arrays = [_scores(metric_scores[k], f"scores of {k!r}") * (directions or {}).get(k, 1) for k in names]
    if len({a.shape for a in arrays}) != 1:
        raise XaiCoreError(f"metrics scored different heatmaps: shapes {[a.shape for a in arrays]}")
    stack = np.stack(arrays, -1)  # (n_samples, n_methods, k)
    pooled = spearman_matrix(stack.reshape(-1, len(names)))
    per_method = np.stack([spearman_matrix(stack[:, j]) for j in range(stack.shape[1])])
    return Correlations(names, pooled, _mean_pairs(pooled), per_method)
