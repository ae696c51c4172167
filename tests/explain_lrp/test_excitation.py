"""Excitation backprop (Zhang et al. 2016/2018) as a rule of the LRP engine: Zhang's marginal winning probability
computed by hand (numpy, float64), the identity with DTD z⁺ where no bias is positive, conservation where it is
provable, and the zoo (BatchNorm, residual additions, concatenations)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

import xaicore
from tests.zoo_models import seeded_zoo_model
from xaicore import XaiCoreError
from xaicore.explain import get_explainer
from xaicore.explain.lrp.excitation import excitation


def fx_of(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).gather(1, target[:, None])[:, 0]


def total(rel: torch.Tensor) -> torch.Tensor:
    return rel.flatten(1).sum(1)


def conserved_relevance(model: nn.Module, x: torch.Tensor, stabilizer: float, tol: float) -> torch.Tensor:
    """Excitation backprop of the predicted class, asserting f(x) > 0 and |ΣR − f(x)| / f(x) < ``tol``."""
    with torch.no_grad():
        target = model(x).argmax(1)
    fx = fx_of(model, x, target)
    assert float(fx.min()) > 0
    rel = xaicore.explain(model, x, target, method="excitation_backprop", stabilizer=stabilizer)
    assert float(((total(rel) - fx).abs() / fx).max()) < tol
    return rel


# --- closed form: Zhang et al.'s MWP by hand ---------------------------------------------------------------

def conditional(a: np.ndarray, W: np.ndarray) -> np.ndarray:
    """P(a_i|a_j) = Z_j (a_i w_ij)⁺ with Z_j = 1 / Σ_i (a_i w_ij)⁺, (out j, in i); 0 where Σ_i (a_i w_ij)⁺ = 0.

    For a_i ≥ 0, (a_i w_ij)⁺ = a_i w⁺_ij: Zhang et al.'s excitatory weights, no bias."""
    z = np.maximum(a[None, :] * W, 0)
    den = z.sum(1, keepdims=True)
    return np.divide(z, den, out=np.zeros_like(z), where=den > 0)


def mwp(x: np.ndarray, params: tuple, target: int) -> np.ndarray:
    """Marginal winning probabilities of the input units: P(a_i) = Σ_j P(a_i|a_j) P(a_j), from P = 1 at the target."""
    W1, b1, W2, _ = params
    h = np.maximum(W1 @ x + b1, 0)
    p2 = np.zeros(W2.shape[0])
    p2[target] = 1.0
    p1 = conditional(h, W2).T @ p2
    return conditional(x, W1).T @ p1


@pytest.fixture
def net(lrp_kit):
    """x (4) → W1 x + b1 → ReLU → W2 h + b2 (3 classes); biases of both signs (Zhang's rule ignores them)."""
    rng = np.random.default_rng(3)
    model, params = lrp_kit.two_layer_net(rng, 4, 6)
    return model, params, rng


@pytest.mark.parametrize("signed", [False, True], ids=["x>=0", "signed-x"])
def test_equals_zhangs_mwp_by_hand_times_f(net, signed):
    """R = f(x) · P with P Zhang's MWP; signed input takes (x_i w_ij)⁺ = x⁺w⁺ + x⁻w⁻ on the input layer."""
    model, params, rng = net
    x = rng.normal(size=(5, 4)) if signed else rng.uniform(0.05, 1.0, size=(5, 4))
    target = torch.tensor([0, 2, 1, 1, 0])
    ours = xaicore.explain(model, torch.from_numpy(x), target, method="excitation_backprop", stabilizer=0.0)
    fx = fx_of(model, torch.from_numpy(x), target).numpy()
    for n in range(5):
        np.testing.assert_allclose(ours[n].numpy(), fx[n] * mwp(x[n], params, int(target[n])), rtol=1e-12,
                                   atol=1e-14)
    assert signed == bool((torch.from_numpy(x) < 0).any())


def test_mwp_is_a_probability_distribution(net):
    """Zhang et al.: Σ_i P(a_i) = 1 and P ≥ 0 for x ≥ 0, where every unit that receives probability has an
    excitatory input (true here); so R / f(x) sums to 1."""
    model, params, rng = net
    x = rng.uniform(0.05, 1.0, size=(6, 4))
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    for n in range(6):
        p = mwp(x[n], params, int(target[n]))
        assert abs(p.sum() - 1.0) < 1e-12 and p.min() >= 0
    rel = xaicore.explain(model, torch.from_numpy(x), target, method="excitation_backprop", stabilizer=0.0)
    torch.testing.assert_close(total(rel) / fx_of(model, torch.from_numpy(x), target),
                               torch.ones(6, dtype=torch.float64), rtol=0, atol=1e-12)


def test_bias_is_ignored_unlike_dtd_zplus(net):
    """Zhang's Z_j has no bias; DTD z⁺ (survey eq. 13) puts b⁺ in its denominator, so the two differ when a bias is
    positive, and excitation backprop does not depend on the biases' values beyond which units are active."""
    model, _, rng = net
    x = torch.from_numpy(rng.uniform(0.05, 1.0, size=(4, 4)))
    target = torch.tensor([0, 1, 2, 0])
    assert bool((model[0].bias > 0).any())
    exc = xaicore.explain(model, x, target, method="excitation_backprop", stabilizer=0.0)
    zp = xaicore.explain(model, x, target, method="dtd.zplus", stabilizer=0.0)
    assert float((exc - zp).abs().max()) > 1e-3
    with torch.no_grad():  # a different top bias changes f(x) only: R / f(x) is the same MWP
        model[2].bias.add_(0.7)
    exc2 = xaicore.explain(model, x, target, method="excitation_backprop", stabilizer=0.0)
    torch.testing.assert_close(exc2 / total(exc2)[:, None], exc / total(exc)[:, None], rtol=1e-12, atol=1e-14)


