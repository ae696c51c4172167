"""Network Dissection (Bau et al. 2017; survey §7.1) against definitions computed by hand with numpy.

* ``unit_quantiles`` equals ``np.quantile`` per unit for several q and chunk sizes, with ties, and in the
  unit-group fallback for a large number of kept order statistics;
* a unit whose map is the 4×4 average pooling of a concept mask is labelled with that concept, with the IoU of
  an independent numpy computation (np.quantile threshold, bilinear half-pixel upsampling written out, strict >,
  intersections and unions summed over the data set); Gaussian-noise units are not detectors;
* the data-set IoU is the ratio of sums, not the mean of per-image IoUs;
* torch, numpy, dask-backed xarray and a lazily opened Zarr archive give the same result, chunk sizes do not
  change it, the inputs are read a chunk at a time; and the errors.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch
import xarray as xr

from xaicore.analysis.dissect import DissectionResult, dissect, unit_quantiles
from xaicore.errors import XaiCoreError

N, K, SIZE = 200, 4, 28
POOLED = [2, 0, 2]  # units 0-2 are the pooled masks of these concepts; units 3-5 are Gaussian noise
NAMES = ("sky", "tree", "road", "car")


def upsample(a: np.ndarray, H: int, W: int) -> np.ndarray:
    """Bilinear resize of the last two axes, align_corners=False: source (x + ½)·in/out − ½, clamped at 0."""
    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, ...]:
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        i0 = np.floor(src).astype(int)
        frac = src - i0
        return i0, np.minimum(i0 + 1, n_in - 1), 1 - frac, frac

    y0, y1, wy0, wy1 = axis(a.shape[-2], H)
    x0, x1, wx0, wx1 = axis(a.shape[-1], W)
    rows = a[..., y0, :] * wy0[:, None] + a[..., y1, :] * wy1[:, None]
    return rows[..., x0] * wx0 + rows[..., x1] * wx1


def iou_by_hand(maps: np.ndarray, masks: np.ndarray, q: float = 0.995) -> float:
    """Dataset IoU of one unit's maps (N, h, w) with one concept's masks (N, H, W), from the definitions."""
    on = upsample(maps, *masks.shape[1:]) > np.quantile(maps.ravel(), q)
    return (on & masks).sum() / (on | masks).sum()


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Concept masks (N, K, 28, 28): each concept present in a quarter of the images as a square of side 3-6 at a
    random place; activations (N, 6, 7, 7): units 0-2 the 4×4 average pooling of the masks of concepts 2, 0, 2,
    units 3-5 Gaussian noise."""
    rng = np.random.default_rng(0)
    masks = np.zeros((N, K, SIZE, SIZE), dtype=bool)
    for n in range(N):
        for k in range(K):
            if rng.random() < 0.25:
                s = rng.integers(3, 7)
                y, x = rng.integers(0, SIZE - s, 2)
                masks[n, k, y:y + s, x:x + s] = True
    pooled = masks.reshape(N, K, 7, 4, 7, 4).mean((3, 5))
    acts = np.concatenate([pooled[:, POOLED], rng.normal(size=(N, 3, 7, 7))], axis=1)
    return acts, masks


# --- 1. thresholds ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("q", [0.5, 0.9, 0.995, 0.999, 0.01])
@pytest.mark.parametrize("ties", [False, True])
def test_unit_quantiles_equal_np_quantile(q: float, ties: bool) -> None:
    rng = np.random.default_rng(1)
    shape = (23, 3, 5, 3)  # 345 values per unit; no chunk size below divides 23
    a = rng.integers(0, 4, size=shape).astype(np.float32) if ties else rng.normal(size=shape)
    expected = np.array([np.quantile(a[:, u].astype(np.float64).ravel(), q) for u in range(3)])
    for chunk in (1, 7, 23):
        got = unit_quantiles(a, q, chunk=chunk)
        assert got.dtype == np.float64 and got.shape == (3,)
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)


