"""LRP on VGG-style nets with BatchNorm, ResNet basic blocks (torchvision's, with ``out += identity`` and a ReLU
module used twice) and DenseNet-style ``torch.cat``: conservation where theory proves it, LRP-0 = Gradient×Input,
the BatchNorm canonizer's exactness and reversibility, and torchvision's resnet18."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torchvision.models import resnet18

import xaicore
from xaicore.explain.lrp import Composite, lrp, merge_batch_norm, uniform
from xaicore.explain.lrp import rules as r

ARCHS = ["vgg_bn", "resnet", "densenet", "cnn"]


def fx_of(model, x, target):
    with torch.no_grad():
        return model(x).gather(1, target[:, None])[:, 0]


def total(rel):
    return rel.flatten(1).sum(1)


@pytest.mark.parametrize("arch", ARCHS)
def test_lrp_z_conserves_and_equals_gradient_x_input_when_bias_free(arch, lrp_kit):
    """Bias-free ReLU net (BatchNorm with zero mean and β = 0, merged by the canonizer into bias-free layers):
    LRP-0 is conservative, ΣR = f(x) (survey eq. 6), and equals Gradient×Input."""
    model = lrp_kit.build(arch, seed=10, bias_free=True)
    x, target = lrp_kit.batch(5, seed=11)
    rel = xaicore.explain(model, x, target, method="lrp.z")
    fx = fx_of(model, x, target)
    assert float(fx.abs().min()) > 1e-4
    assert float(((total(rel) - fx).abs() / fx.abs()).max()) < 1e-6
    gi = xaicore.explain(model, x, target, method="gradient_x_input")
    torch.testing.assert_close(rel, gi, rtol=0, atol=1e-4 * float(gi.abs().max()))


@pytest.mark.parametrize("arch", ARCHS)
def test_lrp_epsilon_absorbs_little_with_small_epsilon(arch, lrp_kit):
    model = lrp_kit.build(arch, seed=12, bias_free=True)
    x, target = lrp_kit.batch(5, seed=13)
    fx = fx_of(model, x, target)
    rel = xaicore.explain(model, x, target, method="lrp.epsilon", epsilon=1e-9)
    assert float(((total(rel) - fx).abs() / fx.abs()).max()) < 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_lrp_epsilon_tends_to_gradient_x_input_with_biases(arch, lrp_kit):
    """ε → 0 gives LRP-0, which equals Gradient×Input on a ReLU net also with biases (they absorb relevance but do
    not change the messages' ratio to the gradient) — here through ``out += identity`` and ``torch.cat``."""
    model = lrp_kit.build(arch, seed=24)
    x, target = lrp_kit.batch(3, seed=25)
    rel = xaicore.explain(model, x, target, method="lrp.epsilon", epsilon=1e-13)
    gi = xaicore.explain(model, x, target, method="gradient_x_input")
    torch.testing.assert_close(rel, gi, rtol=0, atol=1e-8 * float(gi.abs().max()))


@pytest.mark.parametrize("arch", ["vgg_bn", "cnn"])
def test_zplus_is_conservative_and_positive_without_positive_biases(arch, lrp_kit):
    """DTD z⁺ (Montavon et al. 2017): for x ≥ 0, biases ≤ 0 and f(x) > 0 every neuron with R_j ≠ 0 has
    Σ_i x_i w⁺_ij ≥ y_j > 0, so relevance is conserved exactly and is non-negative (consistency, survey §4.3)."""
    model = lrp_kit.build(arch, seed=15)
    # negative biases and BatchNorm shifts (running mean 0): merged biases ≤ 0; seeded here, not by test order
    with torch.no_grad(), torch.random.fork_rng():
        torch.manual_seed(16)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.bias.uniform_(-0.02, -0.001)
            elif isinstance(m, nn.Linear | nn.Conv2d) and m.bias is not None:
                m.bias.uniform_(-1e-4, -1e-6)
    x, _ = lrp_kit.batch(8, seed=15)
    with torch.no_grad():
        out = model(x)
    target = out.argmax(1)
    fx = out.gather(1, target[:, None])[:, 0]
    keep = fx > 0
    x, target, fx = x[keep], target[keep], fx[keep]
    assert x.shape[0] >= 3
    rel = xaicore.explain(model, x, target, method="dtd.zplus", stabilizer=0.0)
    assert float(((total(rel) - fx).abs() / fx).max()) < 1e-10
    assert float(rel.min()) >= 0
    # positive biases take a share (b⁺ is in the denominator): R stays ≥ 0 and 0 ≤ ΣR < f(x)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear | nn.Conv2d | nn.modules.batchnorm._BatchNorm) and m.bias is not None:
                m.bias.abs_()
    fx = fx_of(model, x, target)
    keep = fx > 0
    assert int(keep.sum()) >= 2
    rel = xaicore.explain(model, x[keep], target[keep], method="dtd.zplus", stabilizer=0.0)
    assert float(rel.min()) >= 0
    assert bool((total(rel) < fx[keep]).all())


def test_alpha1_beta0_equals_zplus(lrp_kit):
    """Conservation of αβ with β > 0 holds per neuron only where both signs of contribution occur (Bach et al.
    2015, eq. 60; the closed-form tests cover it); α = 1, β = 0 is z⁺."""
    model = lrp_kit.build("cnn", seed=16)
    x, target = lrp_kit.batch(4, seed=17)
    a = xaicore.explain(model, x, target, method="lrp.alpha_beta", alpha=1.0, beta=0.0)
    torch.testing.assert_close(a, xaicore.explain(model, x, target, method="dtd.zplus"), rtol=0, atol=1e-14)


@pytest.mark.parametrize("arch", ["vgg_bn", "resnet", "densenet"])
@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.epsilon_gamma_box", "dtd.zplus", "lrp.alpha_beta"])
def test_batch_norm_canonizer_equals_hand_merged_model(arch, method, lrp_kit):
    """The canonizer's merged model computes the same function, and every rule gives what it gives on a copy of the
    model with BatchNorm folded by hand and removed."""
    model = lrp_kit.build(arch, seed=18)
    x, target = lrp_kit.batch(3, seed=19)
    state = lrp_kit.model_state(model)
    modules = list(model.modules())
    with merge_batch_norm(model, x[:1]) as n_merged:
        merged = __import__("copy").deepcopy(model)
        torch.testing.assert_close(merged(x), lrp_kit.build(arch, seed=18)(x), rtol=0, atol=1e-12)
    assert n_merged == {"vgg_bn": 4, "resnet": 6, "densenet": 1}[arch]
    lrp_kit.assert_restored(model, state, modules)
    ours = xaicore.explain(model, x, target, method=method)
    torch.testing.assert_close(ours, xaicore.explain(merged, x, target, method=method), rtol=0, atol=1e-12)


def test_residual_split_is_conservative_per_block(lrp_kit):
    """In each BasicBlock, the relevance entering the block equals what leaves it (bias-free, LRP-0):
    Σ R(block input) = Σ R(block output), the addition's split being proportional and exact."""
    model = lrp_kit.build("resnet", seed=20, bias_free=True)
    x, target = lrp_kit.batch(3, seed=21)
    seen = {}

    def grab(name):
        def hook(m, inputs, out):
            if not out.requires_grad:  # the canonizer's tracing pass
                return
            inputs[0].retain_grad()
            out.retain_grad()
            seen[name] = (inputs[0], out)
        return hook

    handles = [b.register_forward_hook(grab(i)) for i, b in enumerate(model.layer1)]
    try:
        with merge_batch_norm(model, x[:1]):
            xx = x.clone().requires_grad_(True)
            score = model(xx).gather(1, target[:, None]).sum()
            score.backward()
    finally:
        for h in handles:
            h.remove()
    for i, (inp, out) in seen.items():
        r_in, r_out = total(inp.detach() * inp.grad), total(out.detach() * out.grad)
        torch.testing.assert_close(r_in, r_out, rtol=1e-9, atol=1e-12), i


@pytest.fixture
def tv_resnet():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = resnet18(weights=None, num_classes=7)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    return model.eval()


def test_torchvision_resnet18_runs_finite_and_is_restored(tv_resnet, lrp_kit):
    model = tv_resnet
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.bias.uniform_(-0.2, 0.2)
    x = torch.rand(2, 3, 32, 32)
    target = torch.tensor([1, 5])
    state, modules = lrp_kit.model_state(model), list(model.modules())
    forwards = {id(m): type(m).forward for m in modules}
    for method in ("lrp.epsilon", "lrp.epsilon_gamma_box", "lrp.epsilon_plus_flat"):
        rel = xaicore.explain(model, x, target, method=method)
        assert rel.shape == x.shape and bool(torch.isfinite(rel).all()) and float(rel.abs().sum()) > 0
        lrp_kit.assert_restored(model, state, modules)
        assert all(type(m).forward is forwards[id(m)] for m in model.modules())


def test_torchvision_resnet18_lrp_z_conserves_when_bias_free(tv_resnet, lrp_kit):
    model = tv_resnet.double()
    with torch.no_grad():
        model.fc.bias.zero_()  # BatchNorm: running mean 0 and β = 0 from torchvision's init
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    target = torch.tensor([0, 3])
    rel = xaicore.explain(model, x, target, method="lrp.z")
    fx = fx_of(model, x, target)
    assert float(((total(rel) - fx).abs() / fx.abs()).max()) < 1e-6


def test_composites_accept_a_hand_built_composite(lrp_kit):
    model = lrp_kit.build("resnet", seed=22)
    x, target = lrp_kit.batch(2, seed=23)
    comp = Composite(dense=r.epsilon(0.1), conv=r.gamma(0.1), first=r.flat())
    rel = lrp(model, x, target, comp)
    assert bool(torch.isfinite(rel).all())
    torch.testing.assert_close(lrp(model, x, target, uniform(r.z_rule())),
                               xaicore.explain(model, x, target, method="gradient_x_input"), rtol=0, atol=1e-12)


class _SiLU(nn.Module):  # a custom leaf module: its gradient is no relevance rule
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


@pytest.mark.parametrize("layer", [nn.GELU(), nn.Sigmoid(), _SiLU(), nn.LayerNorm([4, 6, 6]), nn.ReLU6()])
@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.epsilon_plus", "dtd.zplus", "excitation_backprop"])
def test_a_layer_no_rule_covers_is_not_applicable_naming_its_type(layer, method):
    """Not a heatmap from the plain gradient through it (not conservative, not LRP): NotApplicable, which the
    pipeline records per model and method."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), layer, nn.Flatten(), nn.Linear(144, 3)).eval()
    with pytest.raises(xaicore.errors.NotApplicable, match=rf"module '1' of type {type(layer).__name__}"):
        xaicore.explain(model, torch.rand(2, 1, 6, 6), torch.tensor([0, 1]), method)
    relu = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(144, 3)).eval()
    assert torch.isfinite(xaicore.explain(relu, torch.rand(2, 1, 6, 6), torch.tensor([0, 1]), method)).all()
