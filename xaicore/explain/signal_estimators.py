"""Signal estimators of PatternNet/PatternAttribution (Kindermans et al. 2018; survey §5.5, eqs. 14–16), fitted on data.

A linear neuron y = wᵀx sees data x = s + d, signal plus distractor. A signal estimator S(x) = a·y is fixed by a
*pattern* a per neuron; w only filters the distractor out, the pattern says where the signal lies. Three estimators:

* ``filter`` — S_w (eq. 14): a = w / wᵀw. Needs no data; it is what DeConvNet/Guided Backprop implicitly assume.
* ``linear`` — S_a (eq. 15): a = cov[x, y] / wᵀcov[x, y], the estimator whose distractor d = x − a·y is
  uncorrelated with y on the fitting data.
* ``two_component`` — S_a+- (eq. 16): one pattern for y > 0 and one for y ≤ 0, each from the covariance of the
  samples in that regime, a_± = cov_±[x, y] / wᵀcov_±[x, y]. Kindermans et al. condition on the neuron's output
  y (its pre-activation, bias included, which is what the ReLU gates); the survey's eq. 16 writes the condition per
  contribution x_i w_ij — we follow the paper.

:func:`fit_patterns` accumulates the sufficient statistics of every Linear/Conv2d layer batch by batch (float64;
the conv statistics are weight gradients of the layer, ``conv2d_weight``, so no patch matrix is materialised) and
returns :class:`Patterns`, saved and loaded with ``torch.save``/``torch.load(weights_only=True)``. BatchNorm is
merged into the preceding layer first (the canonizer of the LRP engine), so a pattern belongs to the whole affine
map that the ReLU sees. :func:`pattern_quality` is the paper's criterion ρ(S) = 1 − max_v corr(y, vᵀ(x − S(x)))
per layer. The methods that use the patterns are in :mod:`xaicore.explain.pattern`.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Iterator
from typing import Any, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from xaicore.engine import batch_slices, eval_mode, hooks
from xaicore.errors import XaiCoreError
from xaicore.explain.lrp.canonizers import merge_batch_norm
from xaicore.explain.state import FittedState

ESTIMATORS = ("filter", "linear", "two_component")
PATTERN_LAYERS = (nn.Linear, nn.Conv2d)
FORMAT = "xaicore.patterns/1"


# --- statistics ---------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Moments:
    """Sums over the rows (samples, or sample × position for a conv) that one layer saw; rows (out, in) follow the
    layer's flattened weight. ``sxx`` (in × in) only when second moments of x were asked for."""

    n: float
    sx: torch.Tensor  # (in,)
    sy: torch.Tensor  # (out,)
    sxy: torch.Tensor  # (out, in)
    n_pos: torch.Tensor  # (out,) rows with y > 0
    sx_pos: torch.Tensor  # (out, in)
    sy_pos: torch.Tensor  # (out,)
    sxy_pos: torch.Tensor  # (out, in)
    syy_pos: torch.Tensor  # (out,) Σ (y⁺)²
    syy_neg: torch.Tensor  # (out,) Σ (y⁻)²
    sxx: torch.Tensor | None = None

    def __iadd__(self, other: Moments) -> Moments:
        for f in dataclasses.fields(self):
            a, b = getattr(self, f.name), getattr(other, f.name)
            setattr(self, f.name, None if a is None or b is None else a + b)
        return self


def check_layer(name: str, m: nn.Module) -> None:
    if isinstance(m, nn.Conv2d):
        if m.groups != 1 or m.padding_mode != "zeros" or isinstance(m.padding, str) and m.padding != "valid":
            raise XaiCoreError(f"patterns: layer {name!r} is a Conv2d with groups={m.groups}, padding={m.padding!r}, "
                               f"padding_mode={m.padding_mode!r}; supported: groups=1, zero padding given as numbers")
    elif isinstance(m, nn.Conv1d | nn.Conv3d):
        raise XaiCoreError(f"patterns: layer {name!r} is a {type(m).__name__}; supported layers: Linear, Conv2d")


