"""Similarity of two heatmaps of the same input, for the randomization sanity checks of Adebayo et al. 2018
(survey §4.4), with the measures they used:

* ``spearman`` / ``spearman_abs`` — Spearman rank correlation of the flattened heatmaps, signed / of |R|.
* ``ssim`` — the structural similarity of Wang et al. 2004 as ``skimage.metrics.structural_similarity``
  (7×7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance), computed batched in float64. Each heatmap is
  summed over channels and divided by its largest |value| (signs kept; the scale, which differs by orders of
  magnitude between a trained and a randomized model, drops out); ``data_range`` is max − min over the pair's
  normalised values. Two all-zero heatmaps give NaN.
* ``hog`` — Pearson correlation of the HOG descriptors (Dalal & Triggs 2005; 9 orientations, 4×4-pixel cells,
  2×2-cell blocks, L2-Hys) of the same normalised 2-D heatmaps, equal bit for bit to ``skimage.feature.hog``
  (its per-cell sums in a C float included) but batched: a numba kernel for the cell histograms, numpy for
  the gradients and the block norms (about 7× faster than skimage's loop over heatmaps).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F

from xaicore.errors import XaiCoreError, require_finite, require_same_shape

SIMILARITY_MEASURES = ("spearman", "spearman_abs", "ssim", "hog")
SSIM_WINDOW = 7
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": (4, 4), "cells_per_block": (2, 2), "block_norm": "L2-Hys"}


def spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Spearman ρ of two (B, N) arrays (average ranks for ties, as scipy.stats.spearmanr).
    A constant row has no ranking: its ρ is NaN."""
    from scipy.stats import rankdata  # here: scipy.stats takes 1 s to import, see metrics/reliability.py

    require_same_shape(a, b, "spearman_rows compares rows of the same shape")
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
        require_finite(reference, "the reference heatmap")
        require_finite(other, "the compared heatmap")
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


@numba.njit(cache=True)
def _cell_histograms(magnitude: np.ndarray, orientation: np.ndarray, cell: int, orientations: int,
                     out: np.ndarray) -> None:
    """skimage's ``hog_histograms`` for a (B, H, W) batch: per cell and bin i, the magnitudes of the cell's pixels
    whose orientation lies in [180/o·i, 180/o·(i+1)) (bounds in float32), summed in float32 in row-major order,
    divided by the cell's pixel count."""
    width = np.float32(180.0 / orientations)
    for b in range(magnitude.shape[0]):
        for i in range(orientations):
            start = np.float32(width * (i + 1))
            end = np.float32(width * i)
            for r_i in range(out.shape[1]):
                for c_i in range(out.shape[2]):
                    total = np.float32(0.0)
                    for r in range(r_i * cell, (r_i + 1) * cell):
                        for c in range(c_i * cell, (c_i + 1) * cell):
                            o = orientation[b, r, c]
                            if o >= start or o < end:
                                continue
                            total = np.float32(total + magnitude[b, r, c])
                    out[b, r_i, c_i, i] = np.float32(total / np.float32(cell * cell))


def hog_descriptors(maps: torch.Tensor) -> np.ndarray:
    """(B, D) HOG descriptors (``HOG_PARAMS``) of (B, H, W) maps, as ``skimage.feature.hog(map, **HOG_PARAMS)``
    of each: central-difference gradients (0 on the border), unsigned orientations, hard-binned cell histograms,
    L2-Hys norm over each 2×2-cell block (ε = 1e-5), blocks in row-major order."""
    x = np.ascontiguousarray(maps.numpy() if isinstance(maps, torch.Tensor) else maps, dtype=np.float64)
    orientations, cell, block = HOG_PARAMS["orientations"], HOG_PARAMS["pixels_per_cell"][0], \
        HOG_PARAMS["cells_per_block"][0]
    n, h, w = x.shape
    n_row, n_col = h // cell - block + 1, w // cell - block + 1
    if n_row <= 0 or n_col <= 0:
        raise XaiCoreError(f"hog needs heatmaps of at least {block * cell}x{block * cell} pixels, got {h}x{w}")
    g_row, g_col = np.zeros_like(x), np.zeros_like(x)
    g_row[:, 1:-1] = x[:, 2:] - x[:, :-2]
    g_col[:, :, 1:-1] = x[:, :, 2:] - x[:, :, :-2]
    hist = np.zeros((n, h // cell, w // cell, orientations))
    _cell_histograms(np.hypot(g_col, g_row), np.rad2deg(np.arctan2(g_row, g_col)) % 180, cell, orientations, hist)
    blocks = np.empty((n, n_row, n_col, block, block, orientations))
    for dr in range(block):
        for dc in range(block):
            blocks[:, :, :, dr, dc] = hist[:, dr:dr + n_row, dc:dc + n_col]
    eps = 1e-5
    out = np.minimum(blocks / np.sqrt((blocks ** 2).sum((3, 4, 5), keepdims=True) + eps ** 2), 0.2)
    out /= np.sqrt((out ** 2).sum((3, 4, 5), keepdims=True) + eps ** 2)
    return out.reshape(n, -1)


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
