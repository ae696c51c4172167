"""The search of Anchors (Ribeiro, Singh & Guestrin 2018, "Anchors: High-Precision Model-Agnostic Explanations",
AAAI; survey §6.5): KL-LUCB best-arm identification over candidate rules, greedy (Algorithm 2) or beam search
(Algorithm 4), on one instance's perturbation space.

An anchor A is a set of predicates with prec(A) = E_{D(z|A)}[1{f(z) = target}] ≥ τ (eq. 1); the search keeps every
sample it draws, with its per-predicate agreement, and counts it for every later candidate it is a sample of.

What follows anchor-exp (Ribeiro's ``anchor_base.AnchorBaseBeam.anchor_beam``), as facts of its algorithm:

* Bernoulli KL confidence bounds by 16 bisection steps (p and q clipped to [1e−7, 1 − 1e−16]), upper bound
  started at min(p + sqrt(level / 2), 1), lower at max(p − sqrt(level / 2), 0), level = β / n;
* KL-LUCB (Kaufmann & Kalyanakrishnan 2013) with β_t = log(405.5·C·t^1.1/δ) + log log(...) for C candidates at
  round t: the ``top`` best by mean, the weakest lower bound among them against the strongest upper bound among the
  rest; while their gap exceeds ε, ``batch_size`` more draws for both; candidates without a sample get one first;
  when the candidates are no more than ``top``, all are kept unsampled;
* the empty rule first: one draw, more (``batch_size`` at a time) while its mean > τ and its lower bound at
  β = log(1/δ) < τ − ε; it is the anchor when that lower bound exceeds τ;
* each kept candidate is verified: while (mean ≥ τ and lb < τ − ε_stop) or (mean < τ and ub ≥ τ + ε_stop), more
  draws, the bounds at β = log((1 + (beam − 1)·P)/δ); it is an anchor when mean ≥ τ and lb > τ − ε_stop;
* candidates of size k + 1 extend the kept ones of size k by one predicate, only those with coverage above the
  best anchor's; an anchor replaces the best when its coverage is higher; the search ends when no candidate is
  left (greedy: right after its first anchor), at coverage 1 or at the size limit;
* no anchor: the best kept candidate of every size by KL-LUCB (top 1), found=False.

Where this differs (each one saves draws, model calls or Python, none changes a bound or a stopping rule):

* a draw made under rule S counts for every later candidate A ⊇ S that it satisfies (anchor-exp: only for the
  chain of rules its own rule grew into). Under D(z|S), given that z satisfies A, z is a draw of D(z|A) exactly
  where the features are switched independently (text, images); for table rows, whose anchored columns are
  overwritten, only where the columns are independent in the training rows (anchor-exp's reuse has the same
  approximation);
* the kept candidates of a size are verified together, their draws in one model call;
* ``max_samples`` bounds the draws of one instance; past it the search stops: the best anchor verified so far,
  else (found=False) the candidate of highest lower bound at β = log(1/δ), without more draws;
* anchors of equal coverage: the higher mean wins (anchor-exp: the first verified).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Generator
from typing import Protocol

import numba
import numpy as np

_LO, _HI = 1e-7, 0.9999999999999999

#: what a search yields: (rules (R, P) bool, n), n draws under each rule; what it receives: (agree (R·n, P), hits
#: (R·n,)), the draws of rule r in rows r·n..(r+1)·n−1
Request = tuple[np.ndarray, int]
Draws = tuple[np.ndarray, np.ndarray]
Search = Generator[Request, Draws, "AnchorResult"]


class Space(Protocol):
    """The perturbation space of one instance (:mod:`xaicore.explain.perturbation.anchor_spaces`)."""

    n_predicates: int

    def coverage(self, rules: np.ndarray) -> np.ndarray: ...


@numba.njit(cache=True)
def _kl_bound(p: float, level: float, upper: bool) -> float:  # pragma: no cover - compiled
    """The bisection of anchor-exp's ``dup_bernoulli`` (upper) or ``dlow_bernoulli`` for one arm."""
    pc = min(_HI, max(_LO, p))
    a = pc * np.log(pc) + (1.0 - pc) * np.log(1.0 - pc)
    if upper:
        lo, hi = p, min(p + np.sqrt(level / 2.0), 1.0)
    else:
        hi, lo = p, max(min(1.0, p - np.sqrt(level / 2.0)), 0.0)
    for _ in range(16):
        mid = (hi + lo) / 2.0
        q = min(_HI, max(_LO, mid))
        if (a - pc * np.log(q) - (1.0 - pc) * np.log(1.0 - q) > level) == upper:
            hi = mid
        else:
            lo = mid
    return hi if upper else lo