def conv_padding(m: nn.Conv2d) -> Any:
    return 0 if m.padding == "valid" else m.padding


def _conv_sum(m: nn.Conv2d, x: torch.Tensor, g: torch.Tensor, out_channels: int | None = None) -> torch.Tensor:
    """Σ over samples and positions of g[o] · patch — the weight gradient of ``m`` — as (out, in) float64."""
    shape = (out_channels or m.out_channels, *m.weight.shape[1:])
    w = torch.nn.grad.conv2d_weight(x, shape, g, m.stride, conv_padding(m), m.dilation, m.groups)
    return w.reshape(shape[0], -1).double()


def layer_moments(m: nn.Module, x: torch.Tensor, y: torch.Tensor, second: bool = False) -> Moments:
    """The :class:`Moments` of one batch through layer ``m`` (input ``x``, pre-activation ``y``)."""
    x, y = x.detach(), y.detach()
    pos = y > 0
    yp = torch.where(pos, y, torch.zeros_like(y))
    yn = y - yp
    if isinstance(m, nn.Linear):
        xd, yd, ypd = x.reshape(-1, x.shape[-1]).double(), y.reshape(-1, y.shape[-1]).double(), \
            yp.reshape(-1, y.shape[-1]).double()
        posd = pos.reshape(-1, y.shape[-1]).double()
        mom = Moments(float(xd.shape[0]), xd.sum(0), yd.sum(0), yd.T @ xd, posd.sum(0), posd.T @ xd, ypd.sum(0),
                      ypd.T @ xd, (ypd * ypd).sum(0), yn.reshape(-1, y.shape[-1]).double().pow(2).sum(0),
                      xd.T @ xd if second else None)
        return mom
    rows = float(y.shape[0] * y.shape[2] * y.shape[3])
    dims = (0, 2, 3)
    sx = _conv_sum(m, x, torch.ones_like(y[:, :1]), 1)[0]
    sxx = None
    if second:
        patches = F.unfold(x, m.kernel_size, m.dilation, conv_padding(m), m.stride)  # (B, in, L)
        p = patches.transpose(1, 2).reshape(-1, patches.shape[1]).double()
        sxx = p.T @ p
    return Moments(rows, sx, y.double().sum(dims), _conv_sum(m, x, y), pos.double().sum(dims),
                   _conv_sum(m, x, pos.to(x.dtype)), yp.double().sum(dims), _conv_sum(m, x, yp),
                   yp.double().pow(2).sum(dims), yn.double().pow(2).sum(dims), sxx)


def _batches(data: torch.Tensor | Iterable[torch.Tensor], batch_size: int) -> Iterator[torch.Tensor]:
    if isinstance(data, torch.Tensor):
        if data.ndim not in (2, 4) or not data.is_floating_point():
            raise XaiCoreError(f"patterns: data must be a floating (N, C, H, W) or (N, F) tensor, got "
                               f"{tuple(data.shape)} {data.dtype}")
        for s in batch_slices(data.shape[0], batch_size):
            yield data[s]
    else:
        for batch in data:
            yield batch[0] if isinstance(batch, tuple | list) else batch


