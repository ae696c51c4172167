"""DeConvNet (Zeiler & Fergus 2014) and Guided Backprop (Springenberg et al. 2015; survey §5.4): closed forms
on a one-hidden-layer net, Captum parity on the zoo, functional ReLUs, and the model left untouched."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from captum.attr import Deconvolution, GuidedBackprop

import xaicore
from tests.explain_signal.conftest import assert_close, zoo_model
from xaicore.explain.signal import ReLUBackwardOverride, _GuidedReLU

CAPTUM = {"deconvnet": Deconvolution, "guided_backprop": GuidedBackprop}


@pytest.mark.parametrize("method", ["deconvnet", "guided_backprop"])
def test_equals_captum_on_the_zoo(method, any_zoo_model, batch64):
    x, target = batch64
    ours = xaicore.explain(any_zoo_model, x, target, method=method)
    with pytest.warns(UserWarning):  # Captum warns that it sets hooks
        ref = CAPTUM[method](any_zoo_model).attribute(x.clone().requires_grad_(True), target=target)
    assert_close(ours, ref)
    assert not torch.equal(ours, xaicore.explain(any_zoo_model, x, target, method="gradient"))


def test_closed_form_on_one_hidden_layer():
    """f(x) = w2 · ReLU(W1 x): deconvnet = W1ᵀ ReLU(w2), guided = W1ᵀ (1[W1 x > 0] ReLU(w2)), gradient = W1ᵀ
    (1[W1 x > 0] w2)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fc1, fc2 = nn.Linear(6, 9, bias=False).double(), nn.Linear(9, 2, bias=False).double()
        x = torch.randn(5, 6, dtype=torch.float64)
    model = nn.Sequential(fc1, nn.ReLU(), fc2)
    target = torch.tensor([0, 1, 1, 0, 1])
    w1, w2 = fc1.weight.detach(), fc2.weight.detach()[target]  # (9, 6), (B, 9)
    mask = (x @ w1.T > 0).double()
    expect = {"deconvnet": w2.clamp_min(0) @ w1, "guided_backprop": (mask * w2.clamp_min(0)) @ w1,
              "gradient": (mask * w2) @ w1}
    for method, ref in expect.items():
        torch.testing.assert_close(xaicore.explain(model, x, target, method=method), ref, rtol=0, atol=1e-14)


class _FunctionalReLUs(nn.Module):
    """The same net as ``_ModuleReLUs`` written with F.relu, torch.relu, Tensor.relu_ and F.relu(inplace)."""

    def __init__(self, ref: nn.Sequential) -> None:
        super().__init__()
        self.layers = nn.ModuleList([m for m in ref if not isinstance(m, nn.ReLU)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fc1, fc2, fc3, fc4, fc5 = self.layers
        h = F.relu(fc1(x))
        h = torch.relu(fc2(h))
        h = fc3(h).relu_()
        h = F.relu(fc4(h), inplace=True)
        return fc5(h)


@pytest.mark.parametrize("method", ["deconvnet", "guided_backprop"])
def test_functional_relus_are_modified_like_modules(method):
    with torch.random.fork_rng():
        torch.manual_seed(1)
        dims = [8, 16, 16, 16, 16, 3]
        parts: list[nn.Module] = []
        for i in range(5):
            parts += [nn.Linear(dims[i], dims[i + 1]).double(), nn.ReLU(inplace=i % 2 == 0)]
        modules = nn.Sequential(*parts[:-1])
        x = torch.randn(6, 8, dtype=torch.float64)
    target = torch.tensor([0, 1, 2, 0, 1, 2])
    ref = xaicore.explain(modules, x, target, method=method)
    torch.testing.assert_close(xaicore.explain(_FunctionalReLUs(modules), x, target, method=method), ref,
                               rtol=0, atol=0)


def test_reused_relu_module_is_modified_at_every_call():
    """torchvision's BasicBlock calls one nn.ReLU twice; both calls must pass only positive signals back."""
    model = zoo_model("resnet")
    x = torch.rand(2, 1, 28, 28, dtype=torch.float64)
    grads: list[torch.Tensor] = []

    def keep_input_grad(_module, inputs, _out):
        inputs[0].register_hook(grads.append)

    handle = model.block2.relu.register_forward_hook(keep_input_grad)
    try:
        xaicore.explain(model, x, torch.tensor([1, 2]), method="guided_backprop")
        assert len(grads) == 2 and all(bool((g >= 0).all()) and float(g.max()) > 0 for g in grads)
        grads.clear()
        xaicore.explain(model, x, torch.tensor([1, 2]), method="gradient")
        assert len(grads) == 2 and all(float(g.min()) < 0 for g in grads)
    finally:
        handle.remove()


def test_override_ends_with_the_forward_pass_even_on_error():
    class Boom(nn.Module):
        def forward(self, x):
            torch.relu(x)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        xaicore.explain(Boom(), torch.rand(2, 3), torch.tensor([0, 1]), method="guided_backprop")
    x = torch.tensor([-1.0, 2.0], requires_grad=True)
    (grad,) = torch.autograd.grad(torch.relu(x).sum() * -1, x)  # an ordinary ReLU again
    assert grad.tolist() == [0.0, -1.0]


def test_override_mode_passes_other_functions_through():
    x = torch.tensor([-1.0, 0.5, 2.0], dtype=torch.float64, requires_grad=True)
    with ReLUBackwardOverride(_GuidedReLU):
        y = (torch.relu(x) * torch.tensor([1.0, -1.0, 3.0], dtype=torch.float64)).sum() + x.sum() * 0
    (grad,) = torch.autograd.grad(y, x)
    assert grad.tolist() == [0.0, 0.0, 3.0]
