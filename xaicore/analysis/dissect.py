"""Network Dissection (survey §7.1; Bau et al. 2017, "Network Dissection: Quantifying interpretability of deep
visual representations"): which units of a convolutional layer are detectors of which concepts, scored by the
overlap of each unit's high-activation region with pixel-level concept masks over a whole data set.

Inputs: the feature maps A (N, U, h, w) of one layer on N images and boolean concept masks L (N, K, H, W) of K
concepts at image resolution, H ≥ h, W ≥ w. Both may be torch tensors, numpy arrays or xarray DataArrays (also
dask-backed, e.g. a lazily opened Zarr archive, or any object with ``shape`` that slices along its first axis);
they are read ``chunk`` samples at a time along N, so neither is ever loaded whole. Steps (as in NetDissect-Lite):

1. threshold: T_u is the ``quantile`` q (0.995) quantile of all the values of unit u over the data set and all
   positions, at feature resolution (the N·h·w values A[:, u]), exactly ``np.quantile(A[:, u].ravel(), q)`` with
   numpy's default linear interpolation, in float64: with n = N·h·w, v = (n − 1)·q, i = ⌊v⌋, j = min(i + 1,
   n − 1) and γ = v − i, T_u = a + γ(b − a) for γ < 0.5 and b − (1 − γ)(b − a) otherwise, where a ≤ b are the i-th
   and j-th order statistics (0-based, ascending). It is exact in one pass over A: per unit the m = n − i largest
   values seen so far are kept (or, when smaller, the j + 1 smallest) and merged with each chunk by a partial
   partition; they hold both order statistics. When the kept values of all units would exceed ``_KEEP_BUDGET``
   numbers (q near 0.5 on a large data set) the units are taken in groups, one pass over A per group.
2. upsampling: each map A[n, u] is resized to (H, W) bilinearly, ``torch.nn.functional.interpolate(...,
   mode="bilinear", align_corners=False)`` (source coordinate (x + ½)·h/H − ½, clamped at the border; PIL's mode-F
   resize agrees with it to 5e-7), in float64, so that the comparison of step 3 is against the float64 T_u.
3. unit mask: M_u[n] = upsampled A[n, u] > T_u (strict).
4. IoU: IoU_{u,k} = Σ_n |M_u[n] ∩ L_k[n]| / Σ_n |M_u[n] ∪ L_k[n]|, the intersections and unions (|M| + |L| −
   |M ∩ L|) summed over the data set before the division (not a mean of per-image IoUs). The intersections of a
   chunk are one product of the flattened masks, (U, n·H·W) @ (n·H·W, K), in float32 over blocks of at most 2²⁴
   pixels (so every count is exact); the counts are summed in float64. A unit and concept that are both empty on
   the whole data set (union 0) get IoU 0.
5. label: each unit's concept is argmax_k IoU_{u,k} (ties to the lower k); the unit is a detector of it
   ("interpretable") when that IoU > ``threshold`` (0.04); otherwise its label is −1 (name None).
   :meth:`DissectionResult.units_per_concept` counts the detectors per concept (the paper's per-layer table).

Everything runs on the CPU (a CUDA tensor is copied to the host a chunk at a time).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from xaicore.engine import batch_slices
from xaicore.errors import XaiCoreError, require_finite

#: The most float64 values the quantile pass keeps in memory at once (all units together, 512 MiB).
_KEEP_BUDGET = 1 << 26
#: The most pixels (samples × H × W) in one float32 product of masks, so that every count stays exact.
_EXACT_F32 = 1 << 24


@dataclasses.dataclass(frozen=True)
class DissectionResult:
    """Network Dissection of one layer. ``iou``: (U, K) float64 IoU of every unit with every concept;
    ``label``: (U,) int64 index of the unit's best concept, −1 when its IoU is not > ``iou_threshold``;
    ``names``: per unit the labelled concept's name or None; ``thresholds``: (U,) float64 activation threshold
    T_u (the ``quantile`` quantile of the unit); ``concepts``: the K concept names."""

    iou: np.ndarray
    label: np.ndarray
    names: list[str | None]
    thresholds: np.ndarray
    concepts: tuple[str, ...]
    quantile: float
    iou_threshold: float

    @property
    def interpretable(self) -> np.ndarray:
        """(U,) bool: whether each unit is a detector of some concept."""
        return self.label >= 0

    def units_per_concept(self) -> dict[str, int]:
        """Number of detector units per concept, for every concept with at least one, most units first (ties in
        concept order); units labelled −1 are not counted."""
        counts = np.bincount(self.label[self.label >= 0], minlength=len(self.concepts))
        order = sorted((k for k in range(len(self.concepts)) if counts[k]), key=lambda k: (-counts[k], k))
        return {self.concepts[k]: int(counts[k]) for k in order}


# --- reading ----------------------------------------------------------------------------------------------

def _shape(x: Any, what: str, dims: str) -> tuple[int, ...]:
    shape = getattr(x, "shape", None)
    if shape is None:
        raise XaiCoreError(f"{what} must be an array, tensor or DataArray {dims}, got {type(x).__name__}")
    shape = tuple(int(s) for s in shape)
    if len(shape) != 4:
        raise XaiCoreError(f"{what} must be 4-d {dims}, got shape {shape}")
    if 0 in shape:
        raise XaiCoreError(f"{what} {dims} = {shape} is empty")
    return shape


def _rows(x: Any, start: int, stop: int) -> np.ndarray:
    """Samples start:stop of x as a numpy array (computing a dask-backed block, copying a CUDA tensor)."""
    if isinstance(x, torch.Tensor):
        t = x[start:stop].detach().cpu()
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    if hasattr(x, "isel") and hasattr(x, "dims"):
        return np.asarray(x.isel({x.dims[0]: slice(start, stop)}).values)
    return np.asarray(x[start:stop])


def _activation_rows(x: Any, start: int, stop: int) -> np.ndarray:
    a = _rows(x, start, stop)
    if not (np.issubdtype(a.dtype, np.number) or a.dtype == np.bool_) or np.iscomplexobj(a):
        raise XaiCoreError(f"activations must be real numbers, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        require_finite(a, f"activations (samples {start}:{stop})")
    return a


def _mask_rows(x: Any, start: int, stop: int) -> np.ndarray:
    m = _rows(x, start, stop)
    if m.dtype == np.bool_:
        return m
    if not np.issubdtype(m.dtype, np.number) or not ((m == 0) | (m == 1)).all():
        raise XaiCoreError(f"concept masks must be boolean (or 0/1), found other values in samples {start}:{stop}"
                           f" (dtype {m.dtype})")
    return m == 1


def _check_chunk(chunk: int) -> int:
    if isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1:
        raise XaiCoreError(f"chunk must be a positive number of samples, got {chunk!r}")
    return int(chunk)


# --- step 1: exact quantiles ------------------------------------------------------------------------------

def _order_stats(n: int, q: float) -> tuple[int, int, float]:
    """numpy's linear method: the order statistics i, j and weight γ of the q quantile of n values."""
    v = (n - 1) * q
    i = math.floor(v)
    return i, min(i + 1, n - 1), v - i


