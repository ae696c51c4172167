"""Taylor decomposition at a root point (survey §5.2, eq. 10): the root search and R = ∇f(x₀) ⊙ (x − x₀)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import xaicore
from xaicore import XaiCoreError
from xaicore.explain.lrp import taylor_root


def test_linear_model_root_and_exact_decomposition():
    """f(x) = w·x + b: the root on the gradient line is x₀ = x − f(x) w/‖w‖², and ΣR = f(x) − f(x₀) = f(x)."""
    with torch.random.fork_rng():
        torch.manual_seed(40)
        lin = nn.Linear(6, 3).double().eval()
        x = torch.randn(4, 6, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0])
    x0, f0 = taylor_root(lin, x, target)
    w = lin.weight.detach()[target]
    fx = lin(x).detach().gather(1, target[:, None])
    torch.testing.assert_close(x0, x - fx * w / (w * w).sum(1, keepdim=True), rtol=0, atol=1e-12)
    assert float(f0.abs().max()) < 1e-12
    rel = xaicore.explain(lin, x, target, method="taylor")
    torch.testing.assert_close(rel, w * (x - x0), rtol=0, atol=1e-14)
    torch.testing.assert_close(rel.sum(1), fx[:, 0], rtol=0, atol=1e-12)


def test_root_is_found_on_a_relu_cnn(lrp_kit):
    model = lrp_kit.build("cnn", seed=41)
    x, target = lrp_kit.batch(6, seed=42)
    x0, f0 = taylor_root(model, x, target, n_steps=50)
    with torch.no_grad():
        fx = model(x).gather(1, target[:, None])[:, 0]
    found = f0.abs() / fx.abs() < 1e-9
    assert int(found.sum()) >= 5  # a ReLU logit need not cross 0 on the line: then the smallest |f| tried is kept
    assert bool((f0.abs() <= fx.abs()).all())
    assert float((x0 - x).abs().max()) > 0


def test_input_direction_on_a_bias_free_net_gives_gradient_x_input(lrp_kit):
    """Bias-free ReLU nets are positively homogeneous: f((1 − t)x) = (1 − t) f(x), the root is t → 1 and
    ∇f(x₀) = ∇f(x), so R = ∇f(x) ⊙ x (Montavon et al. 2017, the trivial root point)."""
    model = lrp_kit.build("resnet", seed=43, bias_free=True)
    x, target = lrp_kit.batch(3, seed=44)
    rel = xaicore.explain(model, x, target, method="taylor", direction="input")
    gi = xaicore.explain(model, x, target, method="gradient_x_input")
    torch.testing.assert_close(rel, gi, rtol=0, atol=1e-9 * float(gi.abs().max()))


def test_bad_parameters_are_refused(lrp_kit):
    model = lrp_kit.build("cnn")
    x, target = lrp_kit.batch(2)
    with pytest.raises(XaiCoreError, match="unknown direction 'up'"):
        xaicore.explain(model, x, target, method="taylor", direction="up")
    with pytest.raises(XaiCoreError, match="n_steps must be >= 1"):
        xaicore.explain(model, x, target, method="taylor", n_steps=0)
