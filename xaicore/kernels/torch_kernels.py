"""Torch twins of the perturbation kernels (any device; the GPU path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def region_sums(relevance: torch.Tensor, region: int) -> torch.Tensor:
    """(B, L) relevance summed over channels and each region, in float64.

    The terms are added one at a time in the numba twin's order (channel, row, column), so float64 rounding
    is the same in both and regions whose sums tie exactly in one tie in the other (a vectorised ``sum``
    rounds differently and would rank such near-ties of float64 relevance differently)."""
    r = relevance.to(torch.float64)
    if r.ndim == 3:
        r = r[:, None]
    b, c, h, w = r.shape
    ph, pw = (-h) % region, (-w) % region
    r = F.pad(r, (0, pw, 0, ph))  # adding the padding's +0.0 leaves a sum unchanged
    hb, wb = (h + ph) // region, (w + pw) // region
    v = r.view(b, c, hb, region, wb, region)
    out = torch.zeros(b, hb, wb, dtype=torch.float64, device=r.device)
    for ch in range(c):
        for dy in range(region):
            for dx in range(region):
                out += v[:, ch, :, dy, :, dx]
    return out.reshape(b, hb * wb)


class TorchBackend:
    name = "torch"

    def region_order(self, relevance: torch.Tensor, region: int) -> torch.Tensor:
        return torch.sort(region_sums(relevance, region), dim=1, descending=True, stable=True).indices

    def blur_regions(self, buf: torch.Tensor, regions: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor,
                     region: int) -> None:
        """In place, region after region: ``buf[i, :, region] = (Gy @ buf[i, c] @ Gxᵀ)[region]``, each region
        blurred from the image the previous one left (the recursion x⁽ᵏ⁾ = g(x⁽ᵏ⁻¹⁾, r_k), survey eq. 3).

        ``gy`` (H, H), ``gx`` (W, W): the float64 matrices of a separable linear filter; ``regions`` (N,) or
        (N, K) indices into the row-major grid of ``region``-sided squares (edge squares are smaller)."""
        n, c, h, w = buf.shape
        regions = regions.reshape(n, -1)
        wb = -(-w // region)
        offs = torch.arange(region, device=buf.device)
        rows_n = torch.arange(n, device=buf.device)[:, None, None, None]
        chans = torch.arange(c, device=buf.device)[None, :, None, None]
        for j in range(regions.shape[1]):  # sequential by definition: step k reads step k - 1's output
            # edge squares: clamping repeats their last row/column (written twice with the same value)
            ys = ((regions[:, j] // wb) * region)[:, None].add(offs).clamp_max(h - 1)  # (N, region)
            xs = ((regions[:, j] % wb) * region)[:, None].add(offs).clamp_max(w - 1)
            t1 = gy[ys][:, None] @ buf.to(torch.float64)  # (N, C, region, W)
            out = t1 @ gx[xs].transpose(1, 2)[:, None]  # (N, C, region, region)
            buf[rows_n, chans, ys[:, None, :, None], xs[:, None, None, :]] = out.to(buf.dtype)