def _lerp(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    """numpy's ``_lerp``: a + γ(b − a), written as b − (1 − γ)(b − a) when γ ≥ 0.5."""
    diff = b - a
    return b - diff * (1 - gamma) if gamma >= 0.5 else a + diff * gamma


def _keep(kept: np.ndarray, pending: list[np.ndarray], m: int) -> np.ndarray:
    """The m largest values per row of ``kept`` and ``pending`` together."""
    both = np.concatenate([kept, *pending], axis=1)
    if both.shape[1] <= m:
        return both
    return np.partition(both, both.shape[1] - m, axis=1)[:, both.shape[1] - m:]


def _quantiles(activations: Any, shape: tuple[int, ...], q: float, chunk: int) -> np.ndarray:
    N, U, h, w = shape
    n = N * h * w
    i, j, gamma = _order_stats(n, q)
    top = n - i <= j + 1  # keep the largest n − i values, else the smallest j + 1 (as the largest of −A)
    m = n - i if top else j + 1
    group = max(1, min(U, _KEEP_BUDGET // (2 * m + chunk * h * w)))
    out = np.empty(U, dtype=np.float64)
    for units in batch_slices(U, group):
        u0, u1 = units.start, units.stop
        kept = np.empty((u1 - u0, 0), dtype=np.float64)
        pending: list[np.ndarray] = []
        size = 0
        for rows in batch_slices(N, chunk):
            a = _activation_rows(activations, rows.start, rows.stop)[:, u0:u1]
            values = a.transpose(1, 0, 2, 3).reshape(u1 - u0, -1)
            pending.append(values if top else -values)
            size += values.shape[1]
            if size >= m:
                kept, pending, size = _keep(kept, pending, m), [], 0
        kept = np.sort(_keep(kept, pending, m) if pending else kept, axis=1)
        if not top:  # the j + 1 smallest, ascending
            kept = -kept[:, ::-1]
        first = n - m if top else 0  # rank of kept[:, 0] among all n values
        out[u0:u1] = _lerp(kept[:, i - first], kept[:, j - first], gamma)
    return out


def _check_q(q: float, what: str) -> float:
    if isinstance(q, bool) or not isinstance(q, (int, float, np.floating, np.integer)) or not 0 < q < 1:
        raise XaiCoreError(f"{what} must be a number in (0, 1), got {q!r}")
    return float(q)


def unit_quantiles(activations: Any, q: float = 0.995, *, chunk: int = 256) -> np.ndarray:
    """(U,) float64: per unit u the q quantile of all the values of A[:, u] (N, h, w), exactly
    ``np.quantile(A[:, u].ravel(), q)`` (linear interpolation), read ``chunk`` samples at a time (step 1 of the
    module docstring)."""
    shape = _shape(activations, "activations", "(N, U, h, w)")
    return _quantiles(activations, shape, _check_q(q, "q"), _check_chunk(chunk))


# --- steps 2-5 --------------------------------------------------------------------------------------------

def _counts(up: torch.Tensor, thresholds: torch.Tensor, masks: torch.Tensor) -> tuple[np.ndarray, ...]:
    """Intersections (U, K), |M_u| (U,) and |L_k| (K,) of one chunk: up (n, U, H, W) float64, masks (n, K, H, W)
    bool."""
    n, U, H, W = up.shape
    K = masks.shape[1]
    unit = (up > thresholds.view(1, U, 1, 1)).reshape(n, U, H * W)
    concept = masks.reshape(n, K, H * W)
    inter = np.zeros((U, K), dtype=np.float64)
    step = max(1, _EXACT_F32 // (H * W))
    for s in batch_slices(n, step):
        mu = unit[s].permute(1, 0, 2).reshape(U, -1).to(torch.float32)
        lk = concept[s].permute(1, 0, 2).reshape(K, -1).to(torch.float32)
        inter += (mu @ lk.T).double().numpy()
    return inter, unit.sum((0, 2)).double().numpy(), concept.sum((0, 2)).double().numpy()


@torch.no_grad()
def dissect(activations: Any, masks: Any, *, quantile: float = 0.995, threshold: float = 0.04,
            concepts: Sequence[str] | None = None, chunk: int = 256) -> DissectionResult:
    """Network Dissection of one layer's feature maps ``activations`` (N, U, h, w) against the boolean concept
    masks ``masks`` (N, K, H, W); see the module docstring for every step. ``concepts`` names the K concepts
    (default "concept0", "concept1", ...); both inputs are read ``chunk`` samples at a time."""
    N, U, h, w = _shape(activations, "activations", "(N, U, h, w)")
    mshape = _shape(masks, "concept masks", "(N, K, H, W)")
    Nm, K, H, W = mshape
    if Nm != N or H < h or W < w:
        raise XaiCoreError(f"concept masks (N, K, H, W) = {mshape} do not match activations (N, U, h, w) = "
                           f"{(N, U, h, w)}: they need the same N and H ≥ h, W ≥ w (maps are only upsampled)")
    q = _check_q(quantile, "quantile")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating, np.integer)) \
            or not 0 <= threshold < 1:
        raise XaiCoreError(f"threshold (the IoU a detector must exceed) must be in [0, 1), got {threshold!r}")
    chunk = _check_chunk(chunk)
    if concepts is None:
        names = tuple(f"concept{k}" for k in range(K))
    else:
        names = tuple(concepts)
        if len(names) != K or not all(isinstance(c, str) for c in names) or len(set(names)) != K:
            raise XaiCoreError(f"concepts must be {K} distinct names, one per mask channel, got {len(names)}: "
                               f"{list(names)[:5]}")

    thresholds = _quantiles(activations, (N, U, h, w), q, chunk)
    t = torch.from_numpy(thresholds)
    inter = np.zeros((U, K), dtype=np.float64)
    unit_area = np.zeros(U, dtype=np.float64)
    concept_area = np.zeros(K, dtype=np.float64)
    for rows in batch_slices(N, chunk):
        start, stop = rows.start, rows.stop
        a = torch.from_numpy(np.ascontiguousarray(_activation_rows(activations, start, stop)))
        up = a if (H, W) == (h, w) else F.interpolate(a, size=(H, W), mode="bilinear", align_corners=False)
        i_, mu, lk = _counts(up, t, torch.from_numpy(np.ascontiguousarray(_mask_rows(masks, start, stop))))
        inter += i_
        unit_area += mu
        concept_area += lk
    union = unit_area[:, None] + concept_area[None, :] - inter
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    best = iou.argmax(1)
    label = np.where(iou[np.arange(U), best] > threshold, best, -1).astype(np.int64)
    return DissectionResult(iou=iou, label=label, names=[names[k] if k >= 0 else None for k in label],
                            thresholds=thresholds, concepts=names, quantile=q, iou_threshold=float(threshold))
