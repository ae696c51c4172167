"""Per-sample random streams keyed by (seed, sample content).

A sample's noise depends only on the seed and the sample itself, not on its position in a batch or on how
the pipeline chunks the data set: batched results equal per-sample results, and reruns are bitwise equal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import numpy as np
import torch


def sample_keys(x: torch.Tensor) -> list[int]:
    """A 64-bit digest of each sample's bytes."""
    flat = x.detach().to("cpu", torch.float32).contiguous().reshape(x.shape[0], -1).numpy()
    return [int.from_bytes(hashlib.blake2b(row.tobytes(), digest_size=8).digest(), "little") for row in flat]


def sample_generators(x: torch.Tensor, seed: int, stream: int) -> list[np.random.Generator]:
    """One numpy generator per sample; ``stream`` separates uses (relevance noise, perturbation noise...)."""
    return [np.random.default_rng([seed, stream, key]) for key in sample_keys(x)]


def per_sample_uniform(x: torch.Tensor, seed: int, stream: int, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    """U(low, high) noise of ``x``'s shape, float32, on ``x``'s device, drawn per sample."""
    shape = tuple(x.shape[1:])
    draws = [g.uniform(low, high, size=shape).astype(np.float32) for g in sample_generators(x, seed, stream)]
    return torch.from_numpy(np.stack(draws)).to(x.device)


def per_sample_exponential(x: torch.Tensor, seed: int, stream: int) -> torch.Tensor:
    """Exp(1) draws of ``x``'s shape, float64, on ``x``'s device, drawn per sample (the Dirichlet's gammas)."""
    shape = tuple(x.shape[1:])
    draws = [g.standard_exponential(size=shape) for g in sample_generators(x, seed, stream)]
    return torch.from_numpy(np.stack(draws)).to(x.device)


def iter_per_sample_normal(x: torch.Tensor, seed: int, stream: int, n_draws: int,
                           chunk: int) -> Iterator[torch.Tensor]:
    """N(0, 1) noise for ``n_draws`` copies of each sample, yielded as (B, k, *x.shape[1:]) float32 blocks of
    k ≤ ``chunk`` copies. Each sample's generator is read in order, so the draws do not depend on ``chunk``."""
    gens = sample_generators(x, seed, stream)
    shape = tuple(x.shape[1:])
    for start in range(0, n_draws, max(1, chunk)):
        k = min(max(1, chunk), n_draws - start)
        draws = [g.standard_normal(size=(k, *shape), dtype=np.float32) for g in gens]
        yield torch.from_numpy(np.stack(draws)).to(x.device)


def per_sample_normal(x: torch.Tensor, seed: int, stream: int, n_draws: int) -> torch.Tensor:
    """N(0, 1) noise of shape (B, n_draws, *x.shape[1:]), float32, on ``x``'s device, drawn per sample."""
    return next(iter_per_sample_normal(x, seed, stream, n_draws, n_draws))