def collect_moments(model: nn.Module, data: torch.Tensor | Iterable[torch.Tensor], *, batch_size: int = 256,
                    second: bool = False, progress: bool = False, desc: str = "patterns"
                    ) -> tuple[dict[str, Moments], dict[str, torch.Tensor]]:
    """Moments of every Linear/Conv2d layer of the BatchNorm-merged ``model`` over ``data`` (one pass, batched),
    and each layer's merged weight (out, in) in float64."""
    moments: dict[str, Moments] = {}
    weights: dict[str, torch.Tensor] = {}
    with eval_mode(model):
        batches = _batches(data, batch_size)
        first = next(batches, None)
        if first is None or first.shape[0] == 0:
            raise XaiCoreError("patterns: no data to fit the signal estimators on")
        with merge_batch_norm(model, first[:1]), torch.no_grad():
            pairs = []
            for name, mod in model.named_modules():
                if isinstance(mod, PATTERN_LAYERS + (nn.Conv1d, nn.Conv3d)):
                    check_layer(name, mod)
                    weights[name] = mod.weight.detach().reshape(mod.weight.shape[0], -1).double()

                    def hook(mod: nn.Module, inputs: tuple, y: torch.Tensor, name: str = name) -> None:
                        mom = layer_moments(mod, inputs[0], y, second)
                        if name in moments:
                            moments[name] += mom
                        else:
                            moments[name] = mom

                    pairs.append((mod, hook))
            if not weights:
                raise XaiCoreError("patterns: the model has no Linear or Conv2d layer")
            with hooks(pairs):
                bar = tqdm(desc=desc, unit="sample", disable=not progress)
                for batch in itertools.chain([first], batches):
                    model(batch)
                    bar.update(batch.shape[0])
                bar.close()
    return moments, weights


# --- patterns -----------------------------------------------------------------------------------------------

def safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """Row-wise num / den; rows whose denominator vanishes (dead or constant units) get a zero pattern."""
    ok = den.abs() > 1e-12 * den.abs().max().clamp_min(1e-300)
    return torch.where(ok[:, None], num / torch.where(ok, den, torch.ones_like(den))[:, None], torch.zeros_like(num))


def _pattern(w: torch.Tensor, n: torch.Tensor, sx: torch.Tensor, sy: torch.Tensor, sxy: torch.Tensor) -> torch.Tensor:
    """a = cov[x, y] / wᵀcov[x, y] per unit from the sums of its n rows (rows with n < 2 get zeros)."""
    n = n.clamp_min(1.0)
    mx = sx / n[:, None] if sx.ndim == 2 else sx[None, :] / n[:, None]
    cov = sxy / n[:, None] - (sy / n)[:, None] * mx
    a = safe_div(cov, (w * cov).sum(1))
    return torch.where((n >= 2)[:, None], a, torch.zeros_like(a))


def estimate_patterns(mom: Moments, w: torch.Tensor) -> dict[str, torch.Tensor]:
    """The three estimators' patterns (out, in) of one layer: ``filter``, ``linear``, ``positive``, ``negative``."""
    out = w.shape[0]
    n_all = torch.full((out,), mom.n, dtype=torch.float64, device=w.device)
    n_neg = n_all - mom.n_pos
    return {
        "filter": safe_div(w, (w * w).sum(1)),
        "linear": _pattern(w, n_all, mom.sx, mom.sy, mom.sxy),
        "positive": _pattern(w, mom.n_pos, mom.sx_pos, mom.sy_pos, mom.sxy_pos),
        "negative": _pattern(w, n_neg, mom.sx[None, :] - mom.sx_pos, mom.sy - mom.sy_pos, mom.sxy - mom.sxy_pos),
    }


