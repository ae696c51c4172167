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
    """Predicate j: "column j lies in the instance's bin" (nominal: equals its code; numeric: its training quartile
    bin, :class:`~xaicore.features.ColumnStats`). anchor-exp instead gives an ordinal column one one-sided predicate
    per bin edge ("age > 20", "age <= 40"), so its rules can widen a bin; here each column has one predicate.

    D(z|A), as anchor-exp's ``sample_from_train``: a training row drawn uniformly; each anchored nominal column
    set to the instance's code, each anchored numeric column outside the instance's bin given the value of a
    random training row inside it. Coverage is exact: the fraction of training rows whose bins equal the
    instance's on A (anchor-exp estimates it on 10,000 draws)."""

    def __init__(self, row: np.ndarray, stats: ColumnStats, codes: ValueCodes, names: list[list[str]]) -> None:
        self.row, self.stats, self.codes, self.names = row, stats, codes, names
        self.bins = stats.discretize(row[None])[0]
        self.row_codes = codes.of_row(row)
        self.n_predicates = stats.n_features
        self.n_inputs = codes.n_inputs
        self.match = stats.bins == self.bins[None]  # (N, F): training rows in the instance's bin, per column
        self._outside: np.ndarray | None = None
        #: per numeric column, the training rows inside the instance's bin (nominal columns: None)
        self._inside = [None if j in stats.nominal else np.flatnonzero(self.match[:, j])
                        for j in range(self.n_predicates)]

    def sample(self, rules: np.ndarray, n: int, rng: np.random.Generator
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        st = self.stats
        idx = rng.integers(0, st.train.shape[0], size=rules.shape[0] * n)
        rows, bins, codes = st.train[idx], st.bins[idx], self.codes.train[idx]
        for j in np.flatnonzero(rules.any(0)):
            held = np.repeat(rules[:, j], n)
            inside = self._inside[j]
            if inside is None or not inside.size:  # nominal (or an empty bin): the instance's value
                rows[held, j], codes[held, j], bins[held, j] = self.row[j], self.row_codes[j], self.bins[j]
                continue
            off = np.flatnonzero(held & (bins[:, j] != self.bins[j]))  # a random training value of the bin
            pick = inside[rng.integers(0, inside.size, size=off.size)]
            rows[off, j], codes[off, j], bins[off, j] = st.train[pick, j], self.codes.train[pick, j], self.bins[j]
        keys = codes @ self.codes.mult if self.n_inputs is not None else None
        return rows, bins == self.bins[None], keys

    def coverage(self, rules: np.ndarray) -> np.ndarray:
        if self._outside is None:
            self._outside = (~self.match).astype(np.float32)
        return ((self._outside @ rules.T.astype(np.float32)) == 0).mean(0)

    def describe(self, rule: Sequence[int]) -> str:
        """The predicates in the order they were added: ``sex = female AND class = 1st``."""
        return " AND ".join(self.names[j][self.bins[j]] for j in rule)

    def spread(self, rule: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(rule.astype(np.float64))


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
