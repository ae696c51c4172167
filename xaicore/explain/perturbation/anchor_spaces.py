"""The perturbation distributions D(z|A) of Anchors (Ribeiro, Singh & Guestrin 2018, AAAI, §3 and §4; survey
§6.5), one small class per input kind, bound to one instance.

Every space answers the same questions: ``n_predicates`` (P); ``sample(rules, n, rng)`` → (R·n model inputs,
``agree`` (R·n, P) bool: whether draw k satisfies predicate p, ``keys`` (R·n,) int64 in 0..``n_inputs``−1: equal
exactly when two draws are the same model input, or None where the inputs are too many to number), n draws under
each of the R rules of ``rules`` ((R, P) masks: the predicates held fixed), rule r's in rows r·n..(r+1)·n−1;
``coverage(rules)`` (C, P) → (C,) the probability that a draw of D(z|∅) satisfies each rule, computed exactly;
``describe(rule)`` → the rule in words; ``spread(rule)`` → relevance of one instance's shape, 1 on the rule's
features and 0 elsewhere.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from xaicore.features import PAD, UNK, ColumnStats, Segments


class ValueCodes:
    """Each column's distinct training values numbered 0..K_j−1 (K_j: a value never seen in training), so that a
    table row is one integer Σ_j code_j·Π_{i<j}(K_i + 1) (``n_inputs``: that product, None past 2^62). Built once
    per batch and shared by its :class:`TabularSpace` instances."""

    def __init__(self, stats: ColumnStats) -> None:
        self.values = [np.unique(stats.train[:, j]) for j in range(stats.n_features)]
        self.train = np.stack([np.searchsorted(v, stats.train[:, j]) for j, v in enumerate(self.values)], 1)
        radix = [len(v) + 1 for v in self.values]
        self.n_inputs: int | None = math.prod(radix) if math.prod(radix) < 2 ** 62 else None
        self.mult = np.cumprod([1] + radix[:-1]).astype(np.int64)

    def of_row(self, row: np.ndarray) -> np.ndarray:
        """(F,) codes of one row: the training value's number, or K_j for a value unseen in training."""
        out = np.empty(len(self.values), dtype=np.int64)
        for j, v in enumerate(self.values):
            k = int(np.searchsorted(v, row[j]))
            out[j] = k if k < len(v) and v[k] == row[j] else len(v)
        return out


