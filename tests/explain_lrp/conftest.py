"""Small models for the LRP tests, built here (not from the zoo): a CNN, VGG-style with BatchNorm, a ResNet of
torchvision BasicBlocks, and a DenseNet-style net with ``torch.cat``; each optionally bias-free."""

from __future__ import annotations

import types

import pytest
import torch
import torch.nn as nn
from torchvision.models.resnet import BasicBlock


def _seeded(build, seed: int, dtype: torch.dtype) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build()
        for m in model.modules():  # non-trivial BatchNorm statistics
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.3, 0.3)
    return model.to(dtype).eval()


def make_bias_free(model: nn.Module) -> nn.Module:
    """Zero every bias and BatchNorm shift (β = 0, running mean 0): the merged layers then have no bias either."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.zero_()
                m.bias.zero_()
            elif getattr(m, "bias", None) is not None:
                m.bias.zero_()
    return model


def tiny_cnn(bias: bool = True) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=1, bias=bias), nn.ReLU(),
        nn.Flatten(), nn.Linear(6 * 4 * 4, 12, bias=bias), nn.ReLU(), nn.Dropout(0.3), nn.Linear(12, 5, bias=bias))


def vgg_bn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 6, 3, padding=1, bias=False), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.AvgPool2d(2),
        nn.Flatten(), nn.Linear(6 * 2 * 2, 10), nn.BatchNorm1d(10), nn.ReLU(), nn.Linear(10, 5))


class SmallResNet(nn.Module):
    """Stem + two torchvision BasicBlocks (one with a strided 1×1 downsample) + global average pool."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        down = nn.Sequential(nn.Conv2d(4, 8, 1, stride=2, bias=False), nn.BatchNorm2d(8))
        self.layer1 = nn.Sequential(BasicBlock(4, 4), BasicBlock(4, 8, stride=2, downsample=down))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.relu(self.bn1(self.conv1(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class DenseLayer(nn.Module):
    """DenseNet's pre-activation BN-ReLU-Conv, concatenated onto its input."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(torch.relu(self.norm(x)))], 1)


def small_densenet() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        DenseLayer(4, 3), DenseLayer(7, 3), nn.BatchNorm2d(10), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(40, 5))


ARCHS = {"cnn": tiny_cnn, "vgg_bn": vgg_bn, "resnet": SmallResNet, "densenet": small_densenet}


def build(arch: str, seed: int = 0, dtype: torch.dtype = torch.float64, bias_free: bool = False) -> nn.Module:
    if arch == "cnn" and bias_free:
        return _seeded(lambda: tiny_cnn(bias=False), seed, dtype)
    model = _seeded(ARCHS[arch], seed, dtype)
    return make_bias_free(model) if bias_free else model


def batch(n: int = 4, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, target): n inputs in [0, 1]^(2×8×8) and targets 0..4."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, 8, 8, generator=g, dtype=torch.float64).to(dtype)
    return x, torch.arange(n) % 5


def two_layer_net(rng, n_in: int, hidden: int, n_out: int = 3):
    """x (n_in) → W1 x + b1 → ReLU → W2 h + b2, float64, weights N(0, 1) and biases 0.3·N(0, 1) of both signs
    drawn from ``rng``; returns the model and (W1, b1, W2, b2) as numpy arrays for the closed forms."""
    W1, b1 = rng.normal(size=(hidden, n_in)), rng.normal(size=hidden) * 0.3
    W2, b2 = rng.normal(size=(n_out, hidden)), rng.normal(size=n_out) * 0.3
    model = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Linear(hidden, n_out)).double().eval()
    with torch.no_grad():
        for m, W, b in ((model[0], W1, b1), (model[2], W2, b2)):
            m.weight.copy_(torch.from_numpy(W))
            m.bias.copy_(torch.from_numpy(b))
    return model, (W1, b1, W2, b2)


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_restored(model: nn.Module, state: dict[str, torch.Tensor], modules: list[nn.Module]) -> None:
    """Parameters and buffers bitwise equal, the same module objects, no hooks, no instance-level forward."""
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert now[k].dtype == v.dtype and torch.equal(now[k], v), f"{k} changed"
    assert list(model.modules()) == modules, "a module was swapped and not swapped back"
    for name, m in model.named_modules():
        for attr in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks"):
            assert len(getattr(m, attr)) == 0, f"{name or '<root>'} kept {attr}"
        assert "forward" not in vars(m), f"{name} kept a patched forward"
        assert all(p.grad is None for p in m.parameters(recurse=False))


@pytest.fixture(scope="session")
def lrp_kit() -> types.SimpleNamespace:
    return types.SimpleNamespace(build=build, batch=batch, model_state=model_state, assert_restored=assert_restored,
                                 make_bias_free=make_bias_free, two_layer_net=two_layer_net)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """These models are tiny: one thread is faster, and it does not fight the other jobs of a small shared machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
