"""The architectures the survey is run on. Layers carry names (``conv1``, ``fc2``, ``block1.conv2`` ...), which
the randomized controls and the archive's ``model`` coordinate use.

* ``cnn``, ``mlp``: the survey's small models.
* ``vgg_bn``: VGG-style blocks (Simonyan & Zisserman 2015) with BatchNorm (Ioffe & Szegedy 2015).
* ``resnet``: basic residual blocks (He et al. 2016) as torchvision's ``BasicBlock`` (same layers, names and
  forward): a skip connection ``out += identity``, a 1×1-conv shortcut where the block downsamples, and one
  in-place ``nn.ReLU`` module called twice per block.
* ``densenet``: DenseNet-style layers (Huang et al. 2017) whose outputs are concatenated (``torch.cat``) to their
  input along the channels, a 1×1-conv transition.

The conv models pool adaptively to 2×2 before the classifier: it keeps the coarse position digits need
(global pooling costs resnet/densenet 4-15 points of accuracy after a few epochs) and takes any image size.

All of them use ``nn.ReLU`` modules (never functional ReLU), so module-based rules see every non-linearity, and
all train on the 1,437 embedded digits in a few seconds per epoch on one CPU core.

BatchNorm layers own parameters (γ, β), so :func:`xaicore.models.parameter_layers` lists them and the
randomized controls re-initialize them like any other layer: ``reset_parameters`` sets γ = 1, β = 0 and the
running statistics to mean 0, variance 1 — the layer's (deterministic) default initialisation. In eval mode a
reset BatchNorm layer is the identity, which removes what training learnt there, as Adebayo et al. (2018) ask
of a re-initialized layer; the control of an untrained model's BatchNorm layer equals the model itself.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
import torch.nn as nn

from xaicore.errors import XaiCoreError


def small_cnn(input_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """conv-relu-pool x2, then two dense layers."""
    c, h, w = input_shape
    if h % 4 or w % 4:
        raise XaiCoreError(f"cnn needs height and width divisible by 4, got {h}x{w}")
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c, 16, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(16, 32, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(32 * (h // 4) * (w // 4), 128)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(128, n_classes)),
    ]))


def mlp(input_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """Three dense layers with ReLU, on the flattened image."""
    c, h, w = input_shape
    return nn.Sequential(OrderedDict([
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(c * h * w, 256)), ("relu1", nn.ReLU()),
        ("fc2", nn.Linear(256, 128)), ("relu2", nn.ReLU()),
        ("fc3", nn.Linear(128, n_classes)),
    ]))


def _min_size(arch: str, input_shape: tuple[int, int, int], side: int) -> None:
    if min(input_shape[1:]) < side:
        raise XaiCoreError(f"{arch} needs images of at least {side}x{side}, got {input_shape[1]}x{input_shape[2]}")


def vgg_bn(input_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """Two VGG blocks (conv-BN-ReLU ×2, max-pool; 16 then 32 channels), adaptive average pooling to 2×2, two
    dense layers. Layer ``convB_L`` is the L-th conv of block B, ``bnB_L`` / ``reluB_L`` follow it."""
    c = input_shape[0]
    _min_size("vgg_bn", input_shape, 4)
    layers: list[tuple[str, nn.Module]] = []
    for block, (c_in, c_out) in enumerate([(c, 16), (16, 32)], start=1):
        for i in (1, 2):
            layers += [(f"conv{block}_{i}", nn.Conv2d(c_in if i == 1 else c_out, c_out, 3, padding=1, bias=False)),
                       (f"bn{block}_{i}", nn.BatchNorm2d(c_out)), (f"relu{block}_{i}", nn.ReLU())]
        layers.append((f"pool{block}", nn.MaxPool2d(2)))
    layers += [("avgpool", nn.AdaptiveAvgPool2d(2)), ("flatten", nn.Flatten()),
               ("fc1", nn.Linear(32 * 4, 64)), ("relu_fc1", nn.ReLU()), ("fc2", nn.Linear(64, n_classes))]
    return nn.Sequential(OrderedDict(layers))


class BasicBlock(nn.Module):
    """He et al. 2016's basic residual block, relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), with 3×3
    bias-free convolutions. Its layers, their names and its forward are those of torchvision's ``BasicBlock``
    (the test suite checks both give the same numbers from the same weights), so the state dicts match; it lives
    here because importing torchvision costs every process, each Dask worker included, about 3 s."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torchvision's order of module calls (the shortcut after the main branch), which hooks observe
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += x if self.downsample is None else self.downsample(x)
        return self.relu(out)


