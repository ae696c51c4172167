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
def scale_by_region_max(e: np.ndarray, region: int, low: float, high: float, out: np.ndarray) -> None:
    """out = low + (high − low)·e / max(e over e's region) for (B, C, H, W) ``e``, regions ``region``-sided squares
    from the top left (edge squares smaller); float64 arithmetic, cast to ``out``'s dtype (the Dirichlet draw)."""
    b, c, h, w = e.shape
    scale = high - low
    for i in numba.prange(b):
        for ch in range(c):
            for y0 in range(0, h, region):
                for x0 in range(0, w, region):
                    y1, x1 = min(y0 + region, h), min(x0 + region, w)
                    peak = e[i, ch, y0, x0]
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            peak = max(peak, e[i, ch, y, x])
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            out[i, ch, y, x] = low + scale * e[i, ch, y, x] / peak


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


@numba.njit(cache=True, parallel=True)
def _blur_sequence(buf: np.ndarray, regions: np.ndarray, gy: np.ndarray, gx: np.ndarray, region: int,
                   w: int) -> None:
    """:func:`_blur` for many steps at once: V = Gy·X is computed once per image and kept up to date.

    Step k's region is V[its rows] @ Gxᵀ[:, its columns] (the same increasing-index sums as :func:`_blur`);
    writing it changes X by Δ on that square only, so V changes by Gy[:, its rows] @ Δ on its columns only:
    2·r²·(8σ + r) multiply-adds a step instead of r·(r + 8σ)·8σ. V then differs from a fresh Gy·X by the
    rounding of those updates (~1e-16 relative, float64), far below the image's float32 resolution.
    The O(H·W) setup loops run over 1-D row views (numba vectorises those, not 2-D indexing); the per-step
    loops index in 2-D (a view costs a reference count) and keep four columns in scalars."""
    n, c, _ = buf.shape
    h, wb = gy.shape[0], -(-w // region)
    band_y, band_x = _band(gy), _band(gx)  # the filters' non-zero bands (a Gaussian's: ±4σ)
    gxt, gyt = gx.T.copy(), gy.T.copy()
    band_t = _band(gyt)  # the rows of V a change of image row y reaches
    for i in numba.prange(n):
        v = np.empty((h, w), dtype=np.float64)
        tile = np.empty((h, w), dtype=np.float64)
        out = np.empty((region, region), dtype=np.float64)
        for ch in range(c):
            img = buf[i, ch]
            for ys in range(h):
                tr = tile[ys]
                for xs in range(w):
                    tr[xs] = img[ys * w + xs]
            for y in range(h):  # V = Gy·X over each row's band, sums in increasing index
                vr = v[y]
                vr[:] = 0.0
                for ys in range(band_y[y, 0], band_y[y, 1]):
                    gv, tr = gy[y, ys], tile[ys]
                    for xs in range(w):
                        vr[xs] += gv * tr[xs]
            for j in range(regions.shape[1]):  # in order: step k reads the image step k - 1 left
                y0, x0 = (regions[i, j] // wb) * region, (regions[i, j] % wb) * region
                ny, nx = min(region, h - y0), min(region, w - x0)
                for yy in range(ny):
                    y = y0 + yy
                    for xb in range(0, nx, 4):
                        q = x0 + xb
                        if xb + 4 <= nx:
                            a0 = a1 = a2 = a3 = 0.0
                            # each column's own increasing-xs sum over the union of the four bands: the
                            # zero terms outside a column's band add ±0.0, which changes no sum
                            lo = min(min(band_x[q, 0], band_x[q + 1, 0]), min(band_x[q + 2, 0], band_x[q + 3, 0]))
                            hi = max(max(band_x[q, 1], band_x[q + 1, 1]), max(band_x[q + 2, 1], band_x[q + 3, 1]))
                            for xs in range(lo, hi):
                                vv = v[y, xs]
                                a0 += vv * gxt[xs, q]
                                a1 += vv * gxt[xs, q + 1]
                                a2 += vv * gxt[xs, q + 2]
                                a3 += vv * gxt[xs, q + 3]
                            out[yy, xb], out[yy, xb + 1], out[yy, xb + 2], out[yy, xb + 3] = a0, a1, a2, a3
                        else:
                            for xx in range(xb, nx):
                                acc = 0.0
                                for xs in range(band_x[x0 + xx, 0], band_x[x0 + xx, 1]):
                                    acc += v[y, xs] * gxt[xs, x0 + xx]
                                out[yy, xx] = acc
                for yy in range(ny):
                    base = (y0 + yy) * w + x0
                    for xx in range(nx):
                        old = np.float64(buf[i, ch, base + xx])
                        buf[i, ch, base + xx] = out[yy, xx]
                        out[yy, xx] = np.float64(buf[i, ch, base + xx]) - old  # Δ as stored (buf's dtype)
                # V[:, columns] += Gy[:, rows] @ Δ, row by row of the square, on the rows of V it reaches
                for yy in range(ny):
                    y = y0 + yy
                    for xb in range(0, nx, 4):
                        q = x0 + xb
                        if xb + 4 <= nx:
                            d0, d1, d2, d3 = out[yy, xb], out[yy, xb + 1], out[yy, xb + 2], out[yy, xb + 3]
                            for ys in range(band_t[y, 0], band_t[y, 1]):
                                gv = gyt[y, ys]
                                v[ys, q] += gv * d0
                                v[ys, q + 1] += gv * d1
                                v[ys, q + 2] += gv * d2
                                v[ys, q + 3] += gv * d3
                        else:
                            for xx in range(xb, nx):
                                dv = out[yy, xx]
                                for ys in range(band_t[y, 0], band_t[y, 1]):
                                    v[ys, x0 + xx] += gyt[y, ys] * dv


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

    def blur_regions(self, buf: torch.Tensor, regions: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor,
                     region: int) -> None:
        n, c, h, w = buf.shape
        view = buf.view(n, c, h * w).numpy()  # shares memory with buf
        regions = np.ascontiguousarray(regions.reshape(n, -1).numpy())
        gy_np, gx_np = np.ascontiguousarray(gy.numpy()), np.ascontiguousarray(gx.numpy())
        if regions.shape[1] * region * region * 4 >= h * w:  # many steps: V = Gy·X pays for itself
            _blur_sequence(view, regions, gy_np, gx_np, region, w)
        else:
            _blur(view, regions, gy_np, gx_np, region, w)