def test_unit_quantiles_unit_groups_when_many_order_statistics_are_kept(monkeypatch) -> None:
    """q = 0.5 keeps about half the values; with a small budget the units are taken one by one, one pass each."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(30, 4, 3, 3))
    reads = []

    class Rows:
        shape = a.shape

        def __getitem__(self, index: slice) -> np.ndarray:
            reads.append(index)
            return a[index]

    monkeypatch.setattr(importlib.import_module("xaicore.analysis.dissect"), "_KEEP_BUDGET", 400)
    got = unit_quantiles(Rows(), 0.5, chunk=8)
    np.testing.assert_allclose(got, np.quantile(a.transpose(1, 0, 2, 3).reshape(4, -1), 0.5, axis=1), rtol=1e-12)
    assert len(reads) == 4 * 4  # 4 units one at a time x 4 chunks of at most 8 samples
    assert max(r.stop - r.start for r in reads) == 8


# --- 2-3. detectors and noise -----------------------------------------------------------------------------

def test_pooled_concept_units_are_detectors_with_the_iou_by_hand(data) -> None:
    acts, masks = data
    res = dissect(acts, masks, concepts=NAMES)
    assert isinstance(res, DissectionResult)
    assert res.iou.shape == (6, K) and res.iou.dtype == np.float64 and res.label.dtype == np.int64
    for u, k in enumerate(POOLED):
        expected = iou_by_hand(acts[:, u], masks[:, k])
        np.testing.assert_allclose(res.iou[u, k], expected, rtol=1e-12)
        # only the interior of a pooled square passes the 0.995 threshold after upsampling: far from IoU 1
        assert 0.2 < res.iou[u, k] < 0.6
        assert res.label[u] == k and res.names[u] == NAMES[k]
        assert res.iou[u, k] > 10 * np.delete(res.iou[u], k).max()
        assert res.thresholds[u] == np.quantile(acts[:, u].ravel(), 0.995)
    assert res.units_per_concept() == {"road": 2, "sky": 1}
    assert list(res.interpretable) == [True, True, True, False, False, False]
    assert res.concepts == NAMES and res.quantile == 0.995 and res.iou_threshold == 0.04


def test_noise_units_are_not_detectors(data) -> None:
    acts, masks = data
    res = dissect(acts, masks)
    assert res.iou[3:].max() < 0.01
    assert list(res.label[3:]) == [-1, -1, -1] and res.names[3:] == [None, None, None]
    for u in range(3, 6):  # and their IoUs are the definition too
        for k in range(K):
            np.testing.assert_allclose(res.iou[u, k], iou_by_hand(acts[:, u], masks[:, k]), rtol=1e-12)


def test_non_integer_upsampling_factor_matches_the_numpy_bilinear_formula() -> None:
    rng = np.random.default_rng(3)
    acts = rng.normal(size=(12, 2, 5, 4))
    masks = rng.random((12, 3, 13, 11)) < 0.3
    res = dissect(acts, masks, quantile=0.9, chunk=5)
    expected = [[iou_by_hand(acts[:, u], masks[:, k], 0.9) for k in range(3)] for u in range(2)]
    np.testing.assert_allclose(res.iou, expected, rtol=1e-12)
    # the reference resize is torch's
    np.testing.assert_allclose(upsample(acts, 13, 11), torch.nn.functional.interpolate(
        torch.from_numpy(acts), size=(13, 11), mode="bilinear", align_corners=False).numpy(), rtol=0, atol=1e-14)


# --- 4. summed, not averaged ------------------------------------------------------------------------------

def test_iou_is_summed_over_the_data_set_not_a_mean_of_image_ious() -> None:
    """Image 0: unit and concept cover the same 8 pixels (IoU 1); image 1: one pixel each, apart (IoU 0). The
    per-image mean is 0.5, the data-set IoU 8 / (8 + 1 + 1) = 0.8."""
    acts = np.zeros((2, 1, 4, 4))
    masks = np.zeros((2, 1, 4, 4), dtype=bool)
    acts[0, 0, :2] = masks[0, 0, :2] = 1
    acts[1, 0, 0, 0] = 1
    masks[1, 0, 3, 3] = True
    res = dissect(acts, masks, quantile=0.5)  # 9 ones among 32 values: T = 0, the unit is on where it is 1
    assert res.thresholds[0] == 0.0
    on = acts[:, 0] > 0
    per_image = [(on[n] & masks[n, 0]).sum() / (on[n] | masks[n, 0]).sum() for n in range(2)]
    assert np.mean(per_image) == 0.5
    assert res.iou[0, 0] == (on & masks[:, 0]).sum() / (on | masks[:, 0]).sum() == 0.8
    assert dissect(acts, masks, quantile=0.5, threshold=0.79).label[0] == 0
    assert dissect(acts, masks, quantile=0.5, threshold=0.8).label[0] == -1  # a detector needs IoU > threshold


def test_units_and_concepts_empty_everywhere_get_iou_zero() -> None:
    acts = np.ones((3, 2, 2, 2))  # constant: T = 1 and nothing is > T
    res = dissect(acts, np.zeros((3, 1, 4, 4), dtype=bool))
    assert np.array_equal(res.iou, np.zeros((2, 1))) and list(res.label) == [-1, -1]
    assert res.units_per_concept() == {}


# --- 5. containers, chunks, errors ------------------------------------------------------------------------

def assert_same(a: DissectionResult, b: DissectionResult) -> None:
    assert np.array_equal(a.iou, b.iou) and np.array_equal(a.label, b.label)
    assert np.array_equal(a.thresholds, b.thresholds) and a.names == b.names and a.concepts == b.concepts


def test_containers_and_chunk_sizes_give_the_same_result(data, tmp_path) -> None:
    acts, masks = data[0][:40], data[1][:40]
    ref = dissect(acts, masks)
    assert_same(dissect(torch.from_numpy(acts), torch.from_numpy(masks)), ref)
    dims_a, dims_m = ("sample", "unit", "y", "x"), ("sample", "concept", "Y", "X")
    xa = xr.DataArray(acts, dims=dims_a).chunk({"sample": 5})
    xm = xr.DataArray(masks, dims=dims_m).chunk({"sample": 5})
    assert_same(dissect(xa, xm, chunk=7), ref)
    xr.Dataset({"acts": xa, "masks": xm}).to_zarr(str(tmp_path / "d.zarr"), consolidated=False)
    lazy = xr.open_zarr(str(tmp_path / "d.zarr"), consolidated=False)
    assert lazy["acts"].chunks is not None  # dask-backed, read on demand
    assert_same(dissect(lazy["acts"], lazy["masks"], chunk=16), ref)
    for chunk in (1, 7, 40, 1000):
        assert_same(dissect(acts, masks, chunk=chunk), ref)
    # 0/1 masks of another dtype and float32 maps behave as bool masks and their float64 values
    assert_same(dissect(acts.astype(np.float32), masks.astype(np.uint8)),
                dissect(acts.astype(np.float32).astype(np.float64), masks))


def test_inputs_are_read_a_chunk_at_a_time(data) -> None:
    acts, masks = data[0][:30], data[1][:30]
    reads: list[tuple[str, int]] = []

    class Rows:
        def __init__(self, array: np.ndarray, name: str) -> None:
            self.array, self.name, self.shape = array, name, array.shape

        def __getitem__(self, index: slice) -> np.ndarray:
            reads.append((self.name, index.stop - index.start))
            return self.array[index]

    assert_same(dissect(Rows(acts, "acts"), Rows(masks, "masks"), chunk=8), dissect(acts, masks))
    assert [n for name, n in reads if name == "acts"] == [8, 8, 8, 6] * 2  # quantile pass, then IoU pass
    assert [n for name, n in reads if name == "masks"] == [8, 8, 8, 6]


def test_errors(data) -> None:
    acts, masks = data[0][:10], data[1][:10]
    with pytest.raises(XaiCoreError, match=r"concept masks \(N, K, H, W\) = \(9, 4, 28, 28\) do not match "
                                           r"activations \(N, U, h, w\) = \(10, 6, 7, 7\)"):
        dissect(acts, masks[:9])
    with pytest.raises(XaiCoreError, match=r"\(10, 4, 6, 28\) do not match .*H ≥ h, W ≥ w"):
        dissect(acts, masks[:, :, :6])
    with pytest.raises(XaiCoreError, match=r"activations must be 4-d \(N, U, h, w\), got shape \(10, 6, 49\)"):
        dissect(acts.reshape(10, 6, 49), masks)
    with pytest.raises(XaiCoreError, match=r"concept masks must be 4-d"):
        dissect(acts, masks[:, 0])
    with pytest.raises(XaiCoreError, match=r"concept masks must be boolean \(or 0/1\), found other values"):
        dissect(acts, masks.astype(np.int64) * 2)
    bad = acts.copy()
    bad[3, 1, 2, 2] = np.nan
    with pytest.raises(XaiCoreError, match=r"activations \(samples 0:10\) holds NaN or inf in 1 of 10 rows"):
        dissect(bad, masks)
    with pytest.raises(XaiCoreError, match=r"NaN or inf"):
        unit_quantiles(torch.from_numpy(bad), chunk=3)
    for q in (0, 1, 1.5, -0.1, float("nan")):
        with pytest.raises(XaiCoreError, match=r"quantile must be a number in \(0, 1\)"):
            dissect(acts, masks, quantile=q)
        with pytest.raises(XaiCoreError, match=r"q must be a number in \(0, 1\)"):
            unit_quantiles(acts, q)
    with pytest.raises(XaiCoreError, match=r"concepts must be 4 distinct names, one per mask channel, got 3"):
        dissect(acts, masks, concepts=NAMES[:3])
    with pytest.raises(XaiCoreError, match=r"concepts must be 4 distinct names"):
        dissect(acts, masks, concepts=("a", "a", "b", "c"))
    with pytest.raises(XaiCoreError, match=r"threshold .* must be in \[0, 1\)"):
        dissect(acts, masks, threshold=1.0)
    with pytest.raises(XaiCoreError, match=r"chunk must be a positive number of samples"):
        dissect(acts, masks, chunk=0)
    with pytest.raises(XaiCoreError, match=r"is empty"):
        unit_quantiles(np.zeros((0, 2, 3, 3)))
