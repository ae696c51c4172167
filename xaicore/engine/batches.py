"""Fixed batches: the one way every loop of the library cuts N items into batches (training, forward passes,
fitting, explaining). The batches are ``[0, size)``, ``[size, 2·size)``, … whatever the run: batch composition
is set by the parameters alone, so results do not depend on who runs them (docs/reproducibility.md)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from xaicore.errors import XaiCoreError


def batch_slices(n: int, size: int) -> Iterator[slice]:
    """``slice(i, i + size)`` for i = 0, size, 2·size, … < n (the last batch may be shorter)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise XaiCoreError(f"batch size {size!r} must be a positive integer")
    for i in range(0, n, size):
        yield slice(i, min(i + size, n))


def batched(fn: Callable[..., torch.Tensor], *tensors: torch.Tensor, size: int) -> torch.Tensor:
    """``fn`` applied to consecutive batches of ``size`` rows of ``tensors`` (the same rows of each), its
    outputs concatenated along the first dimension."""
    n = tensors[0].shape[0]
    return torch.cat([fn(*(t[s] for t in tensors)) for s in batch_slices(n, size)])