def resnet(input_shape: tuple[int, int, int], n_classes: int) -> nn.Sequential:
    """A small ResNet: conv-BN-ReLU stem (16 channels), a downsampling ``BasicBlock`` (stride 2, 32 channels,
    1×1-conv + BN shortcut ``block1.downsample``), a plain ``BasicBlock``, average pooling to 2×2, ``fc``.

    The last block does not downsample, so the last Conv2d (Grad-CAM's default layer) is ``block2.conv2``."""
    c = input_shape[0]
    _min_size("resnet", input_shape, 2)
    shortcut = nn.Sequential(OrderedDict([("conv", nn.Conv2d(16, 32, 1, stride=2, bias=False)),
                                          ("bn", nn.BatchNorm2d(32))]))
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(c, 16, 3, padding=1, bias=False)), ("bn1", nn.BatchNorm2d(16)), ("relu", nn.ReLU()),
        ("block1", BasicBlock(16, 32, stride=2, downsample=shortcut)),
        ("block2", BasicBlock(32, 32)),
        ("avgpool", nn.AdaptiveAvgPool2d(2)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(32 * 4, n_classes)),
    ]))


class DenseLayer(nn.Module):
    """BN-ReLU-Conv(3×3) producing ``growth`` new channels, concatenated to the input: [x, H(x)]."""

    def __init__(self, c_in: int, growth: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.relu = nn.ReLU()
        self.conv = nn.Conv2d(c_in, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.relu(self.bn(x)))], dim=1)


def densenet(input_shape: tuple[int, int, int], n_classes: int, growth: int = 12) -> nn.Sequential:
    """A small DenseNet: conv stem (16 channels) and max-pool, two dense layers (16 → 28 → 40 channels), a
    transition (BN-ReLU-Conv 1×1 to 24 channels, 2×2 average pool), BN-ReLU, average pooling to 2×2, ``fc``."""
    c = input_shape[0]
    _min_size("densenet", input_shape, 4)
    c1, c2, c3 = 16, 16 + growth, 16 + 2 * growth
    transition = nn.Sequential(OrderedDict([
        ("bn", nn.BatchNorm2d(c3)), ("relu", nn.ReLU()), ("conv", nn.Conv2d(c3, 24, 1, bias=False)),
        ("pool", nn.AvgPool2d(2)),
    ]))
    return nn.Sequential(OrderedDict([
        ("conv0", nn.Conv2d(c, c1, 3, padding=1, bias=False)), ("pool0", nn.MaxPool2d(2)),
        ("dense1", DenseLayer(c1, growth)), ("dense2", DenseLayer(c2, growth)),
        ("transition", transition),
        ("bn_final", nn.BatchNorm2d(24)), ("relu_final", nn.ReLU()),
        ("avgpool", nn.AdaptiveAvgPool2d(2)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(24 * 4, n_classes)),
    ]))


ARCHS: dict[str, Callable[[tuple[int, int, int], int], nn.Module]] = {
    "cnn": small_cnn, "mlp": mlp, "vgg_bn": vgg_bn, "resnet": resnet, "densenet": densenet,
}


def build_model(arch: str, input_shape: tuple[int, int, int], n_classes: int) -> nn.Module:
    """A fresh, untrained model of the zoo (its init follows the global torch seed)."""
    if arch not in ARCHS:
        raise XaiCoreError(f"unknown model architecture {arch!r}; known: {', '.join(ARCHS)}")
    return ARCHS[arch](tuple(input_shape), int(n_classes))
