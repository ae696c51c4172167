"""The contrastive explanations method (Dhurandhar et al. 2018, eq. 1–2; survey §6.3): pertinent positives
(``cem.pp``: a minimal part of x that keeps its class) and pertinent negatives (``cem.pn``: a minimal addition
to x that changes it).

With b the *no-information* value (``no_info``, by default the low end of the data range: the digits' black
background) and [low, high] the data range, both solve for δ with FISTA

    min_δ  c·f_κ(v(δ)) + β‖δ‖₁ + ‖δ‖₂² + γ‖AE(v(δ)) − v(δ)‖₂²

* PN: v = x + δ, and δ may only move a pixel further from b (x ≥ b: x ≤ x + δ ≤ high; x < b: low ≤ x + δ ≤ x);
  f_κ = max(z_t − max_{i≠t} z_i, −κ) on the logits z (the paper's loss; alibi uses probabilities);
* PP: v = b + δ, the kept part of x: δ lies between 0 and x − b (each pixel keeps at most what x has);
  f_κ = max(max_{i≠t} z_i − z_t, −κ).

FISTA: a gradient step of constant size η = ``lr`` on the smooth part c·f_κ + ‖δ‖₂² + γ‖AE − ·‖₂², then the prox
of ηβ‖δ‖₁ plus the box above, which for a box holding 0 is the soft threshold followed by clipping; momentum
yₖ₊₁ = δₖ₊₁ + k/(k+3)·(δₖ₊₁ − δₖ), projected into the box. (The authors' code and alibi's decay the step as
(1 − k/n)^½ and threshold by β, not ηβ; this is the proximal step of the stated objective. The default
η = 1e-3 is stable with γ = 100 on the digits, where 1e-2 oscillates.)

The constant c is searched per sample (``c_steps`` runs of ``n_steps``): from ``c_init``, bisection between the
largest c without and the smallest c with a valid iterate, times 10 while none was found. Valid: PN has
max_{i≠t} z_i − z_t ≥ κ and argmax ≠ t, PP has z_t − max_{i≠t} z_i ≥ κ and argmax = t. The candidates are the
points the gradient is taken at (the momentum points yₖ, inside the box, so the class condition and the objective
come with the gradient's own forward pass: one forward and backward of model and autoencoder per step) and each
run's last iterate. The result is the valid candidate with the smallest β‖δ‖₁ + ‖δ‖₂² + γ‖AE(v) − v‖₂² over all
runs (on valid points c·f_κ = −cκ, so this is the smallest objective; with γ = 0 it is alibi's and the authors'
elastic-net rule); δ is the heatmap (PP: the pixels kept, PN: the pixels added), zero where none was found.
Extras per sample: ``found``, ``new_class`` (PN: the class reached, PP: t; −1 if not found), ``c`` (of the best
candidate, else the last tried) and ``l0`` (non-zero entries of δ).

The autoencoder term needs the fitted state (``xaicore.fit(model, x_train, method="cem.pn")``, the pipeline's
``autoencoder`` stage); with ``gamma=0`` no state is needed but the data range must be given.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn as nn

from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.optimisation.autoencoder import AutoencoderState, fit_autoencoder
from xaicore.explain.registry import Explanation, register

MODES = ("pp", "pn")
_NO_BOUND = 1e10  # the bisection's "no upper bound yet"
CEM_EXTRAS = ("found", "new_class", "c", "l0")


def soft_threshold(z: torch.Tensor, threshold: float | torch.Tensor) -> torch.Tensor:
    """The prox of threshold·‖·‖₁: sign(z)·max(|z| − threshold, 0)."""
    return torch.sign(z) * torch.clamp(z.abs() - threshold, min=0)


def target_margin(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(z_t − max_{i≠t} z_i, argmax of the logits) per sample."""
    zt = logits.gather(1, target[:, None])[:, 0]
    others = logits.scatter(1, target[:, None], float("-inf"))
    return zt - others.amax(1), logits.argmax(1)


@dataclasses.dataclass(frozen=True)
class CEMResult:
    """``delta`` (x's shape; zero where not found) and the per-sample ``found``, ``new_class``, ``c``, ``l0``,
    ``objective`` (β‖δ‖₁ + ‖δ‖₂² + γ‖AE(v) − v‖₂² of the returned δ, inf where not found)."""

    delta: torch.Tensor
    found: torch.Tensor
    new_class: torch.Tensor
    c: torch.Tensor
    l0: torch.Tensor
    objective: torch.Tensor


