"""Anchors (Ribeiro, Singh & Guestrin 2018, "Anchors: High-Precision Model-Agnostic Explanations", AAAI; survey
§6.5): the shortest if-then rule A over interpretable features of x (columns, words, superpixels) whose precision
prec(A) = E_{D(z|A)}[1{argmax f(z) = target}] is at least τ (eq. 1) with confidence 1 − δ, found by KL-LUCB with
greedy (bottom-up, Algorithm 2: ``beam_size=1``) or beam search (Algorithm 4: the anchor of highest coverage).

The search (:mod:`.anchor_search`) follows anchor-exp's ``anchor_beam``; the perturbation distributions
(:mod:`.anchor_spaces`) follow its tabular, text and image explainers. The B instances of a batch are explained
together: every round of every instance's search asks for its draws, and all of them go through the model in the
same forward passes (``forward_batch`` inputs each) — one model call per round for the batch.

No input goes through the model twice (:class:`InputMemo`; the model runs in eval mode, so its class of an input
is fixed): the draws recur, and ``model_calls`` counts the distinct inputs classified, fewer than the draws.

Relevance: 1 on the anchor's features (columns, token positions, superpixel pixels), 0 elsewhere. Extras per
instance: ``precision`` (the empirical mean of the anchor's draws), ``coverage`` (exact), ``found`` (False when
no rule reached τ within ``max_samples`` draws or ``max_anchor_size`` predicates: the best rule is returned),
``model_calls`` and ``rule`` (a string per instance; the empty anchor is "").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from xaicore._rng import sample_generators
from xaicore.engine import FORWARD_BATCH, batch_slices, check_forward_batch, eval_mode
from xaicore.errors import XaiCoreError
from xaicore.explain.perturbation.anchor_search import AnchorConfig, AnchorResult, AnchorSearch
from xaicore.explain.perturbation.anchor_spaces import TabularSpace, TextSpace, ValueCodes, image_spaces
from xaicore.explain.registry import Explanation, register
from xaicore.features import SEGMENTATIONS, Columns, features_for, input_kind
from xaicore.features.fills import SEGMENT_FILLS

_STREAM = 9
ANCHOR_EXTRAS = ("precision", "coverage", "found", "model_calls")


def _unit(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise XaiCoreError(f"anchors: {name}={value!r} must be a number in (0, 1)")
    return float(value)


def _count(name: str, value: Any, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise XaiCoreError(f"anchors: {name}={value!r} must be a positive integer"
                           + (" or None" if allow_none else ""))
    return value


def _spaces(x: torch.Tensor, *, reference: Any, vocab: Sequence[str], features: str, n_segments: int,
            compactness: float, cell: int, fill: str, seed: int) -> list[Any]:
    if features not in SEGMENTATIONS:  # the image features; tables and text have theirs
        raise XaiCoreError(f"anchors: unknown features {features!r}; expected one of {', '.join(SEGMENTATIONS)}")
    if input_kind(x) == "text":
        if isinstance(vocab, str) or not all(isinstance(w, str) for w in vocab):
            raise XaiCoreError("anchors: vocab must be a sequence of words (id -> word), e.g. Dataset.vocab")
        return [TextSpace(t, tuple(vocab)) for t in x.detach().cpu().numpy()]
    feats, values = features_for(x, image=features, fill=fill, fills=SEGMENT_FILLS, seed=seed, reference=reference,
                                 n_segments=n_segments, compactness=compactness, cell=cell, owner="anchors")
    if isinstance(feats, Columns):
        rows = x.detach().cpu().double().numpy()
        names, codes = reference.bin_names(), ValueCodes(reference)
        return [TabularSpace(r, reference, codes, names) for r in rows]
    return image_spaces(x.detach(), feats, values)


class InputMemo:
    """The model's class of every distinct input sent for one instance, so that no input goes through the model
    twice: the perturbation spaces are discrete and their draws recur (a Titanic row has 48 possible perturbations,
    a sentence of n words 2^n). Keys number the inputs exactly (``n_inputs`` of them: a table when they are few,
    a sorted array otherwise); a space whose inputs cannot be numbered (None) is not memoised."""

    TABLE = 1 << 16

    def __init__(self, n_inputs: int | None) -> None:
        self.table = np.full(n_inputs, -1, dtype=np.int32) if n_inputs is not None and n_inputs <= self.TABLE \
            else None
        self.keys = np.zeros(0, dtype=np.int64)
        self.cls = np.zeros(0, dtype=np.int32)
        self.calls = 0

    def lookup(self, keys: np.ndarray | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(cls (n,): the known class or < 0, the rows to classify (one per new input), source (n,): where each
        unknown row's class will be among them)."""
        if keys is None:
            return np.full(n, -1, dtype=np.int32), np.arange(n), np.arange(n)
        if self.table is not None:
            cls = self.table[keys]
        else:
            pos = np.minimum(np.searchsorted(self.keys, keys), max(self.keys.size - 1, 0))
            cls = np.where(self.keys[pos] == keys, self.cls[pos], -1) if self.keys.size else np.full(n, -1)
        unknown = np.flatnonzero(cls < 0)
        if not unknown.size:
            return cls, unknown, unknown
        source = np.full(n, -1, dtype=np.int64)
        if self.table is not None:  # the table marks each new input with its last row (until ``store``)
            new = keys[unknown]
            self.table[new] = -2 - np.arange(new.size)
            rep = -2 - self.table[new]
            first = rep == np.arange(new.size)
            source[unknown] = (np.cumsum(first) - 1)[rep]
            return cls, unknown[first], source
        _, first, inverse = np.unique(keys[unknown], return_index=True, return_inverse=True)
        source[unknown] = inverse
        return cls, unknown[first], source

    def store(self, keys: np.ndarray | None, cls: np.ndarray) -> None:
        """Remember the classes of the inputs just classified (``lookup``'s rows to classify)."""
        self.calls += cls.size
        if keys is None:
            return
        if self.table is not None:
            self.table[keys] = cls
            return
        order = np.argsort(np.concatenate([self.keys, keys]), kind="stable")
        self.keys = np.concatenate([self.keys, keys])[order]
        self.cls = np.concatenate([self.cls, cls])[order]


