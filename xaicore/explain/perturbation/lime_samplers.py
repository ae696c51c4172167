"""LIME's neighbourhoods on tabular data and text (Ribeiro et al. 2016, §3.3; the ``lime`` package's samplers).

* Tabular (``lime.lime_tabular`` with ``discretize_continuous=True``, quartiles): every column of a draw takes a
  training bin drawn from the bins' training frequencies; the interpretable representation z_j says whether it is
  the instance's bin. A nominal column takes the drawn code, a numeric one a value of the drawn bin from the
  normal of the bin's training mean and standard deviation truncated to the bin's range (lime's
  ``undiscretize``; a bin of one value takes it). Row 0 is the instance, z = 1.
  Distance: Euclidean in z (√ of the number of changed columns), kernel width 0.75·√F.
* Text (``lime.lime_text`` with ``bow=False``): draw n of a sentence's d tokens, n uniform in 1..d, removed
  together (replaced by UNK); z_t = 1 for a kept token. Distance: 100 × the cosine distance to the all-ones row,
  kernel width 25.

Draws come from (seed, sample content) per sample, so a sample's neighbourhood does not depend on its batch.
"""

from __future__ import annotations

import numpy as np
import torch

from xaicore._rng import sample_generators
from xaicore.features import ColumnStats

_STREAM = 6


def tabular_neighbourhood(x: torch.Tensor, stats: ColumnStats, n_samples: int, seed: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """(z (B, N, F) bool, rows (B, N, F) of x's dtype): interpretable draws and the rows the model scores."""
    from scipy.stats import truncnorm

    b, f = x.shape
    xb = stats.discretize(x)
    lows, highs, means, stds = _bin_moments(stats)
    freqs = [stats.frequencies(j) for j in range(f)]
    z = np.ones((b, n_samples, f), dtype=bool)
    rows = np.empty((b, n_samples, f), dtype=np.float64)
    for i, g in enumerate(sample_generators(x, seed, _STREAM)):
        for j in range(f):
            drawn = g.choice(len(freqs[j]), size=n_samples - 1, p=freqs[j])
            z[i, 1:, j] = drawn == xb[i, j]
            if j in stats.nominal:
                rows[i, 1:, j] = drawn
                continue
            lo, hi, mu, sd = lows[j][drawn], highs[j][drawn], means[j][drawn], stds[j][drawn]
            vals = mu.copy()
            spread = (hi > lo) & (sd > 0)
            if spread.any():
                vals[spread] = truncnorm.rvs((lo[spread] - mu[spread]) / sd[spread],
                                             (hi[spread] - mu[spread]) / sd[spread], loc=mu[spread],
                                             scale=sd[spread], random_state=g)
            rows[i, 1:, j] = vals
        rows[i, 0] = x[i].detach().cpu().double().numpy()
    return torch.from_numpy(z).to(x.device), torch.from_numpy(rows).to(x.device, x.dtype)


def _bin_moments(stats: ColumnStats) -> tuple[list[np.ndarray], ...]:
    """Per numeric column, per bin: (low, high, mean, std) of its training values; the low of bin 0 and the high
    of the last are the training minimum and maximum, as ``lime``'s discretizer."""
    lows, highs, means, stds = [], [], [], []
    for j in range(stats.n_features):
        if j in stats.nominal:
            lows.append(np.empty(0)), highs.append(np.empty(0)), means.append(np.empty(0)), stds.append(np.empty(0))
            continue
        col, bins, e = stats.train[:, j], stats.bins[:, j], list(stats.edges[j])
        lows.append(np.array([col.min(), *e]))
        highs.append(np.array([*e, col.max()]))
        k = len(e) + 1
        means.append(np.array([col[bins == s].mean() if (bins == s).any() else lows[-1][s] for s in range(k)]))
        stds.append(np.array([col[bins == s].std() if (bins == s).any() else 0.0 for s in range(k)]))
    return lows, highs, means, stds


def text_neighbourhood(x: torch.Tensor, counts: torch.Tensor, n_samples: int, seed: int) -> torch.Tensor:
    """(B, N, T) bool keep-masks: row 0 keeps every token; row k removes n_k ∈ U{1..d} of the d real tokens,
    chosen without replacement; padding positions are False (empty features)."""
    b, t = x.shape
    z = np.zeros((b, n_samples, t), dtype=bool)
    for i, g in enumerate(sample_generators(x, seed, _STREAM)):
        d = int(counts[i])
        if d == 0:
            continue
        n_off = g.integers(1, d + 1, size=n_samples - 1)
        order = np.argsort(g.random((n_samples - 1, d)), axis=1).argsort(axis=1)  # a random rank per token
        z[i, 1:, :d] = order >= n_off[:, None]
        z[i, 0, :d] = True
    return torch.from_numpy(z).to(x.device)