def _check(mode: str, kappa: float, beta: float, gamma: float, c_init: float, c_steps: int, n_steps: int,
           lr: float) -> None:
    name = f"cem.{mode}"
    for key, value in (("kappa", kappa), ("beta", beta), ("gamma", gamma)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0 or math.isinf(value):
            raise XaiCoreError(f"{name}: {key}={value!r} must be a finite number >= 0")
    for key, value in (("c_init", c_init), ("lr", lr)):
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0 or math.isinf(value):
            raise XaiCoreError(f"{name}: {key}={value!r} must be a finite number > 0")
    for key, value in (("c_steps", c_steps), ("n_steps", n_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise XaiCoreError(f"{name}: {key}={value!r} must be an integer >= 1")


def _range(mode: str, state: AutoencoderState | None, data_range: Any, no_info: Any) -> tuple[float, float, float]:
    name = f"cem.{mode}"
    if data_range is None:
        if state is None:
            raise XaiCoreError(f"{name}: without a fitted autoencoder state (gamma=0) the data range must be given "
                               "as data_range=(low, high)")
        low, high = state.low, state.high
    else:
        try:
            low, high = (float(v) for v in data_range)
        except (TypeError, ValueError):
            raise XaiCoreError(f"{name}: data_range={data_range!r} must be (low, high)") from None
        if not low < high:
            raise XaiCoreError(f"{name}: data_range={data_range!r} needs low < high")
    b = low if no_info is None else no_info
    if isinstance(b, bool) or not isinstance(b, int | float) or not low <= b <= high:
        raise XaiCoreError(f"{name}: no_info={no_info!r} must be a number inside the data range [{low}, {high}]")
    return low, high, float(b)


def cem(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, mode: str, kappa: float = 0.1,
        beta: float = 0.1, gamma: float = 100.0, c_init: float = 10.0, c_steps: int = 5, n_steps: int = 300,
        lr: float = 1e-3, no_info: float | None = None, data_range: tuple[float, float] | None = None,
        reference: AutoencoderState | None = None) -> CEMResult:
    """Pertinent positives (``mode="pp"``) or negatives (``"pn"``) of ``model`` for the batch ``x`` (B, C, H, W)
    and classes ``target``; see the module's docstring for the objective and the search. The whole batch is
    optimised at once; each sample keeps its own c and best iterate."""
    if mode not in MODES:
        raise XaiCoreError(f"cem: mode={mode!r} must be one of {', '.join(MODES)}")
    _check(mode, kappa, beta, gamma, c_init, c_steps, n_steps, lr)
    state = reference  # the autoencoder fitted on the training data
    if state is not None and not isinstance(state, AutoencoderState):
        raise XaiCoreError(f"cem.{mode} takes reference=AutoencoderState (from xaicore.fit(model, x_train, "
                           f"method='cem.{mode}')), got {type(state).__name__}")
    if gamma > 0 and state is None:
        raise XaiCoreError(f"cem.{mode}: gamma={gamma} needs the fitted autoencoder: reference=xaicore.fit(model, "
                           f"x_train, method='cem.{mode}') (the pipeline's autoencoder stage), or gamma=0")
    if state is not None:
        state.check_input(tuple(x.shape[1:]), f"cem.{mode}")
    low, high, b = _range(mode, state, data_range, no_info)
    x = x.detach()
    n = x.shape[0]
    dims = tuple(range(1, x.ndim))
    above = x >= b
    if mode == "pn":
        base = x
        lo = torch.where(above, 0.0, torch.clamp(low - x, max=0))  # a pixel of x outside the range stays
        hi = torch.where(above, torch.clamp(high - x, min=0), 0.0)
    else:
        base = torch.full_like(x, b)
        lo = torch.clamp(x - b, max=0)
        hi = torch.clamp(x - b, min=0)
    sign = 1.0 if mode == "pn" else -1.0  # f_κ = max(sign·margin, −κ)

    c = torch.full((n,), float(c_init), dtype=x.dtype, device=x.device)
    lower = torch.zeros_like(c)
    upper = torch.full_like(c, _NO_BOUND)
    best = torch.zeros_like(x)
    best_obj = torch.full_like(c, math.inf)
    best_c = c.clone()
    best_class = torch.full((n,), -1, dtype=torch.long, device=x.device)
    c_shape = (n,) + (1,) * (x.ndim - 1)
    def penalty(point: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(c·f_κ + ‖δ‖₂² + γ‖AE − ·‖₂², the objective less c·f_κ, the logits) per sample at δ = ``point``."""
        v = base + point
        logits = model(v)
        rest = point.pow(2).sum(dims)
        if gamma > 0:
            rest = rest + gamma * (state.reconstruct(v) - v).pow(2).sum(dims)  # type: ignore[union-attr]
        margin, _ = target_margin(logits, target)
        return c * torch.clamp(sign * margin, min=-kappa) + rest, rest, logits

    def keep(point: torch.Tensor, rest: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Record ``point`` where it is valid and better than the best so far; returns the valid mask."""
        nonlocal best, best_obj, best_c, best_class
        margin, top = target_margin(logits, target)
        valid = ((-margin >= kappa) & (top != target)) if mode == "pn" else ((margin >= kappa) & (top == target))
        obj = beta * point.abs().sum(dims) + rest
        better = valid & (obj < best_obj)
        if better.any():
            best = torch.where(better.view(c_shape), point, best)
            best_obj = torch.where(better, obj, best_obj)
            best_c = torch.where(better, c, best_c)
            best_class = torch.where(better, top, best_class)
        return valid

    for _ in range(c_steps):
        tried = c
        delta = torch.zeros_like(x)
        y = torch.zeros_like(x)
        found_now = torch.zeros(n, dtype=torch.bool, device=x.device)
        for k in range(n_steps):
            y.requires_grad_(True)
            smooth, rest, logits = penalty(y)
            (grad,) = torch.autograd.grad(smooth.sum(), y)
            with torch.no_grad():
                found_now |= keep(y.detach(), rest.detach(), logits.detach())
                new = torch.minimum(torch.maximum(soft_threshold(y - lr * grad, lr * beta), lo), hi)
                y = torch.minimum(torch.maximum(new + (k / (k + 3)) * (new - delta), lo), hi)
                delta = new
        with torch.no_grad():  # the last iterate
            _, rest, logits = penalty(delta)
            found_now |= keep(delta, rest, logits)
        # the search over c, per sample
        upper = torch.where(found_now, torch.minimum(upper, c), upper)
        lower = torch.where(found_now, lower, torch.maximum(lower, c))
        bounded = upper < _NO_BOUND / 10
        c = torch.where(bounded, (lower + upper) / 2, torch.where(found_now, c, c * 10))
    found = torch.isfinite(best_obj)
    best_c = torch.where(found, best_c, tried)
    return CEMResult(best, found, best_class, best_c, (best != 0).flatten(1).sum(1), best_obj)


def _explanation(result: CEMResult) -> Explanation:
    return Explanation(result.delta, {"found": result.found, "new_class": result.new_class, "c": result.c,
                                      "l0": result.l0})


def _fit(model: nn.Module, x_train: torch.Tensor, *, latent: int = 16, epochs: int = 30, ae_batch_size: int = 64,
         ae_lr: float = 2e-3, code_penalty: float = 1e-3, seed: int = 0) -> AutoencoderState:
    """CEM's state: the convolutional autoencoder trained on ``x_train`` (the model is not used; the ``ae_``
    names keep the autoencoder's training apart from CEM's own step size)."""
    return fit_autoencoder(x_train, latent=latent, epochs=epochs, batch_size=ae_batch_size, lr=ae_lr,
                           code_penalty=code_penalty, seed=seed)


_REFERENCE = "Dhurandhar et al. 2018, Explanations based on the missing, eq. 1-2 (survey §6.3)"


def _register_mode(mode: str, what: str) -> None:
    """Register ``cem.<mode>``: its hyper-parameters (the registry reads them from this signature) are
    :func:`cem`'s."""

    @register(f"cem.{mode}", family="perturbation", paper=f"{_REFERENCE}: {what}", fit=_fit,
              state_type=AutoencoderState, extras=CEM_EXTRAS, shared_state="autoencoder", fit_uses_model=False)
    def kernel(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, kappa: float = 0.1, beta: float = 0.1,
               gamma: float = 100.0, c_init: float = 10.0, c_steps: int = 5, n_steps: int = 300, lr: float = 1e-3,
               no_info: float | None = None, data_range: tuple[float, float] | None = None,
               reference: AutoencoderState | None = None) -> Explanation:
        _image_only(x, f"cem.{mode}")
        return _explanation(cem(model, x, target, mode=mode, kappa=kappa, beta=beta, gamma=gamma, c_init=c_init,
                                c_steps=c_steps, n_steps=n_steps, lr=lr, no_info=no_info, data_range=data_range,
                                reference=reference))

    kernel.__doc__ = f"The {what} (:func:`cem` with ``mode={mode!r}``)."


_register_mode("pp", "pertinent positive")  # the part of x kept (between the no-information value and x)
_register_mode("pn", "pertinent negative")  # what is added to x (away from the no-information value)


def _image_only(x: torch.Tensor, name: str) -> None:
    if x.ndim != 4:
        kind = "tabular (B, F)" if x.ndim == 2 else f"{x.ndim}-d"
        raise NotApplicable(f"{name} explains images (B, C, H, W); {kind} input {tuple(x.shape)} is not supported")
