"""DeepLIFT-Rescale (Shrikumar et al. 2017): parity with ``captum.attr.DeepLift`` where Captum applies its rules,
summation-to-delta (eq. 1) Σ_i R_i = f(x) − f(x̄) in float64, batched = per-sample, and the model left as it was.

Captum (0.9) and xaicore differ on a max-pool that directly follows a ReLU (or precedes one): Captum's hook on the
lower module records the upper module's *ordinary* gradient, so its max-pool rule is lost there and its own
convergence delta is not 0 (asserted below). Parity is therefore checked on the zoo CNN with average pooling, and on
a CNN whose max-pool sits between a Conv and a BatchNorm, where Captum's max-pool rule is in effect.
"""

from __future__ import annotations

import sys
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from captum.attr import DeepLift
from torchvision.models.resnet import BasicBlock

import xaicore
from tests.zoo_models import seeded_zoo_model
from xaicore import XaiCoreError
from xaicore.explain import get_explainer

ATOL = 1e-5
EXACT = 1e-6  # summation-to-delta, relative, float64


def _seeded(build, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build()
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.2, 0.2)
    return model.double().eval()


def zoo(arch: str, seed: int = 3) -> nn.Module:
    return seeded_zoo_model(arch, seed=seed).double().eval()


def cnn_avgpool() -> nn.Module:
    """The zoo CNN (conv-ReLU-pool ×2, two dense layers) with its max-pools replaced by average pools."""
    model = zoo("cnn")
    model.pool1, model.pool2 = nn.AvgPool2d(2), nn.AvgPool2d(2)
    return model


def cnn_maxpool_bn() -> nn.Module:
    """Conv → MaxPool → BatchNorm → ReLU: a max-pool with no hooked neighbour, so Captum's max-pool rule applies."""
    return _seeded(lambda: nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, 6, 3, padding=1)), ("pool1", nn.MaxPool2d(2)), ("bn1", nn.BatchNorm2d(6)),
        ("relu1", nn.ReLU()), ("conv2", nn.Conv2d(6, 8, 3, padding=1)), ("pool2", nn.MaxPool2d(2)),
        ("bn2", nn.BatchNorm2d(8)), ("relu2", nn.ReLU()), ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(8 * 7 * 7, 32)), ("relu3", nn.ReLU()), ("fc2", nn.Linear(32, 10)),
    ])), seed=5)


def bn_model() -> nn.Module:
    """VGG-style conv-BN-ReLU with average pooling and a BatchNorm1d between the dense layers."""
    return _seeded(lambda: nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(4),
        nn.Flatten(), nn.Linear(8 * 7 * 7, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 10)), seed=6)


def activations_mlp() -> nn.Module:
    """One smooth or leaky nonlinearity per layer (Captum supports ELU, LeakyReLU, Sigmoid, Tanh, Softplus)."""
    return _seeded(lambda: nn.Sequential(
        nn.Flatten(), nn.Linear(784, 32), nn.ELU(), nn.Linear(32, 24), nn.LeakyReLU(0.1), nn.Linear(24, 20),
        nn.Tanh(), nn.Linear(20, 16), nn.Sigmoid(), nn.Linear(16, 12), nn.Softplus(), nn.Linear(12, 10)), seed=7)