@numba.njit(cache=True)
def _kl_bounds(p: np.ndarray, level: np.ndarray, upper: bool) -> np.ndarray:  # pragma: no cover - compiled
    out = np.empty(p.shape[0])
    for i in range(p.shape[0]):
        out[i] = _kl_bound(p[i], level[i], upper)
    return out


def kl_upper(p: np.ndarray, level: np.ndarray) -> np.ndarray:
    """max {q ≥ p : KL(p ‖ q) ≤ level}, elementwise, by 16 bisection steps (anchor-exp's ``dup_bernoulli``)."""
    p, level = np.broadcast_arrays(np.asarray(p, dtype=np.float64), np.asarray(level, dtype=np.float64))
    return _kl_bounds(np.ascontiguousarray(p).ravel(), np.ascontiguousarray(level).ravel(), True).reshape(p.shape)


def kl_lower(p: np.ndarray, level: np.ndarray) -> np.ndarray:
    """min {q ≤ p : KL(p ‖ q) ≤ level}, elementwise, by 16 bisection steps (anchor-exp's ``dlow_bernoulli``)."""
    p, level = np.broadcast_arrays(np.asarray(p, dtype=np.float64), np.asarray(level, dtype=np.float64))
    return _kl_bounds(np.ascontiguousarray(p).ravel(), np.ascontiguousarray(level).ravel(), False).reshape(p.shape)


def lucb_beta(n_arms: int, t: int, delta: float) -> float:
    """KL-LUCB's exploration rate β(t) = log(k·C·t^α/δ) + log log(k·C·t^α/δ), k = 405.5, α = 1.1 (anchor-exp's
    ``compute_beta``; Kaufmann & Kalyanakrishnan 2013, Theorem 3)."""
    temp = math.log(405.5 * n_arms * t ** 1.1 / delta)
    return temp + math.log(temp)


@numba.njit(cache=True)
def _lucb_step(pos: np.ndarray, n: np.ndarray, top: int, beta: float) -> tuple[int, int, float]:  # pragma: no cover
    """One KL-LUCB decision: the ``top`` arms of highest mean (stable order), ``lt`` the one of lowest lower bound
    among them, ``ut`` the arm of highest upper bound among the others, and ub(ut) − lb(lt)."""
    means = pos / n
    order = np.arange(means.size)
    for i in range(1, means.size):  # stable insertion sort (a few arms; compiles faster than argsort)
        k, j = order[i], i - 1
        while j >= 0 and means[order[j]] > means[k]:
            order[j + 1] = order[j]
            j -= 1
        order[j + 1] = k
    ut, lt, ub, lb = -1, -1, -1.0, 2.0
    for r in range(means.size):
        i = order[r]
        if r < means.size - top:
            b = _kl_bound(means[i], beta / n[i], True)
            if b > ub:
                ut, ub = i, b
        else:
            b = _kl_bound(means[i], beta / n[i], False)
            if b < lb:
                lt, lb = i, b
    return ut, lt, ub - lb


@dataclasses.dataclass(frozen=True)
class AnchorConfig:
    threshold: float
    delta: float
    epsilon: float
    epsilon_stop: float
    beam_size: int
    batch_size: int
    max_anchor_size: int | None
    max_samples: int


@dataclasses.dataclass(frozen=True)
class AnchorResult:
    """``rule``: predicate indices in the order they were added; ``precision``: the empirical mean of its draws;
    ``coverage``: exact; ``draws``: perturbed samples drawn (and classified) for the search."""

    rule: tuple[int, ...]
    precision: float
    coverage: float
    found: bool
    draws: int


class _Exhausted(Exception):
    pass


