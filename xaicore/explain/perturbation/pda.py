"""Prediction difference analysis (Robnik-Šikonja & Kononenko 2008; Zintgraf et al. 2017; survey §6.4).

The relevance of a k×k window w (all channels) is the difference between the class probability p(c|x) and
p(c|x∖w), the probability with the window's information removed: the mean of p(c|x̃) over ``n_samples`` images x̃
whose window is resampled (eq. 21/22), measured as

* ``weight_of_evidence`` (eqs. 18–19, Zintgraf's default): log2 odds(p'(c|x)) − log2 odds(p'(c|x∖w)),
* ``info_diff`` (eq. 17): log2 p'(c|x) − log2 p'(c|x∖w),
* ``prob_diff`` (eq. 20): p(c|x) − p(c|x∖w),

with Zintgraf's Laplace correction p' = (p·N + 1)/(N + K) (N training samples, K classes) in the two logarithmic
measures. Windows slide at ``stride``; a pixel's relevance is the mean over the windows covering it.

Sampling: ``conditional`` (Zintgraf et al.) draws the window from the Gaussian of the l×l patch around it
(l = k + 2·padding, all channels jointly, fitted on every patch of the training set by :func:`fit_patch_gaussian`)
conditioned on the surrounding frame: N(μ₁ + Σ₁₂Σ₂₂⁻¹(x₂ − μ₂), Σ₁₁ − Σ₁₂Σ₂₂⁻¹Σ₂₁); the patch is shifted inward at
the borders, draws are clipped to the training data's range. ``marginal`` (eq. 22) takes the window from stored
training images: each pixel follows its empirical training marginal (jointly within the window, as Zintgraf's
marginal sampler); with ``n_samples`` at least the number stored, every stored image is used once, which is
the exact expectation over the empirical marginal. Draws come from (seed, sample content) per sample.

Table rows (B, F) (Robnik-Šikonja & Kononenko's own setting): an attribute is a column, its values are the bins
of the training :class:`~xaicore.features.ColumnStats` passed as ``reference``, and eq. 22 (``marginal``) or
eq. 21 (``conditional``) is the exact finite sum over them (:mod:`xaicore.explain.perturbation.pda_tabular`);
no fit, no draws. Both kinds return p(c|x) as the extra ``p_class`` (the figure's headline, survey Fig. 9).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from xaicore._rng import sample_generators
from xaicore.engine import FORWARD_BATCH, batch_slices, check_forward_batch, packed_scores, target_scores
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.perturbation.pda_tabular import removed_probabilities
from xaicore.explain.registry import Explanation, register
from xaicore.explain.state import FittedState
from xaicore.features import Columns, ColumnStats, Windows, adapter_for, describe_kind

MEASURES = ("weight_of_evidence", "info_diff", "prob_diff")
SAMPLINGS = ("conditional", "marginal")
_STREAM = 5
_READ_AHEAD = 64  # copies of draws per generator call


def _check_geometry(window: Any, padding: Any, h: int, w: int) -> None:
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= min(h, w):
        raise XaiCoreError(f"pda: window={window!r} must be in 1..{min(h, w)} for {h}x{w} images")
    if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
        raise XaiCoreError(f"pda: padding={padding!r} must be an integer >= 0")
    if window + 2 * padding > min(h, w):
        raise XaiCoreError(f"pda: the frame of window {window} with padding {padding} is {window + 2 * padding} "
                           f"pixels wide and leaves the {h}x{w} image; padding must be <= "
                           f"{(min(h, w) - window) // 2}")


@dataclasses.dataclass(frozen=True)
class PatchGaussian(FittedState):
    """PDA's fitted state: the Gaussian of l×l patches (l = window + 2·padding, channel-major (c, y, x) order),
    the training data's range, stored training images for marginal sampling, and the training-set size N."""

    window: int
    padding: int
    mean: torch.Tensor  # (D,) float64, D = C·l²
    cov: torch.Tensor  # (D, D) float64
    low: float
    high: float
    marginal: torch.Tensor  # (M, C, H, W)
    n_train: int

    WHAT: ClassVar[str] = "PDA patch Gaussian"