def _join(parts: list[Any], like: torch.Tensor) -> torch.Tensor:
    """One model batch from the spaces' draws (numpy arrays or tensors), in x's dtype and on its device."""
    if all(isinstance(p, np.ndarray) for p in parts):
        return torch.from_numpy(np.concatenate(parts)).to(like.device, like.dtype)
    return torch.cat([torch.as_tensor(p) for p in parts]).to(like.device, like.dtype)


def run_searches(model: nn.Module, x: torch.Tensor, target: torch.Tensor, spaces: Sequence[Any],
                 searches: Sequence[AnchorSearch], rngs: Sequence[np.random.Generator],
                 forward_batch: int) -> tuple[list[AnchorResult], list[int]]:
    """Drive the searches in lock-step: each round, every unfinished search's draws are sampled, and those of its
    inputs the model has not classified yet go through one model call for the whole batch (chunks of
    ``forward_batch`` inputs); a search whose draws the memo answers goes on within the round. Returns each
    search's result and its model calls (distinct inputs classified)."""
    gens = [s.run() for s in searches]
    memos = [InputMemo(s.n_inputs) for s in spaces]
    results: list[AnchorResult | None] = [None] * len(gens)
    asks: dict[int, tuple[np.ndarray, int]] = {}

    def advance(i: int, value: Any) -> None:
        try:
            asks[i] = gens[i].send(value)
        except StopIteration as stop:
            results[i] = stop.value
            asks.pop(i, None)

    for i in range(len(gens)):
        advance(i, None)
    tgt = target.detach().cpu().numpy()
    with eval_mode(model), torch.no_grad():
        while asks:
            pending, parts = [], []
            for i in list(asks):
                while i in asks:  # draws the memo answers whole need no model call: on at once
                    rules, n = asks[i]
                    z, agree, keys = spaces[i].sample(rules, n, rngs[i])
                    cls, evaluate, source = memos[i].lookup(keys, agree.shape[0])
                    if evaluate.size:
                        parts.append(z[evaluate] if isinstance(z, np.ndarray)
                                     else z[torch.from_numpy(evaluate).to(z.device)])
                        pending.append((i, agree, keys, cls, evaluate, source))
                        break
                    advance(i, (agree, cls == tgt[i]))
            if not pending:
                break
            classes = _classify(model, _join(parts, x), forward_batch, tgt)
            start = 0
            for i, agree, keys, cls, evaluate, source in pending:
                got = classes[start:start + evaluate.size]
                start += evaluate.size
                memos[i].store(None if keys is None else keys[evaluate], got)
                unknown = cls < 0
                cls[unknown] = got[source[unknown]]
                advance(i, (agree, cls == tgt[i]))
    return results, [m.calls for m in memos]  # type: ignore[return-value]