class SamplePool:
    """Every draw of one instance: ``agree`` (N, P) whether draw k satisfies predicate p, ``hit`` (N,) whether the
    model gave the target, and the rule each draw was made under (per block of draws)."""

    def __init__(self, n_predicates: int) -> None:
        self.agree = np.zeros((0, n_predicates), dtype=bool)
        self.hit = np.zeros(0, dtype=bool)
        self.size = 0
        self._rounds: list[tuple[np.ndarray, int]] = []  # (rules, draws per rule) of every round, in order

    def add(self, rules: np.ndarray, agree: np.ndarray, hit: np.ndarray) -> None:
        """The draws of one round: ``hit.size / len(rules)`` under each of ``rules``, in that order."""
        n = hit.shape[0]
        if self.size + n > self.hit.shape[0]:
            cap = max(2 * self.hit.shape[0], self.size + n, 256)
            self.agree = np.concatenate([self.agree[:self.size], np.zeros((cap - self.size, self.agree.shape[1]),
                                                                          dtype=bool)])
            self.hit = np.concatenate([self.hit[:self.size], np.zeros(cap - self.size, dtype=bool)])
        self.agree[self.size:self.size + n], self.hit[self.size:self.size + n] = agree, hit
        self._rounds.append((rules, n // len(rules)))
        self.size += n

    def counts(self, rules: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(draws, hits) per candidate rule (C, P): the draws made under a sub-rule S ⊆ A that satisfy A, which are
        draws of D(z|A) (free features are perturbed independently of each other)."""
        if self.size == 0 or rules.shape[0] == 0:
            return np.zeros(rules.shape[0]), np.zeros(rules.shape[0])
        r = rules.astype(np.float32)
        miss = (~self.agree[:self.size]).astype(np.float32) @ r.T  # predicates of A a draw violates
        drawn = np.concatenate([rr for rr, _ in self._rounds]).astype(np.float32) @ (1.0 - r).T  # S ⊄ A, per rule
        block = np.repeat(np.arange(drawn.shape[0]), np.concatenate([np.full(len(rr), k) for rr, k in self._rounds]))
        valid = (miss == 0) & (drawn == 0)[block]
        return valid.sum(0).astype(np.float64), (valid & self.hit[:self.size, None]).sum(0).astype(np.float64)


class AnchorSearch:
    """One instance's search as a generator: it yields the draws it needs (rule masks and counts), receives for
    each the agreement matrix and the model's hits, and returns an :class:`AnchorResult`."""

    def __init__(self, space: Space, cfg: AnchorConfig) -> None:
        self.space, self.cfg = space, cfg
        self.p = space.n_predicates
        self.pool = SamplePool(self.p)
        self.draws = 0  # samples drawn: the budget max_samples bounds them
        #: the best anchor so far: (rule, coverage, mean)
        self.best: tuple[tuple[int, ...], float, float] | None = None
        #: every candidate kept by KL-LUCB, of every size (the fallback's arms)
        self.kept: dict[tuple[int, ...], None] = {}
        #: every candidate generated (the arms of the fallback when the budget runs out)
        self.seen: dict[tuple[int, ...], None] = {}

    def _mask(self, rule: tuple[int, ...]) -> np.ndarray:
        m = np.zeros(self.p, dtype=bool)
        m[list(rule)] = True
        return m

    def _masks(self, rules: list[tuple[int, ...]]) -> np.ndarray:
        out = np.zeros((len(rules), self.p), dtype=bool)
        for i, rule in enumerate(rules):
            out[i, list(rule)] = True
        return out

    def _draw(self, masks: np.ndarray, n: int) -> Generator[Request, Draws, np.ndarray]:
        """``n`` draws under each rule of ``masks`` (R, P) (one model call for all); returns the hits per rule."""
        if self.draws + n * len(masks) > self.cfg.max_samples:
            raise _Exhausted
        agree, hit = yield masks, n
        self.draws += n * len(masks)
        self.pool.add(masks, agree, hit)
        return hit.reshape(len(masks), n).sum(1).astype(np.float64)

    def run(self) -> Search:
        try:
            return (yield from self._search())
        except _Exhausted:
            return self._result() if self.best is not None else self._fallback(list(self.seen))

    def _result(self) -> AnchorResult:
        """The best anchor verified (found)."""
        rule, cover, mean = self.best  # type: ignore[misc]
        return AnchorResult(rule, mean, cover, True, self.draws)

    def _search(self) -> Search:
        cfg = self.cfg
        tau = cfg.threshold
        empty = np.zeros((1, self.p), dtype=bool)
        hits = yield from self._draw(empty, 1)
        n, pos = 1.0, float(hits[0])
        beta = math.log(1.0 / cfg.delta)
        while True:
            mean = pos / n
            lb = float(kl_lower(np.float64(mean), np.float64(beta / n)))
            if not (mean > tau and lb < tau - cfg.epsilon):
                break
            pos += float((yield from self._draw(empty, cfg.batch_size))[0])
            n += cfg.batch_size
        if lb > tau or self.p == 0:
            return AnchorResult((), mean, 1.0, lb > tau, self.draws)
        limit = self.p if cfg.max_anchor_size is None else min(self.p, cfg.max_anchor_size)
        beam: list[tuple[int, ...]] = [()]
        beta_v = math.log((1 + (cfg.beam_size - 1) * self.p) / cfg.delta)
        for _size in range(1, limit + 1):
            best_cover = -1.0 if self.best is None else self.best[1]
            cands = self._extend(beam)
            masks = self._masks(cands)
            cover = self.space.coverage(masks)
            keep = cover > best_cover
            cands, cover, masks = [c for c, k in zip(cands, keep, strict=True) if k], cover[keep], masks[keep]
            if not cands:
                break
            self.seen.update(dict.fromkeys(cands))
            n_c, pos_c = self.pool.counts(masks)
            chosen = yield from self._lucb(masks, n_c, pos_c, min(cfg.beam_size, len(cands)))
            beam = [cands[i] for i in chosen]
            self.kept.update(dict.fromkeys(beam))
            idx = np.asarray(chosen)
            while True:  # verification of the kept candidates, together
                mean = pos_c[idx] / n_c[idx]
                lb, ub = kl_lower(mean, beta_v / n_c[idx]), kl_upper(mean, beta_v / n_c[idx])
                more = (((mean >= tau) & (lb < tau - cfg.epsilon_stop))
                        | ((mean < tau) & (ub >= tau + cfg.epsilon_stop)))
                if not more.any():
                    break
                todo = idx[more]
                got = yield from self._draw(masks[todo], cfg.batch_size)
                n_c[todo] += cfg.batch_size
                pos_c[todo] += got
            ok = (mean >= tau) & (lb > tau - cfg.epsilon_stop)
            for j in np.lexsort((-mean, -cover[idx])):  # higher coverage first, then higher mean
                if ok[j] and (self.best is None or cover[idx[j]] > self.best[1]):
                    self.best = (cands[idx[j]], float(cover[idx[j]]), float(mean[j]))
            if self.best is not None and self.best[1] >= 1.0:
                break
        if self.best is not None:
            return self._result()
        return (yield from self._fallback_lucb(list(self.kept)))

    def _extend(self, beam: list[tuple[int, ...]]) -> list[tuple[int, ...]]:
        """Every kept rule plus one predicate it lacks, each set once (the first way it is built names its order)."""
        out: dict[frozenset[int], tuple[int, ...]] = {}
        for rule in beam:
            for f in range(self.p):
                if f not in rule:
                    out.setdefault(frozenset(rule + (f,)), rule + (f,))
        return list(out.values())

    def _lucb(self, masks: np.ndarray, n: np.ndarray, pos: np.ndarray,
              top: int) -> Generator[Request, Draws, list[int]]:
        """KL-LUCB: the indices of the ``top`` candidates of highest precision, to within ε with confidence 1 − δ;
        ``n`` and ``pos`` are updated in place."""
        cfg = self.cfg
        zero = np.flatnonzero(n == 0)
        if zero.size:
            got = yield from self._draw(masks[zero], 1)
            n[zero] += 1
            pos[zero] += got
        if len(masks) == top:
            return list(range(len(masks)))
        t = 1
        while True:
            ut, lt, gap = _lucb_step(pos, n, top, lucb_beta(len(masks), t, cfg.delta))
            if gap <= cfg.epsilon:
                return [int(i) for i in np.argsort(pos / n, kind="stable")[-top:]]
            got = yield from self._draw(masks[[ut, lt]], cfg.batch_size)
            n[ut] += cfg.batch_size
            n[lt] += cfg.batch_size
            pos[ut] += got[0]
            pos[lt] += got[1]
            t += 1

    def _fallback_lucb(self, kept: list[tuple[int, ...]]) -> Search:
        """No anchor: the kept candidate of highest precision by KL-LUCB (anchor-exp's last step)."""
        masks = self._masks(kept)
        n, pos = self.pool.counts(masks)
        try:
            i = (yield from self._lucb(masks, n, pos, 1))[0]
        except _Exhausted:
            return self._fallback(list(self.seen))
        return AnchorResult(kept[i], float(pos[i] / n[i]), float(self.space.coverage(self._mask(kept[i])[None])[0]),
                            False, self.draws)

    def _fallback(self, seen: list[tuple[int, ...]]) -> AnchorResult:
        """Out of budget without an anchor: the candidate (or the empty rule) of highest lower confidence bound at
        β = log(1/δ) (a candidate seen in one draw is no evidence), with its empirical mean."""
        cands = seen or [()]
        n, pos = self.pool.counts(self._masks(cands))
        mean = pos / np.maximum(n, 1)
        lb = np.where(n > 0, kl_lower(mean, math.log(1.0 / self.cfg.delta) / np.maximum(n, 1)), -1.0)
        i = int(np.argmax(lb))
        return AnchorResult(cands[i], float(mean[i]), float(self.space.coverage(self._mask(cands[i])[None])[0]),
                            False, self.draws)