def fit_patch_gaussian(model: nn.Module, x_train: torch.Tensor, *, window: int = 4, padding: int = 2,
                       n_marginal: int = 1000, seed: int = 0, batch_size: int = 256) -> PatchGaussian:
    """The ``fit`` hook of PDA: mean and covariance of every l×l patch of ``x_train`` (all positions, moments in
    float64, ``batch_size`` images at a time), the data range, and up to ``n_marginal`` training images (a seeded
    choice) for marginal sampling. The model is not used."""
    if x_train.ndim != 4:
        kind = "tabular (B, F)" if x_train.ndim == 2 else f"{x_train.ndim}-d"
        raise NotApplicable(f"pda is fitted on images (N, C, H, W); {kind} input {tuple(x_train.shape)} is not "
                            "supported")
    n, c, h, w = x_train.shape
    _check_geometry(window, padding, h, w)
    if not isinstance(n_marginal, int) or n_marginal < 1:
        raise XaiCoreError(f"pda: n_marginal={n_marginal!r} must be a positive number of stored images")
    side = window + 2 * padding
    d = c * side * side
    s1 = torch.zeros(d, dtype=torch.float64)
    s2 = torch.zeros(d, d, dtype=torch.float64)
    count = 0
    for s in batch_slices(n, batch_size):
        cols = F.unfold(x_train[s].detach().cpu().to(torch.float64), side)  # (b, D, P)
        v = cols.transpose(1, 2).reshape(-1, d)
        s1 += v.sum(0)
        s2 += v.T @ v
        count += v.shape[0]
    mean = s1 / count
    cov = s2 / count - torch.outer(mean, mean)
    cov = (cov + cov.T) / 2
    pick = np.sort(np.random.default_rng([seed, _STREAM]).choice(n, size=min(n, n_marginal), replace=False))
    return PatchGaussian(window, padding, mean, cov, float(x_train.min()), float(x_train.max()),
                         x_train[torch.from_numpy(pick)].detach().cpu().clone(), n)


