"""The engine's contract: batched == per-sample, float32 and float64, the model left exactly as it was (also when
the kernel raises midway), input-layer rules only on the input layer, picklable composites."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn as nn

import xaicore
from xaicore import XaiCoreError
from xaicore.explain.lrp import Composite, lrp, uniform
from xaicore.explain.lrp import rules as r

LRP_METHODS = [m for m in xaicore.methods() if m.startswith(("lrp.", "dtd."))]


@pytest.mark.parametrize("arch", ["vgg_bn", "resnet", "densenet"])
@pytest.mark.parametrize("method", LRP_METHODS)
def test_batched_equals_per_sample_and_model_is_restored(method, arch, lrp_kit):
    model = lrp_kit.build(arch, seed=30)
    model.train()  # the shell explains in eval mode and restores the flags
    x, target = lrp_kit.batch(3, seed=31)
    state, modules = lrp_kit.model_state(model), list(model.modules())
    batched = xaicore.explain(model, x, target, method=method)
    single = torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], method=method) for i in range(3)])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12 * max(1.0, float(batched.abs().max())))
    assert float(batched.abs().max()) > 0
    lrp_kit.assert_restored(model, state, modules)
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("method", ["lrp.epsilon", "lrp.epsilon_gamma_box", "dtd.w2"])
def test_float32_matches_float64(method, lrp_kit):
    m64 = lrp_kit.build("resnet", seed=32)
    m32 = lrp_kit.build("resnet", seed=32, dtype=torch.float32)
    x, target = lrp_kit.batch(3, seed=33)
    r64 = xaicore.explain(m64, x, target, method=method)
    r32 = xaicore.explain(m32, x.float(), target, method=method)
    assert r32.dtype == torch.float32
    assert float((r32.double() - r64).abs().max()) < 1e-4 * float(r64.abs().max())


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")


def test_model_restored_when_the_forward_raises_midway(lrp_kit):
    """The canonizer has swapped in merged layers and the hooks are attached when the forward raises."""
    model = lrp_kit.build("vgg_bn", seed=34)
    model.append(Boom())
    x, target = lrp_kit.batch(2)
    state, modules = lrp_kit.model_state(model), list(model.modules())
    calls = []
    model[0].register_forward_hook(lambda m, i, o: calls.append(1))  # a user hook: kept, and ours removed
    with pytest.raises(RuntimeError, match="boom"):
        xaicore.explain(model, x, target, method="lrp.epsilon_gamma_box")
    assert len(model[0]._forward_hooks) == 1
    model[0]._forward_hooks.clear()
    lrp_kit.assert_restored(model, state, modules)


def test_model_restored_when_target_is_out_of_range(lrp_kit):
    model = lrp_kit.build("resnet", seed=35)
    x, _ = lrp_kit.batch(2)
    state, modules = lrp_kit.model_state(model), list(model.modules())
    with pytest.raises(XaiCoreError, match="outside 0..4"):
        xaicore.explain(model, x, torch.tensor([0, 9]), method="lrp.epsilon_plus_flat")
    lrp_kit.assert_restored(model, state, modules)


class LateInput(nn.Module):
    """The first Linear in ``modules()`` order is applied second: flat/w²/zB cannot decompose onto x there."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(6, 3)
        self.stem = nn.Linear(4, 6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.stem(x)))


@pytest.mark.parametrize("method", ["dtd.w2", "dtd.zb", "lrp.epsilon_plus_flat"])
def test_input_layer_rules_refuse_a_hidden_layer(method, lrp_kit):
    model = LateInput().double().eval()
    state, modules = lrp_kit.model_state(model), list(model.modules())
    with pytest.raises(XaiCoreError, match="applies to the input layer only"):
        xaicore.explain(model, torch.rand(2, 4, dtype=torch.float64), torch.tensor([0, 1]), method=method)
    lrp_kit.assert_restored(model, state, modules)


def test_unsupported_parametric_layer_is_refused():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)).eval()
    with pytest.raises(XaiCoreError, match="no LRP rule for module '1' of type LayerNorm"):
        xaicore.explain(model, torch.rand(2, 4), torch.tensor([0, 1]), method="lrp.epsilon")


def test_composites_and_rules_pickle(lrp_kit):
    comp = Composite(dense=r.epsilon(0.1), conv=r.gamma(0.25), first=r.zb(torch.zeros(2, 1, 1), 1.0))
    back = pickle.loads(pickle.dumps(comp))
    model = lrp_kit.build("cnn", seed=36)
    x, target = lrp_kit.batch(2)
    torch.testing.assert_close(lrp(model, x, target, back), lrp(model, x, target, comp), rtol=0, atol=0)
    pickle.dumps(uniform(r.alpha_beta(3.0, 2.0)))


def test_input_gradient_is_left_alone(lrp_kit):
    model = lrp_kit.build("cnn", seed=37)
    x, target = lrp_kit.batch(2)
    x.requires_grad_(True)
    xaicore.explain(model, x, target, method="lrp.epsilon")
    assert x.grad is None
