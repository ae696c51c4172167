"""Prediction difference analysis of table rows (Robnik-Šikonja & Kononenko 2008; survey §6.4, eqs. 21–22).

An attribute A_i is a column; its values a_1..a_m are its bins in the training :class:`ColumnStats`: the category
codes of a nominal column, the training quartile bins of a numeric one. p(y|x ← A_i = a_s) is the model's softmax
probability of the target with column i set to a_s — for a numeric column the bin's representative value,
:meth:`ColumnStats.representatives` (the training mean of the bin's values) — and the information of A_i is
removed by weighting these predictions (eq. 21/22):

    p(y|x∖A_i) = Σ_s w_s · p(y|x ← A_i = a_s)

* ``marginal`` (eq. 22): w_s = p(A_i = a_s), the training prior (:meth:`ColumnStats.frequencies`);
* ``conditional`` (eq. 21): w_s = p(A_i = a_s | x∖A_i), the frequency of a_s among the training rows whose bins
  equal x's on every other attribute; when no training row matches (frequent with many or fine-binned
  attributes), the prior of eq. 22 is used for that sample and attribute.

Every (attribute, value) copy of every row of the batch goes through :func:`xaicore.engine.packed_scores`; the
measures of eqs. 17–20 are :func:`xaicore.explain.perturbation.pda.prediction_difference`'s.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from xaicore.engine import packed_scores, target_scores
from xaicore.features import ColumnStats


def attribute_values(stats: ColumnStats) -> tuple[np.ndarray, np.ndarray]:
    """(column (C,) int64, value (C,) float64) of the C = Σ_i m_i copies: column i's bins in order, each as the
    value the column takes (the code, or the bin's representative)."""
    cols = [np.full(stats.n_bins(j), j, dtype=np.int64) for j in range(stats.n_features)]
    vals = [stats.representatives(j) for j in range(stats.n_features)]
    return np.concatenate(cols), np.concatenate(vals)


def value_weights(stats: ColumnStats, x_bins: np.ndarray, sampling: str) -> np.ndarray:
    """(B, C) float64 weights w_s of every (attribute, value) copy, in :func:`attribute_values`' order, each
    attribute's summing to 1: the priors (``marginal``) or the conditional frequencies given the other attributes'
    bins (``conditional``; the prior where no training row matches)."""
    b = x_bins.shape[0]
    out = []
    for j in range(stats.n_features):
        prior = stats.frequencies(j)
        if sampling == "marginal":
            out.append(np.broadcast_to(prior, (b, prior.size)))
            continue
        counts = conditional_counts(stats.bins, x_bins, j, prior.size)
        total = counts.sum(1, keepdims=True)
        out.append(np.where(total > 0, counts / np.maximum(total, 1), prior[None]))
    return np.concatenate(out, axis=1)


def conditional_counts(train_bins: np.ndarray, x_bins: np.ndarray, j: int, n_bins: int) -> np.ndarray:
    """(B, n_bins) counts of each bin of column j among the training rows equal to x's row on every other
    column (a grouping of the rows by their other columns, no (B, N) comparison)."""
    n = train_bins.shape[0]
    others = np.delete(np.concatenate([train_bins, x_bins]), j, axis=1)
    if others.shape[1] == 0:  # a single attribute: every training row matches
        key = np.zeros(others.shape[0], dtype=np.int64)
    else:
        key = np.unique(others, axis=0, return_inverse=True)[1].reshape(-1)
    table = np.zeros((int(key.max()) + 1, n_bins))
    np.add.at(table, (key[:n], train_bins[:, j]), 1.0)
    return table[key[n:]]


def removed_probabilities(model: nn.Module, x: torch.Tensor, target: torch.Tensor, stats: ColumnStats, *,
                          sampling: str, forward_batch: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(p(y|x) (B,), p(y|x∖A_i) (B, F), the model's number of classes K), float64, for (B, F) rows x checked
    against ``stats`` (column count, nominal codes)."""
    x_bins = stats.discretize(x)  # raises for rows that do not fit the training columns
    col, val = attribute_values(stats)
    w = torch.from_numpy(value_weights(stats, x_bins, sampling)).to(x.device)
    col_t = torch.from_numpy(col).to(x.device)
    val_t = torch.from_numpy(val).to(x.device, x.dtype)
    rows = torch.arange(x.shape[0], device=x.device)

    def build(k0: int, k1: int) -> torch.Tensor:
        buf = x[None].repeat(k1 - k0, 1, 1)  # (k, B, F): copy k0 + c sets column col[c] to val[c]
        c = torch.arange(k1 - k0, device=x.device)[:, None]
        buf[c, rows[None], col_t[k0:k1, None]] = val_t[k0:k1, None]
        return buf.reshape(-1, x.shape[1])

    with torch.no_grad():
        logits = model(x)
        p = target_scores(nn.Identity(), logits, target, "probability").to(torch.float64)
        probs = packed_scores(model, x, target, col.size, build, score="probability", forward_batch=forward_batch)
    q = torch.zeros(x.shape[0], x.shape[1], dtype=torch.float64, device=x.device)
    q.index_add_(1, col_t, w * probs.to(torch.float64))
    return p, q, int(logits.shape[1])
