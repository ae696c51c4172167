"""Similarity of two heatmaps of the same input, for the randomization sanity checks of Adebayo et al. 2018
(survey §4.4): Spearman rank correlation of the flattened heatmaps, with and without absolute values."""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import rankdata

from xaicore.errors import XaiCoreError

SIMILARITY_MEASURES = ("spearman", "spearman_abs")


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman ρ of two (B, N) arrays (average ranks for ties, as scipy.stats.spearmanr).
    A constant row has no ranking: its ρ is NaN."""
    ra = rankdata(a, axis=1, method="average")
    rb = rankdata(b, axis=1, method="average")
    ra -= ra.mean(1, keepdims=True)
    rb -= rb.mean(1, keepdims=True)
    den = np.sqrt((ra * ra).sum(1) * (rb * rb).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (ra * rb).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def similarity(reference: torch.Tensor, other: torch.Tensor, measure: str = "spearman") -> torch.Tensor:
    """(B,) similarity of each heatmap in ``other`` to the one of the same input in ``reference``."""
    if reference.shape != other.shape:
        raise XaiCoreError(f"heatmap shapes differ: {tuple(reference.shape)} vs {tuple(other.shape)}")
    a = reference.detach().flatten(1).cpu().double().numpy()
    b = other.detach().flatten(1).cpu().double().numpy()
    if measure == "spearman":
        return torch.from_numpy(spearman_rows(a, b)).float()
    if measure == "spearman_abs":
        return torch.from_numpy(spearman_rows(np.abs(a), np.abs(b))).float()
    raise XaiCoreError(f"unknown similarity measure {measure!r}; available: {', '.join(SIMILARITY_MEASURES)}")