def _classify(model: nn.Module, z: torch.Tensor, forward_batch: int, target: np.ndarray) -> np.ndarray:
    """The model's class (argmax) of every input, ``forward_batch`` inputs per pass."""
    out = [torch.zeros(0, dtype=torch.long, device=z.device)]
    for s in batch_slices(z.shape[0], forward_batch):
        logits = model(z[s])
        if logits.ndim != 2:
            raise XaiCoreError(f"anchors: model output must be (N, classes), got {tuple(logits.shape)}")
        if target.min() < 0 or target.max() >= logits.shape[1]:
            raise XaiCoreError(f"target holds class indices outside 0..{logits.shape[1] - 1} (the model has "
                               f"{logits.shape[1]} outputs)")
        out.append(logits.argmax(1))
    return torch.cat(out).cpu().numpy()


@register("anchors", family="perturbation", kinds=("image", "tabular", "text"), extras=ANCHOR_EXTRAS,
          text_extras=("rule",),
          paper="Ribeiro, Singh & Guestrin 2018 (AAAI), eq. 1 and Algorithms 1-4 (survey §6.5): "
                    "prec(A) = E_D(z|A)[1{f(z) = f(x)}] >= tau by KL-LUCB, greedy or beam search, as anchor-exp")
def anchors(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, threshold: float = 0.95, delta: float = 0.1,
            epsilon: float = 0.15, epsilon_stop: float = 0.05, beam_size: int = 1, batch_size: int = 100,
            max_anchor_size: int | None = None, max_samples: int = 100_000, reference: Any = None,
            vocab: Sequence[str] = (), features: str = "slic", n_segments: int = 25, compactness: float = 0.1,
            cell: int = 4, fill: str = "segment_mean", seed: int = 0,
            forward_batch: int = FORWARD_BATCH) -> Explanation:
    """Anchors of ``target`` (the prediction, for the paper's prec) for each instance of ``x``.

    ``threshold`` τ; ``delta`` δ; ``epsilon`` ε of KL-LUCB (anchor-exp's ``tau``); ``epsilon_stop``: an anchor's
    lower bound must exceed τ − epsilon_stop (anchor-exp's fixed 0.05); ``beam_size`` 1 greedy, more beam search;
    ``batch_size`` draws per arm and round; ``max_samples`` draws per instance at most (model calls are fewer).
    Tabular rows need ``reference=ColumnStats.fit(x_train, nominal=...)``; text (token ids) takes ``vocab`` for the
    rule's words; images use ``features`` (slic | quickshift | grid of side ``cell``, ``n_segments``) switched to
    ``fill`` (segment_mean | zero | mean of ``reference`` | blur | uniform)."""
    cfg = AnchorConfig(threshold=_unit("threshold", threshold), delta=_unit("delta", delta),
                       epsilon=_unit("epsilon", epsilon), epsilon_stop=_unit("epsilon_stop", epsilon_stop),
                       beam_size=_count("beam_size", beam_size), batch_size=_count("batch_size", batch_size),
                       max_anchor_size=_count("max_anchor_size", max_anchor_size, allow_none=True),
                       max_samples=_count("max_samples", max_samples))  # type: ignore[arg-type]
    check_forward_batch(forward_batch, "anchors")
    spaces = _spaces(x, reference=reference, vocab=vocab, features=features, n_segments=n_segments,
                     compactness=compactness, cell=cell, fill=fill, seed=seed)
    rngs = sample_generators(x, seed, _STREAM)
    results, calls = run_searches(model, x, target, spaces, [AnchorSearch(s, cfg) for s in spaces], rngs,
                                  forward_batch)
    rel = []
    for space, res in zip(spaces, results, strict=True):
        mask = np.zeros(space.n_predicates, dtype=bool)
        mask[list(res.rule)] = True
        rel.append(space.spread(mask))
    dev = x.device
    rel_dtype = x.dtype if x.is_floating_point() else torch.float32
    return Explanation(torch.stack(rel).to(x.device, rel_dtype), {
        "precision": torch.tensor([r.precision for r in results], dtype=torch.float32, device=dev),
        "coverage": torch.tensor([r.coverage for r in results], dtype=torch.float32, device=dev),
        "found": torch.tensor([r.found for r in results], dtype=torch.bool, device=dev),
        "model_calls": torch.tensor(calls, dtype=torch.int64, device=dev),
        "rule": [space.describe(r.rule) for space, r in zip(spaces, results, strict=True)],
    })
