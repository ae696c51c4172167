"""Similarity of two heatmaps of the same input, for the randomization sanity checks of Adebayo et al. 2018
(survey §4.4), with the measures they used:

* ``spearman`` / ``spearman_abs`` — Spearman rank correlation of the flattened heatmaps, signed / of |R|.
* ``ssim`` — the structural similarity of Wang et al. 2004 as ``skimage.metrics.structural_similarity``
  (7×7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance), computed batched in float64. Each heatmap is
  summed over channels and divided by its largest |value| (signs kept; the scale, which differs by orders of
  magnitude between a trained and a randomized model, drops out); ``data_range`` is max − min over the pair's
  normalised values. Two all-zero heatmaps give NaN.
* ``hog`` — Pearson correlation of the ``skimage.feature.hog`` descriptors (9 orientations, 4×4-pixel cells,
  2×2-cell blocks, L2-Hys) of the same normalised 2-D heatmaps. skimage has no batched HOG: this measure
  loops over heatmaps (about 0.4 ms each for 28×28).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import rankdata
from skimage.feature import hog

from xaicore.errors import XaiCoreError

SIMILARITY_MEASURES = ("spearman", "spearman_abs", "ssim", "hog")
SSIM_WINDOW = 7
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": (4, 4), "cells_per_block": (2, 2), "block_norm": "L2-Hys"}


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
    return Reference(reference)(other, measure)


class Reference:
    """Heatmaps that many others are compared with (the trained model's, against every randomized model's in
    Adebayo et al.'s cascade): their normalised maps and HOG descriptors are computed once, on first use.
    ``Reference(r)(other, measure)`` equals ``similarity(r, other, measure)``."""

    def __init__(self, reference: torch.Tensor) -> None:
        self.heatmaps = reference
        self._maps: torch.Tensor | None = None
        self._hog: np.ndarray | None = None

    def __call__(self, other: torch.Tensor, measure: str = "spearman") -> torch.Tensor:
        reference = self.heatmaps
        if reference.shape != other.shape:
            raise XaiCoreError(f"heatmap shapes differ: {tuple(reference.shape)} vs {tuple(other.shape)}")
        if measure in ("ssim", "hog"):
            if reference.ndim not in (3, 4):
                raise XaiCoreError(f"{measure} compares images: heatmaps must be (B, C, H, W) or (B, H, W), got "
                                   f"{tuple(reference.shape)}")
            if self._maps is None:
                self._maps = normalised_maps(reference)
            b2 = normalised_maps(other)
            if measure == "ssim":
                return ssim_pairs(self._maps, b2)
            if self._hog is None:
                self._hog = hog_descriptors(self._maps)
            return torch.from_numpy(pearson_rows(self._hog, hog_descriptors(b2))).float()
        a = reference.detach().flatten(1).cpu().double().numpy()
        b = other.detach().flatten(1).cpu().double().numpy()
        if measure == "spearman":
            return torch.from_numpy(spearman_rows(a, b)).float()
        if measure == "spearman_abs":
            return torch.from_numpy(spearman_rows(np.abs(a), np.abs(b))).float()
        raise XaiCoreError(f"unknown similarity measure {measure!r}; available: {', '.join(SIMILARITY_MEASURES)}")


def normalised_maps(relevance: torch.Tensor) -> torch.Tensor:
    """(B, H, W) float64: the heatmap summed over channels, divided by its largest |value| (0 stays 0)."""
    r = relevance.detach().cpu().to(torch.float64)
    if r.ndim == 4:
        r = r.sum(1)
    peak = r.abs().flatten(1).max(1).values.clamp_min(1e-300)
    return r / peak[:, None, None]


def ssim_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) mean SSIM of (B, H, W) pairs, as ``structural_similarity(a_i, b_i, data_range=max − min of the
    pair)`` (Wang et al. 2004, eq. 13; the valid windows only, as skimage crops its borders)."""
    side = min(a.shape[1:])
    win = min(SSIM_WINDOW, side - (1 - side % 2))
    if win < 3:
        raise XaiCoreError(f"ssim needs heatmaps of at least 3x3 pixels, got {tuple(a.shape[1:])}")
    data_range = torch.maximum(a.flatten(1).max(1).values, b.flatten(1).max(1).values) - \
        torch.minimum(a.flatten(1).min(1).values, b.flatten(1).min(1).values)
    c1, c2 = ((0.01 * data_range) ** 2)[:, None, None], ((0.03 * data_range) ** 2)[:, None, None]
    stack = torch.stack([a, b, a * a, b * b, a * b], 1)  # (B, 5, H, W)
    ux, uy, uxx, uyy, uxy = F.avg_pool2d(stack, win, stride=1).unbind(1)
    cov = win * win / (win * win - 1.0)  # sample covariance
    vx, vy, vxy = cov * (uxx - ux * ux), cov * (uyy - uy * uy), cov * (uxy - ux * uy)
    s = (2 * ux * uy + c1) * (2 * vxy + c2) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).float()


def hog_descriptors(maps: torch.Tensor) -> np.ndarray:
    """(B, D) ``skimage.feature.hog`` descriptors (``HOG_PARAMS``) of (B, H, W) maps; skimage has no batched HOG."""
    return np.stack([hog(m, **HOG_PARAMS) for m in maps.numpy()])


def pearson_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Pearson ρ of two (B, D) arrays; NaN where a row is constant."""
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.sqrt((a * a).sum(1) * (b * b).sum(1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1.0), np.nan)


def hog_pairs(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) Pearson ρ of the HOG descriptors (Dalal & Triggs 2005) of (B, H, W) pairs; NaN if one is constant."""
    return torch.from_numpy(pearson_rows(hog_descriptors(a), hog_descriptors(b))).float()
