"""Input invariance (Kindermans et al. 2019): network 2 with a compensated bias computes f₂(x + m) = f₁(x);
the gradient is invariant, gradient × input and integrated gradients from a zero baseline are not."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import xaicore
from xaicore import XaiCoreError
from xaicore.metrics import BiasMapConv2d, input_invariance, shifted_network


def _shift(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return -0.8 + 0.3 * torch.rand(1, 28, 28, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("arch", ["mlp", "cnn"])
def test_network_2_computes_the_same_function(helpers, digits16, arch):
    net1 = helpers.seeded_model(arch, seed=3, dtype=torch.float64)
    x, m = digits16[0].double(), _shift()
    before = helpers.model_state(net1)
    net2 = shifted_network(net1, m, (1, 28, 28))
    with torch.no_grad():
        torch.testing.assert_close(net2(x + m), net1(x), rtol=0, atol=1e-12)
        assert float((net1(x + m) - net1(x)).abs().max()) > 1e-3  # the shift does change network 1's output
    helpers.assert_states_equal(before, helpers.model_state(net1))
    if arch == "cnn":
        assert isinstance(net2.conv1, BiasMapConv2d) and net2.conv1.bias_map.shape == (16, 28, 28)
    else:
        torch.testing.assert_close(net2.fc1.bias, net1.fc1.bias - net1.fc1.weight @ m.flatten(), rtol=0, atol=0)
    # a constant shift given as a number, in float32
    net32 = helpers.seeded_model(arch, seed=3)
    with torch.no_grad():
        torch.testing.assert_close(shifted_network(net32, 0.5, (1, 28, 28))(x.float() + 0.5), net32(x.float()),
                                   rtol=0, atol=1e-5)


def test_input_invariance_of_gradient_methods(helpers, digits16):
    mlp = helpers.seeded_model("mlp", seed=1, dtype=torch.float64)
    x, target = digits16[0].double(), digits16[1]
    m = _shift()
    grad = input_invariance(mlp, x, target, "gradient", m)
    assert float(grad.max()) < 1e-9
    gxi = input_invariance(mlp, x, target, "gradient_x_input", m)
    # closed form: R₁ − R₂ = x ⊙ g − (x + m) ⊙ g = −m ⊙ g
    g = xaicore.explain(mlp, x, target, method="gradient")
    torch.testing.assert_close(gxi.double(), (m * g).abs().flatten(1).sum(1) / (x * g).abs().flatten(1).sum(1),
                               rtol=1e-6, atol=0)
    assert float(gxi.min()) > 1.0
    ig = input_invariance(mlp, x, target, "integrated_gradients", m, n_steps=16)
    assert float(ig.min()) > 1.0


def test_conv_gradient_invariant_off_max_pool_ties(helpers, digits16):
    """On a CNN the gradient agrees where max-pooling has no exact ties (a constant background ties)."""
    cnn = helpers.seeded_model("cnn", seed=1, dtype=torch.float64)
    x = digits16[0].double() + 0.01 * torch.rand(16, 1, 28, 28, generator=torch.Generator().manual_seed(0),
                                                 dtype=torch.float64)
    assert float(input_invariance(cnn, x, digits16[1], "gradient", _shift()).max()) < 1e-9


def test_bad_models_and_shifts(helpers):
    mlp = helpers.seeded_model("mlp")
    with pytest.raises(XaiCoreError, match="shift shape"):
        shifted_network(mlp, torch.zeros(1, 27, 28), (1, 28, 28))
    with pytest.raises(XaiCoreError, match="comes before the first linear or conv layer"):
        shifted_network(nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), 1.0, (4,))
    with pytest.raises(XaiCoreError, match="needs an nn.Sequential"):
        shifted_network(nn.Linear(4, 2), 1.0, (4,))


def test_fitted_methods_are_fitted_per_network_or_take_the_given_states(helpers, digits16):
    """PatternAttribution is fitted on each network's own data (Kindermans et al. 2019, Fig. 1: the
    pattern-based methods pass the check): with fit_data, or with the two fitted states given as reference."""
    net1 = helpers.seeded_model("mlp", seed=5, dtype=torch.float64)
    x, t = digits16[0].double()[:6], digits16[1][:6]
    m = _shift(1)
    with pytest.raises(XaiCoreError, match="pass fit_data"):
        input_invariance(net1, x, t, "patternattribution", m)
    fitted = input_invariance(net1, x, t, "patternattribution", m, fit_data=x)
    s1 = xaicore.fit(net1, x, "patternattribution")
    s2 = xaicore.fit(shifted_network(net1, m, (1, 28, 28)), x + m, "patternattribution")
    given = input_invariance(net1, x, t, "patternattribution", m, reference=s1, params2={"reference": s2})
    assert torch.equal(fitted, given)
    assert float(fitted.max()) < 1e-6  # PatternAttribution with the network's own patterns is input invariant
