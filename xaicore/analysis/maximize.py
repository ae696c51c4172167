"""Activation maximisation (survey §6.6): the input a unit responds to most, found by gradient ascent on the
input (Erhan et al. 2009, "Visualizing higher-layer features of a deep network"; Simonyan et al. 2014, eq. 1:
x* = argmax_x S_c(x) − λ‖x‖₂²), regularised as in Yosinski et al. 2015, "Understanding neural networks through
deep visualization", or searched in the code space of a decoder (Nguyen et al. 2016's idea, "Synthesizing the
preferred inputs for neurons in neural networks via deep generator networks", with our convolutional
autoencoder's decoder in place of their GAN generator) — and Erhan et al.'s *dataset examples*, the inputs of a
data set that activate a unit most. Both analyse a model, not a single input.

Definitions:

* unit: with ``layer=None`` a class logit, column u of the model's (B, K) output; with ``layer="conv2"`` channel
  u of that named module's output, the spatial mean of the channel for a (B, C, H, W) output (the mean over all
  dimensions after the second in general) and the feature itself for a (B, F) output (e.g. a Linear layer's).
  act_u(x) is that number; the output is captured by a forward hook, removed afterwards.
* batched: one input x_u per unit, all optimised at once on the objective Σ_u act_u(x_u) (each unit on its own
  image), so the gradient for x_u is that of act_u alone and batched results equal per-unit ones. Every unit's
  random draws come from its own generator seeded with ``seed``·1,000,003 + u, so a unit's result does not
  depend on the other units in the batch.
* total variation: TV(x) = Σ |x[i+1, j] − x[i, j]| + Σ |x[i, j+1] − x[i, j]|, summed over channels.

``parameterization="pixels"`` (Erhan et al. 2009; Simonyan et al. 2014; Yosinski et al. 2015): x starts at
m + 0.01·N(0, 1), m the middle of ``data_range`` (0 without a range). Each of ``n_steps`` steps:

1. jitter: the image is rolled (with wrap-around) by a random (dy, dx), |dy|, |dx| ≤ ``jitter``, before the
   forward pass; the gradient flows back through the roll, so the update is on the unrolled image;
2. gradient ascent: x ← x + ``lr``·∇ₓ[act_u(roll(x)) − ``tv``·TV(x)];
3. L2 decay (Yosinski et al.'s, the gradient step of Simonyan et al.'s λ‖x − m‖²): x ← m + (1 − ``l2``)·(x − m),
   a decay toward the middle m of ``data_range`` (toward 0 when ``data_range`` is None);
4. blur: every ``blur_every`` steps (0: never) a Gaussian blur of standard deviation ``blur_sigma`` pixels
   (separable kernel of radius ⌈3σ⌉, replicated borders, per channel);
5. clip to ``data_range`` (None: no clip);
6. projection (Erhan et al. 2009's norm constraint): if ``radius`` is given, x ← x·min(1, radius/‖x‖₂), the
   L2 norm over the whole image.

Erhan et al.'s variant is ``l2`` only (or ``radius`` only) with everything else off.

``parameterization="generator"``: x = decode(z) with the decoder of a fitted :class:`AutoencoderState`
(``reference``, fitted on the training data); z (U, latent) starts at 0.1·N(0, 1) per unit; each step
z ← z + ``lr``·∇_z[act_u(roll(decode(z))) − ``tv``·TV(decode(z)) − ``l2``·‖z‖₂²] (jitter as above), then z
is projected into the ball ‖z‖₂ ≤ ``reference.code_radius`` (where 95 % of the training codes lie). The result is
decode(z), inside the training data's range by construction, so ``data_range`` is not used; blur and ``radius``
act on pixels and are refused.

All runs in eval mode with gradients taken only with respect to the input (or the code): the model's parameters,
``training`` flags and ``.grad`` are left as they were. Same arguments and seed: bitwise the same result on CPU.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from xaicore.engine import batched
from xaicore.engine.model import eval_mode, hooks, named_layers
from xaicore.errors import XaiCoreError, require_finite
from xaicore.explain.optimisation.autoencoder import AutoencoderState

PARAMETERIZATIONS = ("pixels", "generator")
_SEED_STRIDE = 1_000_003


@dataclasses.dataclass(frozen=True)
class DatasetExamples:
    """Erhan et al. 2009's dataset examples: per unit the indices into x of its top-k inputs (U, k), long,
    and their activations (U, k), highest first, ties to the lower index."""

    indices: torch.Tensor
    values: torch.Tensor


# --- units ------------------------------------------------------------------------------------------------

def _module(model: nn.Module, layer: str | None) -> nn.Module | None:
    return None if layer is None else named_layers(model, [layer])[layer]


def _reduce(out: object, where: str) -> torch.Tensor:
    """(B, n_units): a (B, F) output as is, a (B, C, ...) output averaged over the dimensions after C."""
    if not isinstance(out, torch.Tensor) or out.ndim < 2:
        kind = f"a {out.ndim}-d tensor" if isinstance(out, torch.Tensor) else type(out).__name__
        raise XaiCoreError(f"{where} must be a (B, units) or (B, C, ...) tensor to define units, got {kind}")
    return out.clone() if out.ndim == 2 else out.flatten(2).mean(2)


def _activations(model: nn.Module, module: nn.Module | None, layer: str | None) -> Callable:
    """x (B, C, H, W) → (B, n_units) activations of every unit (the caller picks its unit per row)."""
    if module is None:
        return lambda x: _reduce(model(x), "the model's output")

    def run(x: torch.Tensor) -> torch.Tensor:
        captured: list[torch.Tensor] = []

        def hook(_m: nn.Module, _inp: object, out: object) -> None:
            captured.append(_reduce(out, f"the output of layer {layer!r}"))

        with hooks([(module, hook)]):
            model(x)
        if len(captured) != 1:
            raise XaiCoreError(f"layer {layer!r} ran {len(captured)} times in one forward pass; a unit needs "
                               "a layer that runs exactly once")
        return captured[0]

    return run


def _unit_ids(units: Sequence[int] | torch.Tensor) -> list[int]:
    if isinstance(units, torch.Tensor):
        if units.ndim != 1 or units.dtype.is_floating_point or units.dtype.is_complex or units.dtype == torch.bool:
            raise XaiCoreError(f"units must be a 1-d integer tensor, got {units.ndim}-d {units.dtype}")
        ids = [int(u) for u in units.tolist()]
    else:
        ids = list(units)
        if any(isinstance(u, bool) or not isinstance(u, int) for u in ids):
            raise XaiCoreError(f"units must be integers, got {ids!r}")
    if not ids:
        raise XaiCoreError("units is empty; give at least one unit index")
    return ids


def _check_units(ids: list[int], n_units: int, layer: str | None) -> None:
    bad = [u for u in ids if not 0 <= u < n_units]
    if bad:
        what = f"{n_units} classes (output columns)" if layer is None else f"{n_units} channels in layer {layer!r}"
        raise XaiCoreError(f"unit(s) {bad} out of range: the model has {what}, valid units are 0..{n_units - 1}")


def _count_units(act: Callable, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> int:
    with torch.no_grad():
        return int(act(torch.zeros((1, *shape), dtype=dtype, device=device)).shape[1])


def _dtype_device(model: nn.Module) -> tuple[torch.dtype, torch.device]:
    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    if p is None or not p.dtype.is_floating_point:
        return torch.float32, torch.device("cpu")
    return p.dtype, p.device


# --- regularisers -----------------------------------------------------------------------------------------

def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Σ |vertical neighbour differences| + Σ |horizontal ones| per image (B,)."""
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1).sum(1)
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1).sum(1)
    return dy + dx


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of std ``sigma`` pixels, kernel radius ⌈3σ⌉, replicated borders, per channel."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    y = F.pad(x, (r, r, r, r), mode="replicate")
    y = F.conv2d(y, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(y, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def _roll(x: torch.Tensor, shifts: list[tuple[int, int]]) -> torch.Tensor:
    return torch.stack([torch.roll(x[i], s, dims=(-2, -1)) for i, s in enumerate(shifts)])


# --- validation -------------------------------------------------------------------------------------------

def check_maximize_params(parameterization: str, params: dict[str, Any]) -> None:
    """Validate :func:`maximize` keyword arguments ``params`` (the pipeline's ``maximize.pixels`` section) as
    the call would, without a model: raises :class:`XaiCoreError` naming the first bad one."""
    sig = inspect.signature(maximize)
    unknown = sorted(set(params) - set(sig.parameters) - {"model", "units", "shape", "reference", "seed"})
    if unknown:
        raise XaiCoreError(f"maximize has no parameter {unknown[0]!r}")
    args = {k: p.default for k, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}
    args.update(params)
    _check_args(parameterization, (1, 1, 1), args["n_steps"], args["lr"], args["l2"], args["tv"], args["jitter"],
                args["blur_every"], args["blur_sigma"], args["radius"], args["data_range"])


def _check_args(parameterization: str, shape: object, n_steps: int, lr: float, l2: float, tv: float, jitter: int,
                blur_every: int, blur_sigma: float, radius: float | None,
                data_range: tuple[float, float] | None) -> None:
    if parameterization not in PARAMETERIZATIONS:
        raise XaiCoreError(f"unknown parameterization {parameterization!r}; expected one of "
                           f"{', '.join(PARAMETERIZATIONS)}")
    if (not isinstance(shape, tuple | list) or len(shape) != 3
            or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in shape)):
        raise XaiCoreError(f"shape={shape!r} must be (C, H, W), three positive integers")
    for name, value, lo in (("n_steps", n_steps, 1), ("jitter", jitter, 0), ("blur_every", blur_every, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise XaiCoreError(f"{name}={value!r} must be an integer >= {lo}")
    for name, value in (("lr", lr), ("l2", l2), ("tv", tv), ("blur_sigma", blur_sigma)):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise XaiCoreError(f"{name}={value!r} must be a number")
    if not lr > 0:
        raise XaiCoreError(f"lr={lr!r} must be > 0")
    for name, value in (("l2", l2), ("tv", tv)):
        if not value >= 0:
            raise XaiCoreError(f"{name}={value!r} must be >= 0")
    if not l2 < 1:
        raise XaiCoreError(f"l2={l2!r} must be < 1 (the decay multiplies by 1 − l2 each step)")
    if blur_every and not blur_sigma > 0:
        raise XaiCoreError(f"blur_sigma={blur_sigma!r} must be > 0")
    if radius is not None and (isinstance(radius, bool) or not isinstance(radius, int | float) or not radius > 0):
        raise XaiCoreError(f"radius={radius!r} must be > 0 (or None for no norm constraint)")
    if data_range is not None and (not isinstance(data_range, tuple | list) or len(data_range) != 2
                                   or not all(isinstance(v, int | float) for v in data_range)
                                   or not float(data_range[0]) < float(data_range[1])):
        raise XaiCoreError(f"data_range={data_range!r} must be (low, high) with low < high, or None")


# --- the two analyses -------------------------------------------------------------------------------------

def maximize(model: nn.Module, units: Sequence[int] | torch.Tensor, *, shape: tuple[int, int, int],
             layer: str | None = None, parameterization: str = "pixels", n_steps: int = 256, lr: float = 0.05,
             l2: float = 1e-3, tv: float = 0.0, jitter: int = 0, blur_every: int = 0, blur_sigma: float = 0.5,
             radius: float | None = None, data_range: tuple[float, float] | None = (0.0, 1.0),
             reference: AutoencoderState | None = None, seed: int = 0) -> torch.Tensor:
    """Activation maximisation (Erhan et al. 2009; Simonyan et al. 2014, eq. 1; Yosinski et al. 2015; Nguyen
    et al. 2016): one input of ``shape`` per unit that maximises it, (U, C, H, W); see the module docstring."""
    _check_args(parameterization, shape, n_steps, lr, l2, tv, jitter, blur_every, blur_sigma, radius, data_range)
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    ids = _unit_ids(units)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise XaiCoreError(f"seed={seed!r} must be an integer")
    state = reference  # the autoencoder fitted on the training data
    if parameterization == "generator":
        if not isinstance(state, AutoencoderState):
            raise XaiCoreError("the generator parameterization needs a fitted autoencoder: pass "
                               "reference=xaicore.fit(model, x_train, method=\"cem.pn\") or the state of the "
                               "pipeline's autoencoder stage")
        state.check_input(shape, "maximize (generator)")
        if blur_every or radius is not None:
            raise XaiCoreError("blur_every and radius act on pixels; the generator parameterization does not "
                               "use them (its codes stay within state.code_radius)")
    module = _module(model, layer)
    dtype, device = _dtype_device(model)
    act = _activations(model, module, layer)
    gens = [torch.Generator().manual_seed((seed * _SEED_STRIDE + u) % (1 << 63)) for u in ids]
    rows = torch.arange(len(ids), device=device)
    cols = torch.tensor(ids, device=device)

    with eval_mode(model), torch.enable_grad():
        _check_units(ids, _count_units(act, shape, dtype, device), layer)
        mid = 0.0 if data_range is None else 0.5 * (float(data_range[0]) + float(data_range[1]))

        def shifts() -> list[tuple[int, int]]:
            return [tuple(int(s) for s in torch.randint(-jitter, jitter + 1, (2,), generator=g)) for g in gens]

        def objective(x: torch.Tensor) -> torch.Tensor:
            xj = _roll(x, shifts()) if jitter else x
            value = act(xj)[rows, cols].sum()
            return value - tv * total_variation(x).sum() if tv else value

        if parameterization == "pixels":
            noise = torch.stack([torch.randn(shape, generator=g, dtype=torch.float64) for g in gens])
            x = (mid + 0.01 * noise).to(dtype=dtype, device=device)
            for step in range(n_steps):
                x.requires_grad_(True)
                (grad,) = torch.autograd.grad(objective(x), x)
                with torch.no_grad():
                    x = x + lr * grad
                    if l2:
                        x = mid + (1 - l2) * (x - mid)
                    if blur_every and (step + 1) % blur_every == 0:
                        x = gaussian_blur(x, blur_sigma)
                    if data_range is not None:
                        x = x.clamp(float(data_range[0]), float(data_range[1]))
                    if radius is not None:
                        norm = x.flatten(1).norm(dim=1).clamp_min(torch.finfo(dtype).tiny)
                        x = x * (radius / norm).clamp(max=1.0).view(-1, 1, 1, 1)
            return x.detach()

        assert state is not None
        noise = torch.stack([torch.randn(state.latent, generator=g, dtype=torch.float64) for g in gens])
        z = (0.1 * noise).to(dtype=dtype, device=device)
        r = float(state.code_radius)
        for _ in range(n_steps):
            z.requires_grad_(True)
            obj = objective(state.decode(z))
            if l2:
                obj = obj - l2 * z.pow(2).sum()
            (grad,) = torch.autograd.grad(obj, z)
            with torch.no_grad():
                z = z + lr * grad
                norm = z.norm(dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
                z = z * (r / norm).clamp(max=1.0)
        with torch.no_grad():
            return state.decode(z).detach()


def dataset_examples(model: nn.Module, x: torch.Tensor, units: Sequence[int] | torch.Tensor, *,
                     layer: str | None = None, k: int = 9, batch_size: int = 256) -> DatasetExamples:
    """Erhan et al. 2009's dataset examples: for each unit the k inputs of ``x`` (N, ...) that activate it most
    (the unit as in :func:`maximize`), computed in batches without gradients; ties go to the lower index."""
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or x.shape[0] < 1:
        raise XaiCoreError(f"x must be a non-empty (N, ...) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    require_finite(x, "x")
    for name, value in (("k", k), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise XaiCoreError(f"{name}={value!r} must be an integer >= 1")
    n = int(x.shape[0])
    if k > n:
        raise XaiCoreError(f"k={k} is larger than the number of inputs in x ({n})")
    ids = _unit_ids(units)
    module = _module(model, layer)
    dtype, device = _dtype_device(model)
    act = _activations(model, module, layer)
    cols = torch.tensor(ids, device=device)
    with eval_mode(model), torch.no_grad():
        _check_units(ids, _count_units(act, tuple(x.shape[1:]), dtype, device), layer)
        values = batched(lambda xb: act(xb.to(device=device, dtype=dtype))[:, cols], x, size=batch_size
                         ).T.cpu()  # (U, N)
    sorted_values, order = torch.sort(values, dim=1, descending=True, stable=True)
    return DatasetExamples(indices=order[:, :k].contiguous(), values=sorted_values[:, :k].contiguous())
