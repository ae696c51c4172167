"""numba twins of the perturbation kernels (the CPU path); they work in place on the tensors' memory."""

from __future__ import annotations

import numba
import numpy as np
import torch


@numba.njit(cache=True, parallel=True)
def _region_sums(rel: np.ndarray, region: int, hb: int, wb: int) -> np.ndarray:
    b, c, h, w = rel.shape
    out = np.zeros((b, hb * wb), dtype=np.float64)
    for i in numba.prange(b):
        for ch in range(c):
            for y in range(h):
                for x in range(w):
                    out[i, (y // region) * wb + x // region] += np.float64(rel[i, ch, y, x])
    return out


@numba.njit(cache=True, parallel=True)
def _order(sums: np.ndarray) -> np.ndarray:
    b, n = sums.shape
    out = np.empty((b, n), dtype=np.int64)
    for i in numba.prange(b):
        out[i] = np.argsort(-sums[i], kind="mergesort")
    return out


@numba.njit(cache=True, parallel=True)
def _perturb(buf: np.ndarray, rep: np.ndarray, regions: np.ndarray, grid: np.ndarray) -> None:
    n, c, _ = buf.shape
    n_rep = rep.shape[0]
    p = grid.shape[1]
    for i in numba.prange(n):  # each sample writes only its own row: parallel-safe
        s = i % n_rep  # buf may stack several copies of the batch (packed steps)
        for j in range(regions.shape[1]):
            g = grid[regions[i, j]]
            for ch in range(c):
                for k in range(p):
                    buf[i, ch, g[k]] = rep[s, ch, g[k]]


@numba.njit(cache=True)
def _band(g: np.ndarray) -> np.ndarray:
    """(n, 2) [first, last + 1) column of each row's non-zero entries (the whole row if it has none).

    The blur skips the terms outside: they are exact zeros times finite values, and adding ±0.0 to a sum that
    started at +0.0 never changes it, so the banded sums equal the full ones bit for bit (finite images)."""
    n, m = g.shape
    out = np.empty((n, 2), dtype=np.int64)
    for r in range(n):
        first, last = 0, m
        while first < m and g[r, first] == 0.0:
            first += 1
        if first == m:  # an all-zero row: keep the whole row
            first = 0
        else:
            while g[r, last - 1] == 0.0:
                last -= 1
        out[r, 0], out[r, 1] = first, last
    return out


@numba.njit(cache=True, parallel=True)
def _blur(buf: np.ndarray, regions: np.ndarray, gy: np.ndarray, gx: np.ndarray, region: int, w: int) -> None:
    n, c, _ = buf.shape
    h, wb = gy.shape[0], -(-w // region)
    band_y, band_x = _band(gy), _band(gx)  # the filters' non-zero bands (a Gaussian's: ±4σ)
    for i in numba.prange(n):
        t1 = np.empty((region, w), dtype=np.float64)  # float64 accumulation, as the torch twin
        out = np.empty((region, region), dtype=np.float64)
        tile = np.empty((h, w), dtype=np.float64)  # the rows x columns the region reads, as float64
        for j in range(regions.shape[1]):  # in order: step k blurs the image left by step k - 1
            y0, x0 = (regions[i, j] // wb) * region, (regions[i, j] % wb) * region
            ny, nx = min(region, h - y0), min(region, w - x0)
            # only the columns the region's output rows read (the band of gx's rows x0 .. x0 + nx - 1), and the
            # rows its output columns read (the band of gy's rows y0 .. y0 + ny - 1)
            c0, c1 = band_x[x0, 0], band_x[x0, 1]
            for xx in range(1, nx):
                c0, c1 = min(c0, band_x[x0 + xx, 0]), max(c1, band_x[x0 + xx, 1])
            q0, q1 = band_y[y0, 0], band_y[y0, 1]
            for yy in range(1, ny):
                q0, q1 = min(q0, band_y[y0 + yy, 0]), max(q1, band_y[y0 + yy, 1])
            for ch in range(c):
                for ys in range(q0, q1):
                    base = ys * w
                    for xs in range(c0, c1):
                        tile[ys, xs] = np.float64(buf[i, ch, base + xs])
                for yy in range(ny):  # t1 = Gy[rows] @ X, then out = t1 @ Gx[cols]^T
                    r0, r1 = band_y[y0 + yy, 0], band_y[y0 + yy, 1]
                    for xs in range(c0, c1):
                        t1[yy, xs] = 0.0
                    # rows outside, columns inside: contiguous reads of a private tile (vectorised); every
                    # t1[yy, xs] still adds its terms in increasing ys, as the column-wise loop, bit for bit
                    for ys in range(r0, r1):
                        gv = gy[y0 + yy, ys]
                        for xs in range(c0, c1):
                            t1[yy, xs] += gv * tile[ys, xs]
                for yy in range(ny):
                    for xx in range(nx):
                        acc = 0.0
                        for xs in range(band_x[x0 + xx, 0], band_x[x0 + xx, 1]):
                            acc += t1[yy, xs] * gx[x0 + xx, xs]
                        out[yy, xx] = acc
                for yy in range(ny):  # written after the whole region is computed from x^(k-1)
                    for xx in range(nx):
                        buf[i, ch, (y0 + yy) * w + x0 + xx] = out[yy, xx]


class NumbaBackend:
    name = "numba"

    def region_order(self, relevance: torch.Tensor, region: int) -> torch.Tensor:
        r = relevance.detach().cpu()
        if r.ndim == 3:
            r = r[:, None]
        r = np.ascontiguousarray(r.numpy())
        h, w = r.shape[2:]
        sums = _region_sums(r, region, -(-h // region), -(-w // region))
        # the sort itself: a stable sort by decreasing sum, as the torch twin
        return torch.from_numpy(_order(sums))

    def perturb_regions(self, buf: torch.Tensor, replacement: torch.Tensor, regions: torch.Tensor,
                        grid: torch.Tensor) -> None:
        n, c = buf.shape[:2]
        view = buf.view(n, c, -1).numpy()  # shares memory with buf
        rep = replacement.reshape(replacement.shape[0], c, -1).numpy()
        _perturb(view, rep, regions.reshape(n, -1).numpy(), grid.numpy())

    def blur_regions(self, buf: torch.Tensor, regions: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor,
                     region: int) -> None:
        n, c, h, w = buf.shape
        view = buf.view(n, c, h * w).numpy()  # shares memory with buf
        _blur(view, np.ascontiguousarray(regions.reshape(n, -1).numpy()), np.ascontiguousarray(gy.numpy()),
              np.ascontiguousarray(gx.numpy()), region, w)