def conditional_gaussian(mean: torch.Tensor, cov: torch.Tensor, idx1: torch.Tensor, idx2: torch.Tensor,
                         ridge: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(A, μ-shift terms) of x₁ | x₂ for a Gaussian (mean, cov): A = Σ₁₂Σ₂₂⁻¹ (d₁, d₂) and the conditional
    covariance Σ₁₁ − AΣ₂₁, returned as (A, μ₁ − Aμ₂, Σ₁|₂), so that E[x₁|x₂] = μ₁ − Aμ₂ + A x₂. ``ridge``·mean(diag)
    is added to Σ₂₂ (constant pixels, e.g. a digit's empty border, make it singular)."""
    s22 = cov[idx2][:, idx2]
    s12 = cov[idx1][:, idx2]
    if ridge > 0:
        s22 = s22 + ridge * float(s22.diagonal().mean().clamp_min(1e-12)) * torch.eye(len(idx2), dtype=cov.dtype)
    a = torch.linalg.solve(s22, s12.T).T if len(idx2) else torch.zeros(len(idx1), 0, dtype=cov.dtype)
    shift = mean[idx1] - a @ mean[idx2]
    cond = cov[idx1][:, idx1] - a @ s12.T
    return a, shift, (cond + cond.T) / 2


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """L with L Lᵀ = m for a symmetric positive semi-definite m (eigenvalues below 0 from rounding clipped)."""
    vals, vecs = torch.linalg.eigh(m)
    return vecs * vals.clamp_min(0).sqrt()[None]


class _Sampler:
    """Builds the packed perturbed copies of the batch: copy q = window (q // n_samples), draw (q % n_samples)."""

    def __init__(self, x: torch.Tensor, feats: Windows, state: PatchGaussian, sampling: str, n_samples: int,
                 seed: int, ridge: float) -> None:
        b, c, h, w = x.shape
        self.x, self.n_samples, self.sampling = x, n_samples, sampling
        self.flat = x.reshape(b, -1)
        k, p = state.window, state.padding
        side = k + 2 * p
        offs = feats.offsets().cpu()
        self.n_windows = offs.shape[0]
        ch = torch.arange(c)[:, None, None] * (h * w)
        wy, wx = torch.arange(k)[None, :, None], torch.arange(k)[None, None, :]
        self.win_idx = torch.stack([(ch + (oy + wy) * w + (ox + wx)).reshape(-1) for oy, ox in offs.tolist()])
        self.gens = sample_generators(x, seed, _STREAM)
        self._drawn: tuple[int, torch.Tensor | None] = (0, None)  # (first copy held, draws read ahead)
        self.low, self.high = state.low, state.high
        if sampling == "marginal":
            self.marginal = state.marginal.to(x.device, x.dtype).reshape(state.marginal.shape[0], -1)
            self.exact = n_samples >= self.marginal.shape[0]
            return
        # conditional: one Gaussian conditional per position of the window inside its (border-shifted) patch
        py = (offs[:, 0] - p).clamp(0, h - side)
        px = (offs[:, 1] - p).clamp(0, w - side)
        ry, rx = offs[:, 0] - py, offs[:, 1] - px
        pi, pj = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
        self.variant = {}
        self.frame_idx = []
        self.variant_of = []
        for n_w in range(self.n_windows):
            key = (int(ry[n_w]), int(rx[n_w]))
            inside = ((pi >= key[0]) & (pi < key[0] + k) & (pj >= key[1]) & (pj < key[1] + k)).reshape(-1)
            inside = inside.repeat(c)  # patch order (c, y, x)
            if key not in self.variant:
                idx1, idx2 = inside.nonzero()[:, 0], (~inside).nonzero()[:, 0]
                a, shift, cond = conditional_gaussian(state.mean, state.cov, idx1, idx2, ridge)
                self.variant[key] = (a.to(x.device, x.dtype), shift.to(x.device, x.dtype),
                                     _sqrt_psd(cond).to(x.device, x.dtype))
            patch = (ch + (int(py[n_w]) + pi[None]) * w + (int(px[n_w]) + pj[None])).reshape(-1)
            self.frame_idx.append(patch[~inside])
            self.variant_of.append(key)
        self.frame = torch.stack(self.frame_idx).to(x.device)
        keys = list(self.variant)
        self.variant_id = torch.tensor([keys.index(k) for k in self.variant_of])
        self.a = torch.stack([self.variant[k][0] for k in keys])  # (V, d1, d2)
        self.shift = torch.stack([self.variant[k][1] for k in keys])  # (V, d1)
        self.root = torch.stack([self.variant[k][2] for k in keys])  # (V, d1, d1)

    def values(self, q0: int, q1: int) -> torch.Tensor:
        """(k, B, d₁) window values of copies q0..q1-1."""
        b = self.x.shape[0]
        n = q1 - q0
        wins = torch.arange(q0, q1) // self.n_samples
        d1 = self.win_idx.shape[1]
        if self.sampling == "marginal":
            m = self.marginal.shape[0]
            if self.exact:
                pick = (torch.arange(q0, q1) % self.n_samples).clamp_max(m - 1)[:, None].expand(n, b)
            else:
                pick = self._draws(q0, q1, lambda g, k: g.integers(0, m, size=k))
            idx = self.win_idx[wins].to(self.x.device)  # (k, d1)
            rows = self.marginal[pick.to(self.x.device)]  # (k, B, CHW)
            return rows.gather(2, idx[:, None, :].expand(n, b, d1))
        eps = self._draws(q0, q1, lambda g, k: g.standard_normal(size=(k, d1)))  # (k, B, d1)
        uw, inv = wins.unique_consecutive(return_inverse=True)  # the windows of these copies, in order
        v = self.variant_id[uw]
        x2 = self.flat[:, self.frame[uw.to(self.x.device)]]  # (B, u, d2): each window's frame in each sample
        mu = torch.einsum("buj,uij->bui", x2, self.a[v]) + self.shift[v]  # (B, u, d1)
        noise = torch.einsum("kbj,kij->kbi", eps, self.root[v[inv]])  # (k, B, d1)
        return (mu.transpose(0, 1)[inv.to(self.x.device)] + noise).clamp(self.low, self.high)

    def _draws(self, q0: int, q1: int, draw: Any) -> torch.Tensor:
        """The draws of copies q0..q1-1, (k, B, ...), copies asked for in order: each sample's generator is read in
        copy order, in blocks of at least :data:`_READ_AHEAD` copies (fewer calls; the values do not depend on the
        blocks)."""
        start, block = self._drawn
        end = start + (0 if block is None else block.shape[0])
        if q1 > end:
            new = torch.from_numpy(np.stack([draw(g, max(q1 - end, _READ_AHEAD)) for g in self.gens], axis=1))
            new = new.to(self.x.device, self.x.dtype if new.is_floating_point() else new.dtype)
            block = new if block is None else torch.cat([block[q0 - start:], new])
            start = end if self._drawn[1] is None else q0
            self._drawn = (start, block)
        return block[q0 - start:q1 - start]  # type: ignore[index]

    def build(self, q0: int, q1: int) -> torch.Tensor:
        b = self.x.shape[0]
        n = q1 - q0
        wins = torch.arange(q0, q1) // self.n_samples
        buf = self.flat[None].repeat(n, 1, 1)
        idx = self.win_idx[wins].to(self.x.device)[:, None, :].expand(n, b, -1)
        buf.scatter_(2, idx, self.values(q0, q1))
        return buf.reshape(n * b, *self.x.shape[1:])


def prediction_difference(p: torch.Tensor, q: torch.Tensor, measure: str, n_train: int, n_classes: int
                          ) -> torch.Tensor:
    """The measure of p = p(c|x) (B, 1) against q = p(c|x∖w) (B, W), float64 (eqs. 17–20, see the module)."""
    if measure == "prob_diff":
        return p - q
    p_, q_ = (p * n_train + 1) / (n_train + n_classes), (q * n_train + 1) / (n_train + n_classes)
    if measure == "info_diff":
        return torch.log2(p_) - torch.log2(q_)
    return torch.log2(p_ / (1 - p_)) - torch.log2(q_ / (1 - q_))


@register("pda", family="perturbation", fit=fit_patch_gaussian, state_type=PatchGaussian, fit_uses_model=False,
          extras=("p_class",), kinds=("image", "tabular"),
          paper="Zintgraf et al. 2017 / Robnik-Sikonja & Kononenko 2008 (survey §6.4, eqs. 17-22): "
                    "prediction difference of sliding windows (conditional Gaussian or marginal sampling) or of "
                    "table columns (eq. 21 or 22 over the column's values)")
def pda(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, window: int = 4, padding: int = 2,
        stride: int = 1, n_samples: int = 10, sampling: str = "conditional",
        measure: str = "weight_of_evidence", ridge: float = 1e-6, seed: int = 0,
        forward_batch: int = FORWARD_BATCH, reference: PatchGaussian | ColumnStats | None = None) -> Explanation:
    """PDA relevance of the target class and p(c|x) as the extra ``p_class`` (see the module docstring).

    Images: ``state`` from ``xaicore.fit(model, x_train, method="pda", window=..., padding=...)``; ``reference``
    is not used. Table rows (B, F): ``reference`` = the training ``ColumnStats``; relevance (B, F) per column; the
    image keywords (window, padding, stride, n_samples, ridge, seed) do not apply, and a fitted ``state`` (patch
    Gaussians of images) is an error."""
    _check_options(measure, sampling, forward_batch)
    if x.ndim == 4:
        _check_geometry(window, padding, *x.shape[2:])
    feats = adapter_for(x, image="windows", window=window, stride=stride, partial=False, reference=reference,
                        owner="pda")
    if isinstance(feats, Columns):
        p, q, k = removed_probabilities(model, x, target, reference, sampling=sampling, forward_batch=forward_batch)
        diff = prediction_difference(p[:, None], q, measure, reference.train.shape[0], k)
        return Explanation(diff.to(x.dtype), {"p_class": p.to(x.dtype)})
    if not isinstance(feats, Windows):
        raise NotApplicable(f"pda explains images (B, C, H, W) and table rows (B, F), got {describe_kind(x)}")
    if not isinstance(reference, PatchGaussian):
        raise XaiCoreError("pda on images needs its fitted patch statistics (a PatchGaussian): state = "
                           "xaicore.fit(model, x_train, method='pda', window=..., padding=...), then explain(..., "
                           f"reference=state) (the pipeline's fit stage), got {type(reference).__name__}")
    state = reference
    if (window, padding) != (state.window, state.padding):
        raise XaiCoreError(f"pda: the state was fitted for window={state.window}, padding={state.padding}, not "
                           f"window={window}, padding={padding}; fit it again with these")
    if tuple(state.marginal.shape[1:]) != tuple(x.shape[1:]):
        raise XaiCoreError(f"pda: the state was fitted on images {tuple(state.marginal.shape[1:])}, x has "
                           f"{tuple(x.shape[1:])}")
    d = x.shape[1] * (window + 2 * padding) ** 2
    if tuple(state.mean.shape) != (d,) or tuple(state.cov.shape) != (d, d):
        raise XaiCoreError(f"pda: the state's Gaussian has mean {tuple(state.mean.shape)} and covariance "
                           f"{tuple(state.cov.shape)}; {x.shape[1]}-channel patches of side {window + 2 * padding} "
                           f"need ({d},) and ({d}, {d})")
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise XaiCoreError(f"pda: n_samples={n_samples!r} must be a positive number of draws per window")
    if sampling == "marginal":  # exact mode: each stored image once (more draws would repeat the last one)
        n_samples = min(n_samples, state.marginal.shape[0])
    sampler = _Sampler(x, feats, state, sampling, n_samples, seed, float(ridge))
    with torch.no_grad():
        logits = model(x)
        # target_scores on the logits: checks (B, K) and the target's range, gathers p(c|x)
        p = target_scores(nn.Identity(), logits, target, "probability")[:, None].to(torch.float64)
        probs = packed_scores(model, x, target, feats.n_features * n_samples, sampler.build, score="probability",
                              forward_batch=forward_batch)
    q = probs.to(torch.float64).view(x.shape[0], feats.n_features, n_samples).mean(2)
    diff = prediction_difference(p, q, measure, state.n_train, logits.shape[1])
    return Explanation(feats.spread(diff).to(x.dtype), {"p_class": p[:, 0].to(x.dtype)})


def _check_options(measure: str, sampling: str, forward_batch: int) -> None:
    if measure not in MEASURES:
        raise XaiCoreError(f"pda: unknown measure {measure!r}; expected one of {', '.join(MEASURES)}")
    if sampling not in SAMPLINGS:
        raise XaiCoreError(f"pda: unknown sampling {sampling!r}; expected one of {', '.join(SAMPLINGS)}")
    check_forward_batch(forward_batch, "pda")