class TabularSpace:
    """Predicates as Ribeiro's reference ``anchor-exp`` builds them: a nominal column has one, "column j equals
    the instance's code"; a numeric column one one-sided predicate per edge of its training quartiles
    (:class:`~xaicore.features.ColumnStats`), "x_j <= q_v" for the edges at or above the instance's value and
    "x_j > q_v" for those below it. A rule may then hold a numeric column to a half-line or to several bins, the
    widest range that keeps the precision, which a two-sided one-bin predicate cannot.

    D(z|A), as anchor-exp's ``sample_from_train``: a training row drawn uniformly; each anchored nominal column
    set to the instance's code; each anchored numeric column whose bin lies outside the range A allows given the
    value of a random training row inside it. Coverage is exact: the fraction of training rows that satisfy A
    (anchor-exp estimates it on 10,000 draws)."""

    def __init__(self, row: np.ndarray, stats: ColumnStats, codes: ValueCodes, names: list[list[str]]) -> None:
        self.row, self.stats, self.codes, self.names = row, stats, codes, names
        self.bins = stats.discretize(row[None])[0]
        self.row_codes = codes.of_row(row)
        self.columns = list(stats.names) if stats.names else [f"x{j}" for j in range(stats.n_features)]
        col, lo, hi = [], [], []  # predicate p: lo_p <= bin of column col_p <= hi_p
        for j in range(stats.n_features):
            if j in stats.nominal:
                col.append(j), lo.append(int(self.bins[j])), hi.append(int(self.bins[j]))
                continue
            top = stats.n_bins(j) - 1
            for v in range(top):  # edge v separates bins v and v + 1
                col.append(j)
                if self.bins[j] <= v:
                    lo.append(0), hi.append(v)  # x_j <= q_v
                else:
                    lo.append(v + 1), hi.append(top)  # x_j > q_v
        self.col, self.lo, self.hi = np.array(col, dtype=np.int64), np.array(lo), np.array(hi)
        self.n_predicates = len(col)
        #: one predicate per column, in column order (a nominal table): the columns index the predicates directly
        self._per_column = np.array_equal(self.col, np.arange(stats.n_features))
        self._exact = bool((self.lo == self.hi).all())  # every predicate one bin: agreement is equality
        self.n_inputs = codes.n_inputs
        self.train_agree = self._agree(stats.bins)  # (N, P): training rows satisfying each predicate
        self._outside: np.ndarray | None = None

    def _agree(self, bins: np.ndarray) -> np.ndarray:
        b = bins if self._per_column else bins[:, self.col]
        if self._exact:
            return b == self.lo[None]
        return (b >= self.lo[None]) & (b <= self.hi[None])

    def _ranges(self, rules: np.ndarray, j: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per rule: whether it holds column j, and the bins it allows there (lo, hi)."""
        which = slice(j, j + 1) if self._per_column else self.col == j
        on = rules[:, which]
        lo, hi = self.lo[which], self.hi[which]
        held = on.any(1)
        low = np.where(on, lo[None], 0).max(1)
        high = np.where(on, hi[None], self.stats.n_bins(j) - 1).min(1)
        return held, low, high

    def sample(self, rules: np.ndarray, n: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        st = self.stats
        idx = rng.integers(0, st.train.shape[0], size=rules.shape[0] * n)
        rows, bins, codes = st.train[idx], st.bins[idx], self.codes.train[idx]
        held_any = rules.any(0)
        for j in np.flatnonzero(held_any) if self._per_column else np.unique(self.col[held_any]):
            if j in st.nominal:  # the instance's value
                held = np.repeat(rules[:, j] if self._per_column else rules[:, self.col == j].any(1), n)
                rows[held, j], codes[held, j], bins[held, j] = self.row[j], self.row_codes[j], self.bins[j]
                continue
            held, low, high = (np.repeat(a, n) for a in self._ranges(rules, j))
            off = held & ((bins[:, j] < low) | (bins[:, j] > high))
            for a, b in {(int(a), int(b)) for a, b in zip(low[off], high[off], strict=True)}:
                rows_ab = np.flatnonzero(off & (low == a) & (high == b))
                inside = np.flatnonzero((st.bins[:, j] >= a) & (st.bins[:, j] <= b))
                if not inside.size:  # no training value in the range: the instance's own
                    rows[rows_ab, j], codes[rows_ab, j], bins[rows_ab, j] = self.row[j], self.row_codes[j], \
                        self.bins[j]
                    continue
                pick = inside[rng.integers(0, inside.size, size=rows_ab.size)]
                rows[rows_ab, j], codes[rows_ab, j], bins[rows_ab, j] = st.train[pick, j], \
                    self.codes.train[pick, j], st.bins[pick, j]
        keys = codes @ self.codes.mult if self.n_inputs is not None else None
        return rows, self._agree(bins), keys

    def coverage(self, rules: np.ndarray) -> np.ndarray:
        if self._outside is None:
            self._outside = (~self.train_agree).astype(np.float32)
        return ((self._outside @ rules.T.astype(np.float32)) == 0).mean(0)

    def describe(self, rule: Sequence[int]) -> str:
        """The rule's columns in the order their first predicate was added, a numeric column's predicates merged
        into one range as anchor-exp names them: ``sex = female AND age <= 28.00 AND 7.90 < fare <= 31.00``."""
        mask = np.zeros(self.n_predicates, dtype=bool)
        mask[list(rule)] = True
        parts = []
        for j in dict.fromkeys(int(self.col[p]) for p in rule):
            if j in self.stats.nominal:
                parts.append(self.names[j][self.bins[j]])
                continue
            _, (low,), (high,) = self._ranges(mask[None], j)
            e, name, top = self.stats.edges[j], self.columns[j], self.stats.n_bins(j) - 1
            if low > 0 and high < top:
                parts.append(f"{e[low - 1]:.2f} < {name} <= {e[high]:.2f}")
            elif low > 0:
                parts.append(f"{name} > {e[low - 1]:.2f}")
            else:
                parts.append(f"{name} <= {e[high]:.2f}")
        return " AND ".join(parts)

    def spread(self, rule: np.ndarray) -> torch.Tensor:
        """(F,) 1 on the columns the rule constrains."""
        out = np.zeros(self.stats.n_features)
        out[np.unique(self.col[rule])] = 1.0
        return torch.from_numpy(out)


class _Bernoulli:
    """Spaces whose free features are switched off independently with probability 1/2 (anchor-exp's text UNK
    distribution and its image explainer): coverage of A is exactly 2^−|A|."""

    n_predicates: int

    def _init_switches(self, n_predicates: int) -> None:
        self.n_predicates = n_predicates
        self.n_inputs: int | None = 2 ** n_predicates if n_predicates <= 62 else None
        self._bits = np.left_shift(1, np.arange(min(n_predicates, 62), dtype=np.int64))

    def switches(self, rules: np.ndarray, n: int, rng: np.random.Generator
                 ) -> tuple[np.ndarray, np.ndarray | None]:
        """(R·n, P) bool: which features keep the instance's value (all of the rule's, half of the others), and
        their number Σ_p keep_p·2^p (the input is a function of them; None past 62 features)."""
        keep = (rng.random((rules.shape[0] * n, self.n_predicates)) < 0.5) | np.repeat(rules, n, axis=0)
        return keep, keep.astype(np.int64) @ self._bits if self.n_inputs is not None else None

    def coverage(self, rules: np.ndarray) -> np.ndarray:
        return 0.5 ** rules.sum(1).astype(np.float64)


class TextSpace(_Bernoulli):
    """Predicates: the non-pad token positions. D(z|A): every non-anchored token replaced by UNK with probability
    1/2, anchored ones kept (anchor-exp's ``AnchorText(use_unk_distribution=True)``)."""

    def __init__(self, tokens: np.ndarray, vocab: Sequence[str]) -> None:
        self.tokens, self.vocab = tokens, vocab
        self.positions = np.flatnonzero(tokens != PAD)
        self.words = tokens[self.positions]
        self._init_switches(self.positions.size)

    def sample(self, rules: np.ndarray, n: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        keep, keys = self.switches(rules, n, rng)
        ids = np.repeat(self.tokens[None], keep.shape[0], axis=0)
        ids[:, self.positions] = np.where(keep, self.words[None], UNK)
        return ids, keep, keys

    def describe(self, rule: Sequence[int]) -> str:
        """The anchored words in sentence order: ``not AND bad``; ``#id`` without a vocabulary."""
        ids = [int(self.words[p]) for p in sorted(rule)]
        return " AND ".join(self.vocab[i] if 0 <= i < len(self.vocab) else f"#{i}" for i in ids)

    def spread(self, rule: np.ndarray) -> torch.Tensor:
        out = np.zeros(self.tokens.shape, dtype=np.float32)
        out[self.positions[rule]] = 1.0
        return torch.from_numpy(out)


class ImageSpace(_Bernoulli):
    """Predicates: the instance's superpixels. D(z|A): every non-anchored superpixel switched to ``fill`` with
    probability 1/2 (anchor-exp's ``AnchorImage``, whose fill is each segment's mean colour by default)."""

    def __init__(self, image: torch.Tensor, labels: torch.Tensor, count: int, fill: torch.Tensor) -> None:
        self.image, self.labels, self.fill = image, labels, fill
        self._init_switches(count)

    def sample(self, rules: np.ndarray, n: int, rng: np.random.Generator
               ) -> tuple[torch.Tensor, np.ndarray, np.ndarray | None]:
        keep, keys = self.switches(rules, n, rng)
        on = torch.from_numpy(keep).to(self.image.device)[:, self.labels]  # (R·n, H·W)
        on = on.view(keep.shape[0], 1, *self.image.shape[1:])
        return torch.where(on, self.image[None], self.fill[None]), keep, keys

    def describe(self, rule: Sequence[int]) -> str:
        """``superpixels 3, 7`` (the empty rule: "")."""
        return "superpixels " + ", ".join(str(p) for p in sorted(rule)) if rule else ""

    def spread(self, rule: np.ndarray) -> torch.Tensor:
        on = torch.from_numpy(rule).to(self.image.device)[self.labels]
        return on.view(1, *self.image.shape[1:]).expand_as(self.image).to(self.image.dtype)


def image_spaces(x: torch.Tensor, features: Segments, fill: torch.Tensor) -> list[ImageSpace]:
    """One :class:`ImageSpace` per image of the batch."""
    labels = features.labels.expand(x.shape[0], -1)
    return [ImageSpace(x[i], labels[i], int(features.counts[i]), fill[i]) for i in range(x.shape[0])]
