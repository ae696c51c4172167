"""Closed-form float64 references: each rule computed by hand (numpy) from the papers' formulas on a 2-layer
network x → W1 x + b1 → ReLU → W2 h + b2, starting from R = f(x) for the target class (survey §5.1).

With z_ij = a_i w_ij the rules send R_{i←j} = R_j z'_ij / Σ_i z'_ij (+ b'_j):
LRP-0 / ε (survey eq. 9, Bach et al. 2015), αβ (Bach et al. 2015, eq. 60), z⁺ (eq. 13), w² (eq. 12), flat,
z^B (Montavon et al. 2017), γ (Montavon et al. 2019). Stabilisers are 0 except ε's, so the numbers are exact.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaicore
from xaicore import XaiCoreError
from xaicore.explain.lrp import Composite, lrp, uniform
from xaicore.explain.lrp import rules as r


def _pos(a):
    return np.maximum(a, 0)


def _neg(a):
    return np.minimum(a, 0)


def backward(a, W, b, R, rule, **kw):
    """R_i = Σ_j share_ij R_j for one dense layer (W: out×in), by the papers' formulas, in numpy."""
    z = a[None, :] * W  # z_ji = a_i w_ij, (out, in)
    if rule == "z":
        msg = z / (z.sum(1) + b)[:, None]
    elif rule == "epsilon":
        den = z.sum(1) + b
        msg = z / (den + kw["eps"] * np.where(den >= 0, 1, -1))[:, None]
    elif rule in ("alpha_beta", "zplus"):
        alpha, beta = (1.0, 0.0) if rule == "zplus" else (kw["alpha"], kw["beta"])
        zp, zn = _pos(z), _neg(z)
        msg = alpha * zp / (zp.sum(1) + _pos(b))[:, None]
        if beta:
            msg = msg - beta * zn / (zn.sum(1) + _neg(b))[:, None]
    elif rule == "gamma":
        g = kw["gamma"]
        y = z.sum(1) + b
        zg = np.where(y[:, None] > 0, a * (W + g * _pos(W)), a * (W + g * _neg(W)))
        bg = np.where(y > 0, b + g * _pos(b), b + g * _neg(b))
        msg = zg / (zg.sum(1) + bg)[:, None]
    elif rule == "w2":
        msg = W ** 2 / (W ** 2).sum(1, keepdims=True)
    elif rule == "flat":
        msg = np.ones_like(W) / W.shape[1]
    elif rule == "zb":
        zb = z - kw["low"] * _pos(W) - kw["high"] * _neg(W)
        msg = zb / zb.sum(1, keepdims=True)
    return msg.T @ R


@pytest.fixture
def net(lrp_kit):
    rng = np.random.default_rng(0)
    model, params = lrp_kit.two_layer_net(rng, 4, 5)
    x = rng.uniform(0.05, 1.0, size=(3, 4))
    return model, x, params


def reference(x, params, target, upper, lower=None, **kw):
    W1, b1, W2, b2 = params
    h = np.maximum(W1 @ x + b1, 0)
    f = W2 @ h + b2
    R2 = np.zeros(3)
    R2[target] = f[target]
    R1 = backward(h, W2, b2, R2, upper, **kw)
    return backward(x, W1, b1, R1, lower or upper, **kw)


CASES = [
    ("z", r.z_rule(), None, {}),
    ("epsilon", r.epsilon(0.2), None, {"eps": 0.2}),
    ("alpha_beta", r.alpha_beta(2.0, 1.0, stabilizer=0.0), None, {"alpha": 2.0, "beta": 1.0}),
    ("alpha_beta", r.alpha_beta(1.5, 0.5, stabilizer=0.0), None, {"alpha": 1.5, "beta": 0.5}),
    ("zplus", r.zplus(stabilizer=0.0), None, {}),
    ("gamma", r.gamma(0.5, stabilizer=0.0), None, {"gamma": 0.5}),
    ("zplus", r.zplus(stabilizer=0.0), ("w2", r.w2(stabilizer=0.0)), {}),
    ("zplus", r.zplus(stabilizer=0.0), ("flat", r.flat(stabilizer=0.0)), {}),
    ("zplus", r.zplus(stabilizer=0.0), ("zb", r.zb(-0.5, 1.5, stabilizer=0.0)), {"low": -0.5, "high": 1.5}),
]


