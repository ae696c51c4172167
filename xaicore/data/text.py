"""Text data: a deterministic tokenizer and vocabulary, a generated sentiment corpus with a known rule, and a
researcher's own file of labelled lines.

The sentiment corpus: every sentence holds 4–9 words of FILLER and, at a random position, exactly one sentiment
unit: a keyword of POSITIVE or NEGATIVE alone (the label is its polarity), or NEGATOR ("not") immediately
followed by a keyword (the polarity flipped: "not bad" is positive, "not good" negative); about 40 % are negated.

The rule, :func:`sentiment_rule`, applies to any token list, perturbed sentences included:

1. ``<pad>`` tokens are dropped first (a pad is no word; ``<unk>`` is a word nobody knows);
2. the first keyword decides: its polarity (1 positive, 0 negative), flipped when the token right before it is
   "not". A "not" before anything else ("not <unk>", "not the") flips nothing;
3. with no keyword at all the label is undefined: -1.

Every generated label equals the rule applied to the sentence's tokens.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from xaicore.data.core import PAD, UNK, Dataset
from xaicore.data.files import _split
from xaicore.data.tabular import class_order
from xaicore.errors import XaiCoreError

POSITIVE = ("good", "great", "excellent", "wonderful", "fine")
NEGATIVE = ("bad", "awful", "terrible", "boring", "poor")
NEGATOR = "not"
FILLER = ("the", "movie", "film", "was", "plot", "actors", "story", "really", "quite", "very", "and", "it", "this",
          "a", "is", "of", "with", "scene", "ending", "director")
SPECIALS = ("<pad>", "<unk>")
_WORD = re.compile(r"[a-z0-9']+")


def tokenize(text: str) -> list[str]:
    """Lower-cased words: the runs of ``[a-z0-9']``; everything else separates them."""
    return _WORD.findall(text.lower())


def build_vocab(token_lists: Sequence[Sequence[str]], *, min_count: int = 1) -> tuple[str, ...]:
    """("<pad>", "<unk>") then every word seen ``min_count`` times or more, by falling count, then alphabetically."""
    counts = Counter(t for tokens in token_lists for t in tokens if t not in SPECIALS)
    return SPECIALS + tuple(w for w, c in sorted(counts.items(), key=lambda wc: (-wc[1], wc[0])) if c >= min_count)


def encode(token_lists: Sequence[Sequence[str]], vocab: Sequence[str], max_len: int) -> np.ndarray:
    """(N, max_len) int64 token ids: unknown words are UNK, longer lists are cut, shorter ones padded with PAD
    at the end."""
    if max_len < 1:
        raise XaiCoreError(f"max_len must be at least 1, got {max_len}")
    index = {w: i for i, w in enumerate(vocab)}
    out = np.full((len(token_lists), max_len), PAD, dtype=np.int64)
    for i, tokens in enumerate(token_lists):
        ids = [index.get(t, UNK) for t in tokens[:max_len]]
        out[i, :len(ids)] = ids
    return out


def sentiment_rule(tokens: Sequence[str]) -> int:
    """The corpus's rule (module docstring): 1 positive, 0 negative, -1 without any keyword."""
    words = [t for t in tokens if t != SPECIALS[PAD]]
    for i, t in enumerate(words):
        if t in POSITIVE or t in NEGATIVE:
            polarity = int(t in POSITIVE)
            return 1 - polarity if i > 0 and words[i - 1] == NEGATOR else polarity
    return -1


def _generate(n: int, rng: np.random.Generator) -> tuple[list[list[str]], np.ndarray]:
    corpus, labels = [], np.empty(n, dtype=np.int64)
    for i in range(n):
        filler = [str(w) for w in rng.choice(FILLER, size=int(rng.integers(4, 10)))]
        positive = bool(rng.random() < 0.5)
        word = str(rng.choice(POSITIVE if positive else NEGATIVE))
        negated = bool(rng.random() < 0.4)
        at = int(rng.integers(0, len(filler) + 1))
        corpus.append(filler[:at] + ([NEGATOR, word] if negated else [word]) + filler[at:])
        labels[i] = int(positive != negated)
    return corpus, labels


def _text_dataset(name: str, corpus: list[list[str]], y: np.ndarray, class_names: tuple[str, ...], max_len: int,
                  test_fraction: float, seed: int) -> Dataset:
    tr, te = _split(y, test_fraction, seed)
    vocab = build_vocab([corpus[i] for i in tr])
    x = torch.from_numpy(encode(corpus, vocab, max_len))
    return Dataset(name=name, x_train=x[tr], y_train=torch.from_numpy(y[tr]), x_test=x[te],
                   y_test=torch.from_numpy(y[te]), idx_test=torch.from_numpy(te).long(), n_classes=len(class_names),
                   kind="text", vocab=vocab, class_names=class_names)


def sentiment(n: int = 2000, *, max_len: int = 12, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """``n`` generated sentences (module docstring) as token ids; the vocab comes from the training split only,
    ``idx_test`` are positions in the generated corpus. The same ``seed`` gives the same arrays."""
    if max_len < 11:
        raise XaiCoreError(f"sentiment needs max_len >= 11 (its longest sentence), got {max_len}")
    if n < 10:
        raise XaiCoreError(f"sentiment needs n >= 10 sentences, got {n}")
    corpus, y = _generate(n, np.random.default_rng([seed, 0x5E47]))
    return _text_dataset("sentiment", corpus, y, ("negative", "positive"), max_len, test_fraction, seed)


def sentiment_corpus(n: int = 2000, *, seed: int = 0) -> tuple[list[list[str]], np.ndarray]:
    """The token lists and labels :func:`sentiment` draws for ``seed`` (``idx_test`` indexes them)."""
    return _generate(n, np.random.default_rng([seed, 0x5E47]))


def sentences(ds: Dataset, x_ids: torch.Tensor | np.ndarray) -> list[str]:
    """Token ids (N, T) or (T,) back to text with ``ds.vocab``, pads dropped (an id outside the vocab is
    "<unk>")."""
    ids = np.asarray(x_ids.detach().cpu() if isinstance(x_ids, torch.Tensor) else x_ids)
    ids = ids.reshape(1, -1) if ids.ndim == 1 else ids
    n = len(ds.vocab)
    return [" ".join(ds.vocab[i] if 0 <= i < n else SPECIALS[UNK] for i in row.tolist() if i != PAD) for row in ids]


def load_textfile(path: str | Path, *, max_len: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """One example per line, ``<label><TAB><text>``; the text is tokenized (:func:`tokenize`), cut to
    ``max_len`` words. Class names sorted (as integers when all are); the vocab comes from the training split.
    Blank lines are allowed only at the end. ``idx_test``: positions of the examples in the file (0 = line 1)."""
    path = Path(path)
    if not path.is_file():
        raise XaiCoreError(f"text file {path} not found")
    try:
        lines = path.read_text(encoding="utf-8").split("\n")
    except UnicodeDecodeError as e:
        raise XaiCoreError(f"text file {path} is not UTF-8 ({e})") from None
    while lines and not lines[-1].strip():
        lines.pop()
    labels, corpus = [], []
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            raise XaiCoreError(f"{path} line {number}: empty line")
        label, tab, text = line.partition("\t")
        if not tab:
            raise XaiCoreError(f"{path} line {number}: no TAB-separated label (expected <label><TAB><text>)")
        if not label.strip():
            raise XaiCoreError(f"{path} line {number}: empty label")
        tokens = tokenize(text)
        if not tokens:
            raise XaiCoreError(f"{path} line {number}: empty text (no word after the label)")
        labels.append(label.strip())
        corpus.append(tokens)
    class_names = class_order(labels)
    if len(class_names) < 2:
        raise XaiCoreError(f"text file {path} has {len(class_names)} class(es); a classifier needs at least 2")
    y = np.array([class_names.index(c) for c in labels], dtype=np.int64)
    return _text_dataset(f"textfile:{path.stem}", corpus, y, class_names, max_len, test_fraction, seed)


__all__ = ["FILLER", "NEGATIVE", "NEGATOR", "POSITIVE", "build_vocab", "encode", "load_textfile", "sentences",
           "sentiment", "sentiment_corpus", "sentiment_rule", "tokenize"]
