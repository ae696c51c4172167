"""A network behind its input normalization (``xaicore.models.Normalized``), as torchvision models are used.

LRP explains the network from the normalized input and passes its relevance through the element-wise map; z^B's
pixel box [0, 1] becomes the box of the normalized input. The reference is Zennit's composite on the bare network
given the normalized input, with ZBox bounds (0 - mean) / std and (1 - mean) / std: Zennit's own recipe for a
normalized model. The pattern methods: PatternAttribution passes the normalization (w * a = 1/std * std) and
PatternNet multiplies by its pattern a = std — closed forms against the bare network on the normalized input.
"""

from __future__ import annotations

import pytest
import torch
from zennit import composites as zc

import xaicore
from tests.explain_lrp.test_zennit_parity import assert_parity, zennit_relevance
from xaicore.explain.pattern import fit_signal_estimators
from xaicore.models import Normalize, Normalized

MEAN, STD = (0.3, 0.6), (0.2, 0.5)


def normalized(net):
    return Normalized(Normalize(MEAN, STD), net).double().eval()


def zbox_bounds(lo: float = 0.0, hi: float = 1.0):
    """The pixel box [lo, hi] in the normalized input's coordinates (the module's own float32 mean and std)."""
    norm = Normalize(MEAN, STD).double()
    return (lo - norm.mean) / norm.std, (hi - norm.mean) / norm.std


def test_normalize_is_the_per_channel_map():
    x = torch.rand(3, 2, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    out = Normalize(MEAN, STD).double()(x)
    torch.testing.assert_close(out[:, 1], (x[:, 1] - 0.6) / 0.5, rtol=0, atol=1e-6)  # float32 mean and std
    torch.testing.assert_close(out[:, 0], (x[:, 0] - 0.3) / 0.2, rtol=0, atol=1e-6)


@pytest.mark.parametrize("method, params, theirs", [
    ("lrp.epsilon_gamma_box", {"epsilon": 0.01, "gamma": 0.5},
     lambda lo, hi: zc.EpsilonGammaBox(low=lo, high=hi, epsilon=0.01, gamma=0.5)),
    ("lrp.epsilon_plus_flat", {"epsilon": 0.01}, lambda lo, hi: zc.EpsilonPlusFlat(epsilon=0.01)),
    ("lrp.epsilon_alpha2_beta1", {"epsilon": 0.01}, lambda lo, hi: zc.EpsilonAlpha2Beta1(epsilon=0.01)),
])
def test_lrp_of_a_normalized_network_matches_zennit_on_the_normalized_input(method, params, theirs, lrp_kit):
    net = lrp_kit.build("cnn", seed=11)
    x, target = lrp_kit.batch(5, seed=12)
    ref = zennit_relevance(net, Normalize(MEAN, STD).double()(x), target, theirs(*zbox_bounds()))
    ours = xaicore.explain(normalized(net), x, target, method=method, **params)
    assert ours.shape == x.shape
    assert_parity(ours, ref)


def test_a_pixel_box_other_than_the_unit_box_is_normalized_too(lrp_kit):
    net = lrp_kit.build("cnn", seed=13)
    x, target = lrp_kit.batch(4, seed=14)
    lo, hi = -0.5, 2.0
    theirs = zc.EpsilonGammaBox(*zbox_bounds(lo, hi), epsilon=0.01, gamma=0.25)
    ref = zennit_relevance(net, Normalize(MEAN, STD).double()(x), target, theirs)
    ours = xaicore.explain(normalized(net), x, target, method="lrp.epsilon_gamma_box", epsilon=0.01, gamma=0.25,
                           low=lo, high=hi)
    assert_parity(ours, ref)


@pytest.mark.parametrize("method", ["lrp.z", "dtd.zb", "lrp.alpha_beta"])
def test_conservation_through_the_normalization_on_residual_blocks(method, lrp_kit):
    """z-rule family on the zoo's torchvision-style residual blocks: Σ R = f(x) (no bias absorbs) holds behind the
    normalization as it does without it."""
    net = lrp_kit.build("resnet", seed=15, bias_free=True)
    x, target = lrp_kit.batch(4, seed=16)
    model = normalized(net)
    rel = xaicore.explain(model, x, target, method=method)
    box = dict(zip(("low", "high"), zbox_bounds(), strict=True)) if method == "dtd.zb" else {}  # the pixel box
    bare = xaicore.explain(net, Normalize(MEAN, STD).double()(x), target, method=method, **box)
    torch.testing.assert_close(rel, bare, rtol=1e-10, atol=1e-12)
    if method == "lrp.z":
        fx = model(x).gather(1, target[:, None]).squeeze(1).detach()
        torch.testing.assert_close(rel.sum((1, 2, 3)), fx, rtol=1e-8, atol=1e-10)


def test_pattern_methods_through_the_normalization(lrp_kit):
    net = lrp_kit.build("cnn", seed=17)
    model = normalized(net)
    x_fit, _ = lrp_kit.batch(64, seed=18)
    x, target = lrp_kit.batch(4, seed=19)
    xn = Normalize(MEAN, STD).double()(x)
    wrapped = fit_signal_estimators(model, x_fit)  # fitted on the wrapper: layer names net.*
    bare = fit_signal_estimators(net, Normalize(MEAN, STD).double()(x_fit))
    std = Normalize(MEAN, STD).double().std
    pa = xaicore.explain(model, x, target, method="patternattribution", reference=wrapped)
    torch.testing.assert_close(pa, xaicore.explain(net, xn, target, method="patternattribution", reference=bare))
    pn = xaicore.explain(model, x, target, method="patternnet", reference=wrapped)
    torch.testing.assert_close(pn, std * xaicore.explain(net, xn, target, method="patternnet", reference=bare))
    assert float(pn.abs().sum()) > 0


def test_gradient_methods_see_the_whole_model(lrp_kit):
    """Gradient and Integrated Gradients differentiate the model on pixels: the chain rule through the
    normalization (1/std per channel), and IG stays complete in pixel space."""
    net = lrp_kit.build("cnn", seed=20)
    model = normalized(net)
    x, target = lrp_kit.batch(3, seed=21)
    xn = Normalize(MEAN, STD).double()(x)
    std = Normalize(MEAN, STD).double().std
    g = xaicore.explain(model, x, target, method="gradient")
    torch.testing.assert_close(g, xaicore.explain(net, xn, target, method="gradient") / std)
    ig = xaicore.explain(model, x, target, method="integrated_gradients", n_steps=256)
    fx, f0 = model(x).gather(1, target[:, None]), model(torch.zeros_like(x)).gather(1, target[:, None])
    torch.testing.assert_close(ig.sum((1, 2, 3)), (fx - f0).squeeze(1).detach(), rtol=2e-3, atol=2e-3)