@pytest.mark.parametrize("upper, rule, first, kw", CASES, ids=[f"{c[0]}-{c[2][0] if c[2] else 'same'}" for c in CASES])
def test_rule_equals_hand_computation(upper, rule, first, kw, net):
    model, x, params = net
    target = torch.tensor([0, 2, 1])
    composite = uniform(rule) if first is None else Composite(dense=rule, conv=rule, first=first[1])
    ours = lrp(model, torch.from_numpy(x), target, composite).numpy()
    for n in range(3):
        ref = reference(x[n], params, int(target[n]), upper, first[0] if first else None, **kw)
        np.testing.assert_allclose(ours[n], ref, rtol=1e-12, atol=1e-13)


# --- Bach et al. 2015, eq. 60 on a two-input toy (Zennit issue #107, iNNvestigate issue #273) ------------------

def toy():
    """y = x1 − x2 − 1 at x = (1, 1): z_11 = 1, z_21 = −1, b = −1, f(x) = −1."""
    lin = nn.Linear(2, 1).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[1.0, -1.0]]))
        lin.bias.fill_(-1.0)
    return lin, torch.ones(1, 2, dtype=torch.float64), torch.tensor([0])


@pytest.mark.parametrize("alpha, beta, expected", [(1.0, 0.0, [-1.0, 0.0]), (2.0, 1.0, [-2.0, 0.5])])
def test_alpha_beta_two_input_toy_follows_eq_60(alpha, beta, expected):
    """Eq. 60: R_i = R_j (α z⁺_ij / z⁺_j − β z⁻_ij / z⁻_j) with z⁺_j = Σ z⁺_ij + b⁺_j = 1 and
    z⁻_j = Σ z⁻_ij + b⁻_j = −1 − 1 = −2, R_j = f(x) = −1:
    α=1, β=0: R = (−1·1/1, 0) = (−1, 0); α=2, β=1: R = (−1·2·1/1, −1·(−1)·(−1)/(−2)) = (−2, 0.5).
    The bias is a neuron of its own in eq. 60: its message β·b⁻_j/z⁻_j·R_j = +0.5 stays with it, so ΣR_i = −1.5
    ≠ f(x) for α=2, β=1 (and = f(x) for α=1, β=0, where b⁺ = 0). Every denominator of eq. 60 here is 1 or −2;
    iNNvestigate's −1e7 / −2e7 mean a denominator of ~1e-7, a zero one hit by its stabiliser, which eq. 60 never
    produces on this input. Zennit matches eq. 60 (checked below)."""
    lin, x, target = toy()
    rel = xaicore.explain(lin, x, target, method="lrp.alpha_beta", alpha=alpha, beta=beta, stabilizer=0.0)
    torch.testing.assert_close(rel, torch.tensor([expected], dtype=torch.float64), rtol=0, atol=1e-15)
    # Zennit agrees (its stabiliser 1e-6 moves the numbers by ~1e-6)
    from zennit import rules as zr
    from zennit.composites import LayerMapComposite
    from zennit.types import Linear as AnyLinear
    comp = LayerMapComposite([(AnyLinear, zr.AlphaBeta(alpha=alpha, beta=beta))])
    xx = x.clone().requires_grad_(True)
    with comp.context(lin) as m:
        out = m(xx)
        (zen,) = torch.autograd.grad(out, xx, grad_outputs=torch.ones_like(out))
    torch.testing.assert_close(zen * out.detach(), rel, rtol=0, atol=1e-5)


@pytest.mark.parametrize("alpha, beta", [(2.0, 0.0), (1.0, 1.0), (-1.0, -2.0), (0.5, -0.5)])
def test_alpha_minus_beta_must_be_one(alpha, beta, net):
    model, x, _ = net
    with pytest.raises(XaiCoreError, match="alpha - beta = 1"):
        xaicore.explain(model, torch.from_numpy(x), torch.tensor([0, 1, 2]), method="lrp.alpha_beta",
                        alpha=alpha, beta=beta)


def test_bad_rule_parameters_are_refused(net):
    model, x, _ = net
    x = torch.from_numpy(x)
    with pytest.raises(XaiCoreError, match="epsilon must be >= 0"):
        xaicore.explain(model, x, torch.tensor([0, 1, 2]), method="lrp.epsilon", epsilon=-1.0)
    with pytest.raises(XaiCoreError, match="gamma must be >= 0"):
        xaicore.explain(model, x, torch.tensor([0, 1, 2]), method="lrp.epsilon_gamma_box", gamma=-0.1)
    with pytest.raises(XaiCoreError, match="low=2.0 is above high=1.0"):
        xaicore.explain(model, x, torch.tensor([0, 1, 2]), method="dtd.zb", low=2.0, high=1.0)
