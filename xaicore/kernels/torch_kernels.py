"""Torch twins of the perturbation kernels (any device; the GPU path)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def region_sums(relevance: torch.Tensor, region: int) -> torch.Tensor:
    """(B, L) relevance summed over channels and each region, in float64."""
    r = relevance.to(torch.float64)
    if r.ndim == 4:
        r = r.sum(1)
    b, h, w = r.shape
    ph, pw = (-h) % region, (-w) % region
    r = F.pad(r, (0, pw, 0, ph))
    hb, wb = (h + ph) // region, (w + pw) // region
    return r.view(b, hb, region, wb, region).sum((2, 4)).reshape(b, hb * wb)


class TorchBackend:
    name = "torch"

    def region_order(self, relevance: torch.Tensor, region: int) -> torch.Tensor:
        return torch.sort(region_sums(relevance, region), dim=1, descending=True, stable=True).indices

    def perturb_regions(self, buf: torch.Tensor, replacement: torch.Tensor, regions: torch.Tensor,
                        grid: torch.Tensor) -> None:
        b, c = buf.shape[:2]
        hw = buf[0, 0].numel()
        pix = grid[regions]  # (B, P)
        idx = (pix[:, None, :] + torch.arange(c, device=buf.device).view(1, c, 1) * hw).reshape(b, -1)
        flat = buf.view(b, -1)
        flat.scatter_(1, idx, replacement.reshape(b, -1).gather(1, idx))