# --- the engine's architectures (tests/explain_lrp/conftest.py) --------------------------------------------

ARCHS = ["cnn", "vgg_bn", "resnet", "densenet"]


@pytest.mark.parametrize("arch", ARCHS)
def test_equals_dtd_zplus_without_positive_biases(arch, lrp_kit):
    """With no positive (merged) bias, b⁺ = 0 and excitation backprop is the z⁺ rule — BatchNorm merged, residual
    additions and concatenations included."""
    model = lrp_kit.build(arch, seed=20, bias_free=True)
    x, target = lrp_kit.batch(4, seed=21)
    exc = xaicore.explain(model, x, target, method="excitation_backprop")
    zp = xaicore.explain(model, x, target, method="dtd.zplus")
    torch.testing.assert_close(exc, zp, rtol=0, atol=1e-13 * float(zp.abs().max()))
    assert float(exc.abs().max()) > 0


@pytest.mark.parametrize("stabilizer, tol", [(0.0, 1e-12), (1e-6, 1e-3)])
@pytest.mark.parametrize("arch", ["cnn", "vgg_bn", "densenet"])
def test_conserves_on_bias_free_relu_nets(arch, stabilizer, tol, lrp_kit):
    """Bias-free, x ≥ 0, f(x) > 0: every unit that receives relevance is active, y_j > 0, so Σ_i a_i w⁺_ij ≥ y_j > 0
    and each layer passes its relevance on whole — ΣR = f(x), exactly (ε = 0) or up to ε/z⁺ per layer (ε = 1e-6
    on these small untrained activations). BatchNorm (merged, or after a concatenation with zero shift), max- and
    average-pooling of ReLU outputs and ``torch.cat`` keep it."""
    model = lrp_kit.build(arch, seed=22, bias_free=True)
    rel = conserved_relevance(model, lrp_kit.batch(8, seed=23)[0], stabilizer, tol)
    assert float(rel.min()) >= 0  # all messages are non-negative shares of non-negative relevance


@pytest.mark.parametrize("stabilizer, tol", [(0.0, 1e-12), (1e-6, 1e-3)])
def test_conserves_through_residual_additions(stabilizer, tol, lrp_kit):
    """The sum ``out + identity`` is split in proportion to its summands (conservative). The one loss of z⁺-type
    rules on residual nets is a summand unit with only inhibitory inputs (Σ_i a_i w⁺_ij = 0, y_j < 0) that gets a
    (negative) share of the sum: its relevance has nowhere to go. With non-negative weights in the layers that end
    in an addition (conv2/bn2 and the downsample path), no such unit exists and ΣR = f(x)."""
    model = lrp_kit.build("resnet", seed=24, bias_free=True)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d) and (name.endswith("conv2") or "downsample" in name):
                m.weight.abs_()
    conserved_relevance(model, lrp_kit.batch(8, seed=25)[0], stabilizer, tol)


@pytest.mark.parametrize("arch", ARCHS)
def test_batched_equals_per_sample_and_model_is_restored(arch, lrp_kit):
    model = lrp_kit.build(arch, seed=26)
    state, modules = lrp_kit.model_state(model), list(model.modules())
    x, target = lrp_kit.batch(5, seed=27)
    batched = xaicore.explain(model, x, target, method="excitation_backprop")
    single = torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], method="excitation_backprop")
                        for i in range(5)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12 * float(single.abs().max()))
    lrp_kit.assert_restored(model, state, modules)


# --- the zoo ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", ["cnn", "mlp", "vgg_bn", "resnet", "densenet"])
def test_runs_on_the_zoo(arch, digit_batch, helpers):
    """Every zoo model (BatchNorm, residual blocks with a downsample path, DenseNet concatenations): finite,
    batched = per-sample, the model untouched. Where every Linear/Conv output reaches the logit through a ReLU (cnn,
    mlp, vgg_bn) and f(x) > 0, relevance is non-negative and at most f(x): the zoo's biases are ignored, so what
    reaches units active through their bias alone (background pixels) is lost."""
    model = seeded_zoo_model(arch, seed=1).eval()
    before = helpers.model_state(model)
    x, _ = digit_batch
    x = x[:4]
    with torch.no_grad():
        target = model(x).argmax(1)
    rel = xaicore.explain(model, x, target, method="excitation_backprop")
    assert rel.shape == x.shape and rel.dtype == x.dtype and bool(torch.isfinite(rel).all())
    assert float(rel.abs().max()) > 0
    single = torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], method="excitation_backprop")
                        for i in range(4)])
    torch.testing.assert_close(rel, single, rtol=1e-5, atol=1e-6 * float(single.abs().max()))
    helpers.assert_states_equal(before, helpers.model_state(model))
    helpers.assert_no_hooks(model)
    if arch in ("cnn", "mlp", "vgg_bn"):
        fx = fx_of(model, x, target)
        assert float(fx.min()) > 0
        assert float(rel.min()) >= 0
        assert bool((total(rel) <= fx * (1 + 1e-5)).all())


def test_registration_and_bad_stabilizer(net):
    ex = get_explainer("excitation_backprop")
    assert ex.family == "attribution" and "Zhang et al. 2016" in ex.paper
    assert dict(ex.defaults) == {"stabilizer": 1e-6}
    model, _, _ = net
    with pytest.raises(XaiCoreError, match="stabilizer must be >= 0"):
        xaicore.explain(model, torch.rand(2, 4, dtype=torch.float64), torch.tensor([0, 1]),
                        method="excitation_backprop", stabilizer=-1.0)
    assert excitation(0.0).stabilizer == 0.0
