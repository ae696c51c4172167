"""Tabular and text features: columns of a (B, F) table and tokens of a (B, T) sequence of token ids.

Columns carry the training statistics the perturbation methods sample from (:class:`ColumnStats`): numeric
columns are discretized into the training quartiles (``lime``'s ``QuartileDiscretizer``, which anchors uses too:
bin b of a column holds the values v with q_{b-1} < v ≤ q_b, the quartiles deduplicated), nominal columns are their
own bins (the value codes 0..K−1). Every perturbation of tabular data (lime, anchors, prediction difference,
occlusion, feature removal) reads these statistics, so they are fitted once on the training rows and passed in as
``reference=``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.features.base import Features
from xaicore.kinds import PAD, UNK, describe_kind, input_kind  # noqa: F401  (PAD/UNK re-exported)


@dataclasses.dataclass(frozen=True, eq=False)
class ColumnStats:
    """Training statistics of a table's columns (fit with :meth:`fit`).

    ``nominal``: indices of the nominal columns (their values are category codes 0..K−1); ``edges[j]``: the
    deduplicated training quartiles of numeric column j (empty for a nominal one); ``bins``: (N, F) bin of every
    training value; ``train``: (N, F) the training rows, float64; ``fill``: (F,) what a removed column becomes,
    the training mean (numeric) or mode (nominal)."""

    nominal: tuple[int, ...]
    n_categories: tuple[int, ...]
    edges: tuple[tuple[float, ...], ...]
    train: np.ndarray
    bins: np.ndarray
    #: column names and, per nominal column, its category names (for rules and figures; optional)
    names: tuple[str, ...] = ()
    categories: tuple[tuple[str, ...], ...] = ()

    @classmethod
    def fit(cls, x_train: torch.Tensor | np.ndarray, *, nominal: Sequence[int] = (),
            n_categories: Sequence[int] | None = None, names: Sequence[str] = (),
            categories: Sequence[Sequence[str]] = ()) -> ColumnStats:
        """Statistics of the (N, F) training rows; ``n_categories`` (per nominal column, in the order of
        ``nominal``) defaults to the largest code seen + 1, or to the count of its ``categories`` (one tuple per
        column, empty for numeric ones: :class:`xaicore.data.Dataset`'s)."""
        x = np.asarray(x_train.detach().cpu() if isinstance(x_train, torch.Tensor) else x_train, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise XaiCoreError(f"ColumnStats.fit needs (N >= 2, F) training rows, got {x.shape}")
        if not np.isfinite(x).all():
            raise XaiCoreError("ColumnStats.fit: the training rows hold NaN or inf")
        f = x.shape[1]
        nominal = tuple(int(j) for j in nominal)
        if any(not 0 <= j < f for j in nominal) or len(set(nominal)) != len(nominal):
            raise XaiCoreError(f"nominal columns {nominal} must be distinct indices in 0..{f - 1}")
        if names and len(names) != f or categories and len(categories) != f:
            raise XaiCoreError(f"names ({len(names)}) and categories ({len(categories)}) need one entry per column "
                               f"({f})")
        if n_categories is None and categories:
            n_categories = [len(categories[j]) for j in nominal]
        if n_categories is not None and len(n_categories) != len(nominal):
            raise XaiCoreError(f"n_categories has {len(n_categories)} entries for {len(nominal)} nominal columns")
        cats, edges = [0] * f, []
        for j in range(f):
            if j in nominal:
                col = x[:, j]
                if (col != np.round(col)).any() or col.min() < 0:
                    raise XaiCoreError(f"nominal column {j} must hold category codes 0..K-1")
                seen = int(col.max()) + 1
                k = seen if n_categories is None else int(n_categories[nominal.index(j)])
                if k < seen:
                    raise XaiCoreError(f"nominal column {j} holds code {seen - 1}, beyond its {k} categories")
                cats[j] = k
                edges.append(())
            else:
                edges.append(tuple(float(q) for q in np.unique(np.percentile(x[:, j], [25, 50, 75]))))
        stats = cls(nominal, tuple(cats), tuple(edges), x, np.empty(0), tuple(map(str, names)),
                    tuple(tuple(map(str, c)) for c in categories))
        object.__setattr__(stats, "bins", stats.discretize(x))
        return stats

    @property
    def n_features(self) -> int:
        return len(self.edges)

    def n_bins(self, j: int) -> int:
        """How many values column j's bin takes: K categories, or the quartile edges + 1."""
        return self.n_categories[j] if j in self.nominal else len(self.edges[j]) + 1

    def discretize(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """(B, F) rows → (B, F) int64 bins (nominal codes as they are). A nominal code outside the training
        categories is an error naming the column and the row."""
        x = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
        self.check(x)
        out = np.empty(x.shape, dtype=np.int64)
        for j, e in enumerate(self.edges):
            out[:, j] = x[:, j] if j in self.nominal else np.searchsorted(np.asarray(e), x[:, j], side="left")
        return out

    def check(self, x: np.ndarray) -> None:
        """Clear errors for rows that do not fit the training columns."""
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise XaiCoreError(f"tabular rows have {x.shape[-1] if x.ndim else 0} columns, training had "
                               f"{self.n_features}")
        for j in self.nominal:
            bad = (x[:, j] != np.round(x[:, j])) | (x[:, j] < 0) | (x[:, j] >= self.n_categories[j])
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise XaiCoreError(f"column {j}: value {x[i, j]:g} in row {i} is not one of the "
                                   f"{self.n_categories[j]} categories seen in training")

    def fill(self) -> np.ndarray:
        """(F,) the training mean of a numeric column, the most frequent code of a nominal one (ties: lowest)."""
        out = self.train.mean(0)
        for j in self.nominal:
            out[j] = np.bincount(self.bins[:, j], minlength=self.n_categories[j]).argmax()
        return out

    def frequencies(self, j: int) -> np.ndarray:
        """Training frequency of each of column j's bins (sums to 1): the prior p(A_j = a)."""
        counts = np.bincount(self.bins[:, j], minlength=self.n_bins(j)).astype(np.float64)
        return counts / counts.sum()

    def representatives(self, j: int) -> np.ndarray:
        """One value per bin of column j: the category code, or the training mean of the bin's values (the
        midpoint of the neighbouring edges for an empty bin)."""
        if j in self.nominal:
            return np.arange(self.n_categories[j], dtype=np.float64)
        col, b = self.train[:, j], self.bins[:, j]
        e = np.asarray(self.edges[j])
        out = np.empty(len(e) + 1)
        for k in range(len(e) + 1):
            sel = col[b == k]
            out[k] = sel.mean() if sel.size else (e[max(k - 1, 0)] + e[min(k, len(e) - 1)]) / 2
        return out

    def bin_names(self, names: Sequence[str] = (), categories: Sequence[Sequence[str]] = ()) -> list[list[str]]:
        """Per column, a readable predicate per bin: ``sex = female`` or ``2.50 < age <= 7.00`` (lime's form);
        names default to the fitted ones, then to ``x0``, ``x1``, ..."""
        names = names or self.names or [f"x{j}" for j in range(self.n_features)]
        categories = categories or self.categories
        out = []
        for j, e in enumerate(self.edges):
            n = names[j]
            if j in self.nominal:
                labels = categories[j] if categories and len(categories[j]) else [str(k) for k in
                                                                                   range(self.n_categories[j])]
                out.append([f"{n} = {v}" for v in labels])
                continue
            bins = [f"{n} <= {e[0]:.2f}"] if e else [f"{n}"]
            bins += [f"{e[k]:.2f} < {n} <= {e[k + 1]:.2f}" for k in range(len(e) - 1)]
            bins += [f"{n} > {e[-1]:.2f}"] if e else []
            out.append(bins)
        return out


def _check_table(x: torch.Tensor, owner: str) -> None:
    if x.ndim != 2 or not x.is_floating_point():
        raise NotApplicable(f"{owner} are tabular features: x must be (B, F) floating rows; "
                            f"{describe_kind(x)} is not supported")


class Columns(Features):
    """The columns of (B, F) rows: feature j is column j; ``apply`` gives a removed column ``fill``'s value
    (by default :meth:`ColumnStats.fill`, the training mean or mode); ``spread`` is the identity."""

    def __init__(self, x: torch.Tensor, stats: ColumnStats | None = None) -> None:
        _check_table(x, "columns")
        if stats is not None:
            stats.check(x.detach().cpu().double().numpy())
        self.x, self.stats = x, stats
        self.n_features = x.shape[1]
        self.counts = torch.full((x.shape[0],), self.n_features, dtype=torch.long, device=x.device)

    def default_fill(self) -> torch.Tensor:
        """x-shaped training means/modes (needs the statistics)."""
        if self.stats is None:
            raise XaiCoreError("columns: removing a column needs the training statistics (reference=ColumnStats)")
        return torch.as_tensor(self.stats.fill(), dtype=self.x.dtype, device=self.x.device).expand_as(self.x)

    def apply(self, keep: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        keep = self._check_keep(keep)
        return torch.where(keep, self.x[None], fill[None]).reshape(-1, self.n_features)

    def unchanged(self, fill: torch.Tensor) -> torch.Tensor:
        return self.x == fill

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        return self._check_values(values).clone()


class Tokens(Features):
    """The positions of (B, T) token ids: feature t is position t; padding positions are empty features (they
    change nothing); ``apply`` replaces a removed token by ``fill`` (UNK by default: word erasure, Li et al. 2016);
    ``spread`` is the identity (float relevance per position)."""

    def __init__(self, x: torch.Tensor, *, pad: int = PAD) -> None:
        if x.ndim != 2 or x.is_floating_point():
            raise NotApplicable(f"tokens are text features: x must be (B, T) integer token ids; {describe_kind(x)} "
                                "is not supported")
        self.x, self.pad = x, pad
        self.real = x != pad
        self.n_features = x.shape[1]
        self.counts = self.real.sum(1)

    def default_fill(self, unk: int = UNK) -> torch.Tensor:
        return torch.full_like(self.x, unk)

    def apply(self, keep: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
        keep = self._check_keep(keep) | ~self.real[None]
        return torch.where(keep, self.x[None], fill[None]).reshape(-1, self.n_features)

    def unchanged(self, fill: torch.Tensor) -> torch.Tensor:
        return (self.x == fill) | ~self.real

    def spread(self, values: torch.Tensor) -> torch.Tensor:
        return self._check_values(values).to(torch.float32 if not values.is_floating_point() else values.dtype)
