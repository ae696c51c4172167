"""Peer parity with Zennit (a test dependency only), float64, tolerance 1e-5.

Zennit's attributor starts from the output relevance it is given (a one-hot: R_out = 1) while xaicore starts from
R = f(x) (survey §5.1, constraint 3); every rule is linear in the upper relevance, so Zennit's map is scaled by f(x).
Zennit's stabiliser for the non-ε rules is 1e-6, the default of ours. Its WSquare puts b² into the denominator, the
survey's eq. 12 does not: Zennit runs with ``zero_params=["bias"]`` there. Its AvgPool rule is a stabilised z-rule
(ε = 1e-6), ours is exact: the AvgPool case gives Zennit a negligible stabiliser.
"""

from __future__ import annotations

import pytest
import torch
from zennit import composites as zc
from zennit import rules as zr
from zennit.composites import LayerMapComposite, SpecialFirstLayerMapComposite
from zennit.types import Activation, AvgPool, Convolution
from zennit.types import Linear as AnyLinear

import xaicore
from xaicore.explain.lrp import Composite, lrp, uniform
from xaicore.explain.lrp import rules as r

TOL = 1e-5


def zennit_relevance(model, x, target, composite):
    x = x.clone().requires_grad_(True)
    with composite.context(model) as m:
        out = m(x)
        onehot = torch.zeros_like(out).scatter_(1, target[:, None], 1.0)
        (rel,) = torch.autograd.grad(out, x, grad_outputs=onehot)
    fx = out.detach().gather(1, target[:, None])
    return rel.detach() * fx.view(-1, *([1] * (x.ndim - 1)))


def base_map():
    return [(Activation, zr.Pass()), (AvgPool, zr.Norm(stabilizer=1e-30))]


def assert_parity(ours, ref):
    scale = float(ref.abs().max())
    assert scale > 0
    err = float((ours - ref).abs().max()) / scale
    assert err < TOL, err


UNIFORM = [
    ("epsilon", lambda: zr.Epsilon(epsilon=0.05), lambda: r.epsilon(0.05)),
    ("zplus", lambda: zr.ZPlus(), lambda: r.zplus()),
    ("alpha2beta1", lambda: zr.AlphaBeta(alpha=2.0, beta=1.0), lambda: r.alpha_beta(2.0, 1.0)),
    ("alpha3beta2", lambda: zr.AlphaBeta(alpha=3.0, beta=2.0), lambda: r.alpha_beta(3.0, 2.0)),
    ("gamma", lambda: zr.Gamma(gamma=0.25), lambda: r.gamma(0.25)),
]


@pytest.mark.parametrize("arch", ["cnn", "vgg_avgpool"])
@pytest.mark.parametrize("name, theirs, ours", UNIFORM, ids=[u[0] for u in UNIFORM])
def test_uniform_rule_matches_zennit(name, theirs, ours, arch, lrp_kit):
    model = lrp_kit.build("cnn", seed=1)
    if arch == "vgg_avgpool":  # the VGG net without BatchNorm, with an AvgPool
        model = torch.nn.Sequential(*[m for m in lrp_kit.build("vgg_bn", seed=2)
                                      if not isinstance(m, torch.nn.modules.batchnorm._BatchNorm)])
    x, target = lrp_kit.batch(4, seed=3)
    x = x - 0.3  # signed input: the generalised rules' x⁻ terms are exercised on the first layer
    ref = zennit_relevance(model, x, target, LayerMapComposite(base_map() + [(AnyLinear, theirs())]))
    assert_parity(lrp(model, x, target, uniform(ours())), ref)


FIRST = [
    ("flat", lambda: zr.Flat(), lambda: r.flat()),
    ("w2", lambda: zr.WSquare(zero_params=["bias"]), lambda: r.w2()),
    ("zbox", lambda: zr.ZBox(low=-0.5, high=1.5), lambda: r.zb(-0.5, 1.5)),
    ("zbox_tensor", lambda: zr.ZBox(low=torch.full((1, 2, 1, 1), -0.5, dtype=torch.float64),
                                    high=torch.tensor([1.0, 2.0], dtype=torch.float64).view(1, 2, 1, 1)),
     lambda: r.zb(torch.full((1, 2, 1, 1), -0.5, dtype=torch.float64),
                  torch.tensor([1.0, 2.0], dtype=torch.float64).view(1, 2, 1, 1))),
]


@pytest.mark.parametrize("name, theirs, ours", FIRST, ids=[f[0] for f in FIRST])
def test_input_layer_rule_matches_zennit(name, theirs, ours, lrp_kit):
    model = lrp_kit.build("cnn", seed=4)
    x, target = lrp_kit.batch(4, seed=5)
    composite = SpecialFirstLayerMapComposite(base_map() + [(AnyLinear, zr.Epsilon(epsilon=0.01))],
                                              first_map=[(AnyLinear, theirs())])
    ref = zennit_relevance(model, x, target, composite)
    eps = r.epsilon(0.01)
    assert_parity(lrp(model, x, target, Composite(dense=eps, conv=eps, first=ours())), ref)


