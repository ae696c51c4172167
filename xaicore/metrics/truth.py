"""Metrics judged against a causal ground truth (the planted digits' watermark, :mod:`xaicore.data.planted`).

On a marked image the model's use of the watermark is a measured fact (:func:`~xaicore.data.planted.causal_drops`):
the drop Δ_w of the logit of the image's class when the mark is erased and the drop Δ_s when the strokes are
erased. The watermark's causal share of the evidence, for or against the class,

    s = |Δ_w| / (|Δ_w| + |Δ_s|)        (NaN when neither erasure moves the logit)

is what a correct heatmap's share of absolute relevance on the watermark should be,
RIW = Σ_mark |R| / Σ |R| (:func:`relevance_in_mask`; Clark et al. 2026's relevance in the watermark). A
method's agreement with the truth on an image is a = −|RIW − s| (0 is perfect).

A metric is right on this data when it ranks the methods as the truth does: :func:`metric_vs_truth` takes the
metric and the agreement per (method, image), ranks the methods by their means, and reports Kendall's τ between
the two rankings with a percentile bootstrap CI over the images (both means recomputed on each resample).

:func:`variance_shares` is Clark et al.'s analysis: the share of RIW's variance explained by the training regime
(η² of a one-way layout) against the share explained by the watermark's salience (r² of a line).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from scipy.stats import kendalltau

from xaicore.errors import XaiCoreError


def causal_share(drops: torch.Tensor | np.ndarray) -> np.ndarray:
    """(N,) the watermark's causal share s from ``drops`` (N, 2) = (Δ_watermark, Δ_strokes); NaN where neither
    erasure moves the logit."""
    d = np.abs(np.asarray(drops, dtype=np.float64))
    if d.ndim != 2 or d.shape[1] != 2:
        raise XaiCoreError(f"drops must be (N, 2): the watermark's and the strokes' drop, got shape {d.shape}")
    total = d.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, d[:, 0] / np.where(total > 0, total, 1.0), np.nan)


def relevance_in_mask(relevance: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) RIW: the share of absolute relevance (summed over channels) of ``relevance`` (B, C, H, W) inside
    ``mask`` (B, H, W) booleans; NaN for an all-zero map."""
    if relevance.ndim != 4 or mask.shape != (relevance.shape[0], *relevance.shape[-2:]):
        raise XaiCoreError(f"relevance (B, C, H, W) and mask (B, H, W) expected, got {tuple(relevance.shape)} and "
                           f"{tuple(mask.shape)}")
    r = relevance.detach().double().abs().sum(1).flatten(1)
    total = r.sum(1)
    inside = (r * mask.flatten(1).to(r.dtype)).sum(1)
    return torch.where(total > 0, inside / total.where(total > 0, torch.ones_like(total)), float("nan"))


def agreement(riw: np.ndarray, share: np.ndarray) -> np.ndarray:
    """−|RIW − s|, broadcast over leading dimensions of ``riw`` (…, N) against ``share`` (N,)."""
    return -np.abs(np.asarray(riw, dtype=np.float64) - np.asarray(share, dtype=np.float64))


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's τ-b between two vectors (NaN when either is constant or fewer than 2 entries are finite)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 2 or np.ptp(a[ok]) == 0 or np.ptp(b[ok]) == 0:
        return float("nan")
    return float(kendalltau(a[ok], b[ok]).statistic)


@dataclasses.dataclass(frozen=True)
class TruthAgreement:
    """Kendall τ of a metric's ranking of the methods against the truth's, with its bootstrap CI."""

    kendall_tau: float
    ci: tuple[float, float]
    n_methods: int


def _means(values: np.ndarray, images: np.ndarray) -> np.ndarray:
    """(M,) NaN-mean over the resampled images (the last axis) and any axes between."""
    picked = values[..., images]
    flat = picked.reshape(picked.shape[0], -1)
    finite = np.isfinite(flat)
    count = finite.sum(1)
    total = np.where(finite, flat, 0.0).sum(1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def metric_vs_truth(metric: np.ndarray, truth: np.ndarray, *, higher_is_better: bool = True, n_boot: int = 1000,
                    level: float = 0.95, seed: int = 0) -> TruthAgreement:
    """Kendall τ between the ranking of the methods by ``metric`` and by ``truth``, both (M, ..., N): methods
    first, images last (any axes between, e.g. the training regimes, are averaged too). NaN entries are left out
    of the means; a method without a finite mean in either is left out of the ranking. The CI is the percentile
    bootstrap over the N images (resampled with replacement, the same images for every method), ``n_boot``
    resamples drawn from ``seed``."""
    metric, truth = np.asarray(metric, dtype=np.float64), np.asarray(truth, dtype=np.float64)
    if metric.shape != truth.shape or metric.ndim < 2:
        raise XaiCoreError(f"metric {metric.shape} and truth {truth.shape} must both be (methods, ..., images)")
    if not 0 < level < 1 or n_boot < 1:
        raise XaiCoreError(f"the CI needs a level in (0, 1) and n_boot ≥ 1, got {level} and {n_boot}")
    sign = 1.0 if higher_is_better else -1.0
    n = metric.shape[-1]
    everything = np.arange(n)
    tau = kendall_tau(sign * _means(metric, everything), _means(truth, everything))
    rng = np.random.default_rng([seed, 0x7A0])
    boot = np.array([kendall_tau(sign * _means(metric, i), _means(truth, i))
                     for i in rng.integers(0, n, size=(n_boot, n))])
    boot = boot[np.isfinite(boot)]
    alpha = (1 - level) / 2
    ci = (float(np.quantile(boot, alpha)), float(np.quantile(boot, 1 - alpha))) if len(boot) else (np.nan, np.nan)
    used = int((np.isfinite(_means(metric, everything)) & np.isfinite(_means(truth, everything))).sum())
    return TruthAgreement(tau, ci, used)


def variance_shares(riw: np.ndarray, salience: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Clark et al.'s shares of RIW's variance, per method: ``riw`` (M, R, N) over R training regimes and N images
    whose watermark has ``salience`` (N,). Returns (η² of the regime, r² of the salience), each (M,), pooled
    over the finite ones of a method's R·N values (NaN for a constant RIW)."""
    riw = np.asarray(riw, dtype=np.float64)
    salience = np.asarray(salience, dtype=np.float64)
    if riw.ndim != 3 or salience.shape != (riw.shape[2],):
        raise XaiCoreError(f"riw must be (methods, regimes, images) and salience (images,), got {riw.shape} and "
                           f"{salience.shape}")
    eta2, r2 = np.full(len(riw), np.nan), np.full(len(riw), np.nan)
    s_all = np.broadcast_to(salience, riw.shape[1:])
    for m, values in enumerate(riw):
        ok = np.isfinite(values)
        v, s = values[ok], s_all[ok]
        if len(v) < 2 or np.ptp(v) == 0:
            continue
        total = ((v - v.mean()) ** 2).sum()
        groups = [values[r][ok[r]] for r in range(len(values)) if ok[r].any()]
        eta2[m] = sum(len(g) * (g.mean() - v.mean()) ** 2 for g in groups) / total
        if np.ptp(s) > 0:
            r2[m] = ((v - v.mean()) * (s - s.mean())).sum() ** 2 / (total * ((s - s.mean()) ** 2).sum())
    return eta2, r2


__all__ = ["TruthAgreement", "agreement", "causal_share", "kendall_tau", "metric_vs_truth",
           "relevance_in_mask", "variance_shares"]
