"""The backend interface and its choice by name and device."""

from __future__ import annotations

from functools import lru_cache
from typing import Protocol

import numpy as np
import torch

from xaicore.errors import XaiCoreError


class Backend(Protocol):
    name: str

    def region_order(self, relevance: torch.Tensor, region: int) -> torch.Tensor:
        """(B, L) region indices by decreasing summed relevance (stable: ties keep index order)."""

    def blur_regions(self, buf: torch.Tensor, regions: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor,
                     region: int) -> None:
        """In place, for each sample and each of its K ``regions`` in order: the square is replaced by the
        separable filter ``gy`` (H, H), ``gx`` (W, W) (float64) of the current image, i.e. read after the
        previous squares were written (exact recursive perturbation, survey §4.5.1 eq. 3)."""


@lru_cache(maxsize=64)
def _grid_np(h: int, w: int, region: int) -> np.ndarray:
    hb, wb = -(-h // region), -(-w // region)
    p = region * region
    grid = np.empty((hb * wb, p), dtype=np.int64)
    for by in range(hb):
        for bx in range(wb):
            ys = np.arange(by * region, min((by + 1) * region, h))
            xs = np.arange(bx * region, min((bx + 1) * region, w))
            flat = (ys[:, None] * w + xs[None, :]).ravel()
            # edge regions are smaller: pad with their own first pixel (writing it twice is harmless)
            grid[by * wb + bx] = np.concatenate([flat, np.full(p - flat.size, flat[0])])
    grid.setflags(write=False)
    return grid


def region_grid(h: int, w: int, region: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(L, region²) flat pixel indices of each region of an h×w image, row-major over the region grid.
    Edge regions of images not divisible by ``region`` are smaller (padded by repetition)."""
    if region < 1:
        raise XaiCoreError(f"region must be a positive side length, got {region}")
    return torch.from_numpy(_grid_np(int(h), int(w), int(region)).copy()).to(device)


#: the kernel backends: numba (CPU), torch (any device), auto (numba on the CPU, torch elsewhere)
BACKENDS = ("auto", "numba", "torch")


def get_backend(name: str = "auto", device: torch.device | str = "cpu") -> Backend:
    """``numba`` (CPU tensors only), ``torch`` (any device) or ``auto`` (numba on CPU, torch elsewhere)."""
    device = torch.device(device)
    if name == "auto":
        name = "numba" if device.type == "cpu" else "torch"
    if name == "numba":
        if device.type != "cpu":
            raise XaiCoreError(f"the numba backend runs on the CPU; data is on {device}: use backend torch")
        from xaicore.kernels.numba_kernels import NumbaBackend

        return NumbaBackend()
    if name == "torch":
        from xaicore.kernels.torch_kernels import TorchBackend

        return TorchBackend()
    raise XaiCoreError(f"unknown kernel backend {name!r}; expected {', '.join(BACKENDS)}")