COMPOSITES = [
    ("lrp.epsilon_plus_flat", {"epsilon": 0.01}, lambda: zc.EpsilonPlusFlat(epsilon=0.01)),
    ("lrp.epsilon_gamma_box", {"epsilon": 0.01, "gamma": 0.5, "low": 0.0, "high": 1.0},
     lambda: zc.EpsilonGammaBox(low=0.0, high=1.0, epsilon=0.01, gamma=0.5)),
    ("lrp.epsilon_plus", {"epsilon": 0.01}, lambda: zc.EpsilonPlus(epsilon=0.01)),
    ("lrp.epsilon_alpha2_beta1", {"epsilon": 0.01}, lambda: zc.EpsilonAlpha2Beta1(epsilon=0.01)),
    ("lrp.alpha_beta", {"alpha": 1.0, "beta": 0.0}, lambda: LayerMapComposite([(AnyLinear, zr.ZPlus())])),
    ("dtd.zplus", {}, lambda: LayerMapComposite([(AnyLinear, zr.ZPlus())])),
    ("dtd.zb", {"low": -1.0, "high": 2.0},
     lambda: SpecialFirstLayerMapComposite([(AnyLinear, zr.ZPlus())], [(Convolution, zr.ZBox(-1.0, 2.0))])),
    ("dtd.w2", {}, lambda: SpecialFirstLayerMapComposite([(AnyLinear, zr.ZPlus())],
                                                         [(Convolution, zr.WSquare(zero_params=["bias"]))])),
    ("lrp.epsilon", {"epsilon": 0.1}, lambda: LayerMapComposite([(AnyLinear, zr.Epsilon(epsilon=0.1))])),
]


@pytest.mark.parametrize("method, params, theirs", COMPOSITES, ids=[c[0] for c in COMPOSITES])
def test_registered_method_matches_zennit_composite(method, params, theirs, lrp_kit):
    model = lrp_kit.build("cnn", seed=6)
    x, target = lrp_kit.batch(6, seed=7)
    ref = zennit_relevance(model, x, target, theirs())
    assert_parity(xaicore.explain(model, x, target, method=method, **params), ref)


def test_parity_holds_in_float32_to_float32_accuracy(lrp_kit):
    model = lrp_kit.build("cnn", seed=8, dtype=torch.float32)
    x, target = lrp_kit.batch(4, seed=9, dtype=torch.float32)
    ref = zennit_relevance(model, x, target, zc.EpsilonPlusFlat(epsilon=0.01))
    ours = xaicore.explain(model, x, target, method="lrp.epsilon_plus_flat", epsilon=0.01)
    assert ours.dtype == torch.float32
    assert float((ours - ref).abs().max()) / float(ref.abs().max()) < 1e-4


def test_torchvision_resnet18_matches_zennit_resnet_canonizer(lrp_kit):
    """torchvision resnet18 (random weights, non-trivial BatchNorm statistics), LRP-ε, against Zennit with its
    ``ResNetCanonizer`` (a Sum module for ``out += identity``, stabilised rule Norm, here made exact).

    Zennit's BatchNorm merge leaves each BatchNorm computing x/√(1 + eps_bn) instead of the identity, which moves its
    maps by ~0.3% on this net; both libraries therefore run on the model with BatchNorm folded exactly (by our
    canonizer, checked against the original model's output), where xaicore's own merging must give the same."""
    import copy

    from torchvision.models import resnet18
    from zennit.layer import Sum
    from zennit.torchvision import ResNetCanonizer
    from zennit.types import BatchNorm

    from xaicore.explain.lrp import merge_batch_norm

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = resnet18(weights=None, num_classes=7).double().eval()
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 2.0)
                    m.bias.uniform_(-0.2, 0.2)
        x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([1, 4])
    with merge_batch_norm(model, x[:1]) as n:
        folded = copy.deepcopy(model)
    assert n == 20
    torch.testing.assert_close(folded(x), model(x), rtol=0, atol=1e-10)
    exact = [(Activation, zr.Pass()), (Sum, zr.Norm(stabilizer=1e-30)), (AvgPool, zr.Norm(stabilizer=1e-30)),
             (BatchNorm, zr.Pass()), (AnyLinear, zr.Epsilon(epsilon=0.01))]
    ref = zennit_relevance(folded, x, target, LayerMapComposite(exact, canonizers=[ResNetCanonizer()]))
    ours = xaicore.explain(model, x, target, method="lrp.epsilon", epsilon=0.01)
    assert_parity(ours, ref)