class ResidualNet(nn.Module):
    """Stem + torchvision BasicBlocks (``out += identity``, one ReLU module used twice, a strided 1×1 downsample)
    + max-pool + average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2))
        down = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
        self.blocks = nn.Sequential(BasicBlock(4, 4), BasicBlock(4, 8, stride=2, downsample=down))
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


def overlapping_pools() -> nn.Module:
    """Overlapping max-pooling (an input can win several windows) and adaptive max-pooling, functional ReLU."""
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 3)
            self.fc = nn.Linear(6 * 9, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = torch.nn.functional.max_pool2d(torch.relu(self.conv1(x)), 3, stride=1, padding=1)
            x = torch.nn.functional.adaptive_max_pool2d(self.conv2(x).relu(), 3)
            return self.fc(x.flatten(1))
    return _seeded(Net, seed=8)


@pytest.fixture(scope="module")
def xb() -> tuple[torch.Tensor, torch.Tensor]:
    """Random inputs (no exact ties with the zero baseline), float64, (6, 1, 28, 28)."""
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 28, 28, generator=g, dtype=torch.float64), torch.tensor([0, 3, 5, 7, 9, 1])


def captum_deeplift(model: nn.Module, x: torch.Tensor, baseline: torch.Tensor, target: torch.Tensor,
                    delta: bool = False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Captum warns that it sets hooks
        return DeepLift(model).attribute(x.clone().requires_grad_(True), baselines=baseline, target=target,
                                         return_convergence_delta=delta)


def delta_f(model: nn.Module, x: torch.Tensor, ref: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return (model(x) - model(ref)).gather(1, target[:, None])[:, 0]


def assert_sums_to_delta(rel: torch.Tensor, delta: torch.Tensor) -> None:
    assert rel.dtype == torch.float64
    scale = float(delta.abs().max())
    assert scale > 1e-4  # a non-trivial difference to explain
    torch.testing.assert_close(rel.flatten(1).sum(1), delta, rtol=0, atol=EXACT * scale)


# --- parity with Captum ----------------------------------------------------------------------------------

PARITY = {"cnn_avgpool": cnn_avgpool, "cnn_maxpool_bn": cnn_maxpool_bn, "bn_model": bn_model,
          "mlp": lambda: zoo("mlp"), "densenet": lambda: zoo("densenet"), "activations_mlp": activations_mlp}


@pytest.mark.parametrize("baseline", ["zeros", "tensor"])
@pytest.mark.parametrize("name", list(PARITY))
def test_equals_captum_deeplift(name, baseline, xb):
    model = PARITY[name]()
    x, target = xb
    if baseline == "zeros":
        base, kw = torch.zeros_like(x), {}
    else:
        g = torch.Generator().manual_seed(1)
        base = torch.rand(x.shape, generator=g, dtype=torch.float64) * 0.5
        kw = {"baseline": base}
    ours = xaicore.explain(model, x, target, method="deeplift", **kw)
    ref = captum_deeplift(model, x, base, target).detach()
    scale = max(1.0, float(ref.abs().max()))
    torch.testing.assert_close(ours, ref, rtol=0, atol=ATOL * scale)
    assert float(ref.abs().max()) > 0
    assert_sums_to_delta(ours, delta_f(model, x, base, target))


def test_captum_loses_its_maxpool_rule_after_a_relu(xb, monkeypatch):
    """On conv → ReLU → MaxPool (the zoo CNN) Captum's result is the Rescale rule with the max-pool's *ordinary*
    gradient, which breaks summation-to-delta (Captum's own convergence delta); xaicore's max-pool rule keeps it."""
    model = zoo("cnn")
    x, target = xb
    zeros = torch.zeros_like(x)
    ref, captum_delta = captum_deeplift(model, x, zeros, target, delta=True)
    ref = ref.detach()
    delta = delta_f(model, x, zeros, target)
    assert float((captum_delta.abs() / delta.abs()).max()) > 1e-3
    ours = xaicore.explain(model, x, target, method="deeplift")
    assert_sums_to_delta(ours, delta)
    assert float((ours - ref).abs().max()) > 1e-3 * float(ref.abs().max())
    # Captum = xaicore with the winner-take-all gradient through the max-pools
    dl = sys.modules["xaicore.explain.deeplift"]

    def ordinary(ctx, grad):
        x2, _, idx = ctx.saved_tensors
        return dl._unpool(grad, idx, x2), None, None

    monkeypatch.setattr(dl._MaxPoolRescale, "backward", staticmethod(ordinary))
    torch.testing.assert_close(xaicore.explain(model, x, target, method="deeplift"), ref, rtol=0,
                               atol=ATOL * max(1.0, float(ref.abs().max())))


# --- summation-to-delta ------------------------------------------------------------------------------------

SUM_TO_DELTA = {"cnn": lambda: zoo("cnn"), "vgg_bn": lambda: zoo("vgg_bn"), "resnet": lambda: zoo("resnet"),
                "densenet": lambda: zoo("densenet"), "residual_blocks": lambda: _seeded(ResidualNet, seed=9),
                "overlapping_pools": overlapping_pools, "activations_mlp": activations_mlp}


@pytest.mark.parametrize("baseline", [0.0, 0.3, "tensor"])
@pytest.mark.parametrize("name", list(SUM_TO_DELTA))
def test_summation_to_delta(name, baseline, xb, digit_batch):
    """Σ_i R_i = f(x) − f(x̄) (eq. 1) through ReLU, max-pooling (overlapping and adaptive too), average pooling,
    BatchNorm, residual additions (torchvision's BasicBlock) and DenseNet concatenations, in float64."""
    model = SUM_TO_DELTA[name]()
    digits, _ = digit_batch
    x = torch.cat([xb[0][:3], digits[:3].double()])  # random inputs, and digits with exact ties in the background
    target = xb[1]
    if baseline == "tensor":
        base = torch.rand(x.shape[1:], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
        ref = base.expand_as(x)
    else:
        base, ref = baseline, torch.full_like(x, baseline)
    rel = xaicore.explain(model, x, target, method="deeplift", baseline=base)
    assert_sums_to_delta(rel, delta_f(model, x, ref, target))


def test_baseline_equal_to_the_input_gives_zero(xb):
    """x = x̄: every Δ is 0, every multiplier falls back to a derivative, and R = 0 = f(x) − f(x̄); partly equal
    inputs (half the image) still sum to delta."""
    model = zoo("cnn")
    x, target = xb
    assert float(xaicore.explain(model, x, target, method="deeplift", baseline=x).abs().max()) == 0.0
    half = x.clone()
    half[..., :14] = 0.0  # x̄ = x on the right half
    rel = xaicore.explain(model, x, target, method="deeplift", baseline=half)
    assert float(rel[..., 14:].abs().max()) == 0.0
    assert_sums_to_delta(rel, delta_f(model, x, half, target))


# --- batches and the model ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["cnn", "resnet", "densenet"])
def test_batched_equals_per_sample(name, xb):
    """Against a reference without ties, batched equals per sample to float64 rounding. A constant reference
    (0.2 everywhere) makes the reference half's max-pool windows near-ties, which the last bits of a conv decide
    and another batch composition may decide otherwise (measured under XAICORE_LAST_BIT_NOISE: 2 % of the pixels
    of one sample moved). Then the relevance moves between the tied inputs, and only each sample's sum, f(x) − f(x̄),
    stays fixed."""
    model = SUM_TO_DELTA[name]()
    x, target = xb
    g = torch.Generator().manual_seed(1)
    reference = torch.rand(x.shape[1:], generator=g, dtype=x.dtype) * 0.5
    batched = xaicore.explain(model, x, target, method="deeplift", baseline=reference)
    single = torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], method="deeplift", baseline=reference)
                        for i in range(x.shape[0])])
    torch.testing.assert_close(batched, single, rtol=0, atol=1e-12 * float(single.abs().max()))
    flat = [xaicore.explain(model, x, target, method="deeplift", baseline=0.2)]
    flat.append(torch.cat([xaicore.explain(model, x[i:i + 1], target[i:i + 1], method="deeplift", baseline=0.2)
                           for i in range(x.shape[0])]))
    sums = [f.flatten(1).sum(1) for f in flat]
    torch.testing.assert_close(sums[0], sums[1], rtol=0, atol=1e-12 * float(sums[1].abs().max()))


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_model_is_left_as_it_was(mode, xb, helpers):
    """Parameters and BatchNorm statistics bitwise, training flags, no hooks, no ``.grad``, no TorchFunctionMode left
    — also when the forward raises (a target out of range)."""
    model = SUM_TO_DELTA["resnet"]().train(mode == "train")
    flags = {name: m.training for name, m in model.named_modules()}
    before = helpers.model_state(model)
    x, target = xb
    out = xaicore.explain(model, x, target, method="deeplift")
    with pytest.raises(XaiCoreError, match="target holds class indices outside"):
        xaicore.explain(model, x, target + 10, method="deeplift")
    helpers.assert_states_equal(before, helpers.model_state(model))
    helpers.assert_no_hooks(model)
    assert {name: m.training for name, m in model.named_modules()} == flags
    assert all(p.grad is None for p in model.parameters())
    assert not torch._C._is_torch_function_mode_enabled()
    torch.testing.assert_close(out, xaicore.explain(model.eval(), x, target, method="deeplift"), rtol=0, atol=0)


def test_bad_parameters_are_refused(xb):
    model = zoo("mlp")
    x, target = xb
    with pytest.raises(XaiCoreError, match=r"baseline shape \(3, 28, 28\)"):
        xaicore.explain(model, x, target, method="deeplift", baseline=torch.zeros(3, 28, 28, dtype=torch.float64))
    with pytest.raises(XaiCoreError, match="eps must be >= 0"):
        xaicore.explain(model, x, target, method="deeplift", eps=-1.0)
    ex = get_explainer("deeplift")
    assert ex.family == "attribution" and "Shrikumar et al. 2017" in ex.paper
    assert dict(ex.defaults) == {"baseline": 0.0, "eps": 1e-10}