def estimator_patterns(layer: dict[str, torch.Tensor], estimator: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(a for y > 0, a for y ≤ 0) of one layer under ``estimator``."""
    if estimator == "two_component":
        return layer["positive"], layer["negative"]
    if estimator in ("filter", "linear"):
        return layer[estimator], layer[estimator]
    raise XaiCoreError(f"unknown signal estimator {estimator!r}; known: {', '.join(ESTIMATORS)}")


@dataclasses.dataclass
class Patterns(FittedState):
    """Fitted signal estimators of one model: per Linear/Conv2d layer (name in ``model.named_modules()``) the
    patterns (out, in) of every estimator, the weight checksum they belong to, and ρ(S) once measured."""

    WHAT: ClassVar[str] = "patterns file"

    layers: dict[str, dict[str, torch.Tensor]]
    n_samples: int
    quality: dict[str, dict[str, float]] = dataclasses.field(default_factory=dict)  # estimator -> layer -> ρ(S)

    def to_blob(self) -> dict[str, Any]:
        return {"format": FORMAT, "layers": self.layers, "n_samples": self.n_samples, "quality": self.quality}

    @classmethod
    def from_blob(cls, blob: Any) -> Patterns:
        if not isinstance(blob, dict) or blob.get("format") != FORMAT:
            raise ValueError(f"not an xaicore patterns file ({FORMAT})")
        return cls(blob["layers"], int(blob["n_samples"]), blob.get("quality", {}))


def fit_patterns(model: nn.Module, data: torch.Tensor | Iterable[torch.Tensor], *, batch_size: int = 256,
                 progress: bool = False) -> Patterns:
    """Fit the signal estimators S_w, S_a and S_a+- of every Linear/Conv2d layer of ``model`` on ``data``
    (Kindermans et al. 2018, §4; survey eqs. 14–16): one batched pass, statistics in float64."""
    moments, weights = collect_moments(model, data, batch_size=batch_size, progress=progress)
    missing = sorted(set(weights) - set(moments))
    if missing:
        raise XaiCoreError(f"patterns: layer(s) {', '.join(missing)} never ran in the forward pass")
    layers = {}
    for name, mom in moments.items():
        w = weights[name]
        layers[name] = {**estimate_patterns(mom, w), "checksum": w.sum().reshape(1)}
    return Patterns(layers, int(data.shape[0]) if isinstance(data, torch.Tensor) else -1)


def _distractor_moments(mom: Moments, a_p: torch.Tensor, a_n: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Second moments of the distractor d = x − a₊y⁺ − a₋y⁻ of every unit, in factored form: cov[d, d] =
    C + U M Uᵀ with C = cov[x, x] (in, in), U (out, in, 4), M (out, 4, 4); b = cov[d, y] (out, in); var(y) (out,)."""
    n = mom.n
    mx = mom.sx / n
    assert mom.sxx is not None
    c_xx = mom.sxx / n - torch.outer(mx, mx)
    ey_p, ey_n = mom.sy_pos / n, (mom.sy - mom.sy_pos) / n
    c_p = mom.sxy_pos / n - ey_p[:, None] * mx[None, :]  # cov[x, y⁺]
    c_n = (mom.sxy - mom.sxy_pos) / n - ey_n[:, None] * mx[None, :]  # cov[x, y⁻]
    v_p, v_n, k = mom.syy_pos / n - ey_p ** 2, mom.syy_neg / n - ey_n ** 2, -ey_p * ey_n  # y⁺y⁻ = 0
    a_p, a_n = a_p.to(c_xx), a_n.to(c_xx)
    b = c_p + c_n - a_p * (v_p + k)[:, None] - a_n * (v_n + k)[:, None]
    u = torch.stack([a_p, a_n, c_p, c_n], dim=2)
    m = torch.zeros(u.shape[0], 4, 4, dtype=u.dtype, device=u.device)
    m[:, 0, 0], m[:, 1, 1], m[:, 0, 1], m[:, 1, 0] = v_p, v_n, k, k
    m[:, 0, 2] = m[:, 1, 3] = m[:, 2, 0] = m[:, 3, 1] = -1.0
    return c_xx, u, m, b, v_p + v_n + 2 * k


def pattern_quality(model: nn.Module, patterns: Patterns, data: torch.Tensor | Iterable[torch.Tensor], *,
                    fit_data: torch.Tensor | Iterable[torch.Tensor] | None = None, batch_size: int = 256,
                    ridge: float = 1e-6) -> dict[str, dict[str, float]]:
    """ρ(S) = 1 − max_v corr(y, vᵀ(x − S(x))) (Kindermans et al. 2018, §4) per estimator and layer, averaged over
    the layer's units with a non-constant output.

    v is the least-squares regression of y on the distractor d = x − S(x) (ridge λ = ``ridge``·tr(C)/dim),
    fitted on ``fit_data`` and its correlation measured on ``data`` — held out, so that a layer with more inputs
    than samples cannot reach corr = 1 by overfitting v. Without ``fit_data`` v is fitted on ``data`` itself (the
    in-sample maximum). On the data the patterns were fitted on, S_a leaves cov[d, y] = 0, so v = 0 and ρ(S_a) = 1.
    Closed form from the data's moments: cov[d, d] is C = cov[x, x] plus a rank-4 update (d = x − a₊y⁺ − a₋y⁻),
    inverted with Woodbury's identity."""
    test, weights = collect_moments(model, data, batch_size=batch_size, second=True)
    fit = test if fit_data is None else collect_moments(model, fit_data, batch_size=batch_size, second=True)[0]
    out: dict[str, dict[str, float]] = {e: {} for e in ESTIMATORS}
    for name, mom in test.items():
        layer = layer_patterns(patterns, name, weights[name])
        p_inv = None  # (C + λI)⁻¹: C = cov[x, x] is every estimator's, inverted once per layer
        for est in ESTIMATORS:
            a_p, a_n = estimator_patterns(layer, est)
            c_f, u_f, m_f, b_f, var_f = _distractor_moments(fit[name], a_p, a_n)
            dim = c_f.shape[0]
            lam = ridge * float(torch.trace(c_f)) / dim + 1e-300
            if p_inv is None:
                p_inv = torch.linalg.inv(c_f + lam * torch.eye(dim, dtype=c_f.dtype, device=c_f.device))
            pu = torch.einsum("ij,ojk->oik", p_inv, u_f)  # (out, in, 4)
            pb = b_f @ p_inv  # (out, in); P is symmetric
            inner = torch.eye(4, dtype=c_f.dtype, device=c_f.device) + m_f @ torch.einsum("oik,oil->okl", u_f, pu)
            rhs = m_f @ torch.einsum("oik,oi->ok", u_f, pb)[:, :, None]
            v = pb - (pu @ torch.linalg.solve(inner, rhs))[:, :, 0]  # (cov[d, d] + λI)⁻¹ b per unit
            # S_a on its own fitting data: b = 0 up to rounding, whose direction means nothing: v = 0, corr = 0
            scale = (var_f.clamp_min(0) * float(torch.trace(c_f))).sqrt()
            v = torch.where((b_f.norm(dim=1) > 1e-9 * scale)[:, None], v, torch.zeros_like(v))
            c_t, u_t, m_t, b_t, var_t = _distractor_moments(mom, a_p, a_n)
            utv = torch.einsum("oik,oi->ok", u_t, v)
            sv = v @ c_t + torch.einsum("oik,ok->oi", u_t, (m_t @ utv[:, :, None])[..., 0])  # cov_t[d, d] v
            den = ((v * sv).sum(1).clamp_min(0) * var_t.clamp_min(0)).sqrt()
            corr = torch.where(den > 0, (v * b_t).sum(1) / torch.where(den > 0, den, torch.ones_like(den)),
                               torch.zeros_like(den))
            live = (var_t > 1e-12 * var_t.max().clamp_min(1e-300)) & (var_f > 1e-12 * var_f.max().clamp_min(1e-300))
            rho = 1.0 - corr.abs().clamp(0.0, 1.0)
            out[est][name] = float(rho[live].mean()) if bool(live.any()) else float("nan")
    return out


def layer_patterns(patterns: Patterns, name: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
    layer = patterns.layers.get(name)
    if layer is None:
        raise XaiCoreError(f"the patterns have no layer {name!r} of this model (they hold "
                           f"{', '.join(patterns.layers) or 'none'}); fit them on this model with fit_patterns")
    if tuple(layer["filter"].shape) != tuple(w.shape):
        raise XaiCoreError(f"the patterns of layer {name!r} are {tuple(layer['filter'].shape)}, the layer's weights "
                           f"{tuple(w.shape)}; fit them on this model with fit_patterns")
    ref, got = float(layer["checksum"][0]), float(w.double().sum())
    if abs(got - ref) > 1e-6 * max(1.0, abs(ref), float(w.double().abs().sum())):
        raise XaiCoreError(f"the patterns of layer {name!r} were fitted on other weights (checksum {ref:.6g}, this "
                           f"model {got:.6g}); fit them on this model with fit_patterns")
    return layer
