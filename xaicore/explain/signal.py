"""Signal methods (survey §3.1.1, §5.4) and Grad-CAM: what the network detects, by a modified backward pass.

* ``deconvnet`` (Zeiler & Fergus 2014, §2.1): through every ReLU the signal R_l = ReLU(R_{l+1}) goes back —
  the rectification of the reconstruction, not the forward pass's mask.
* ``guided_backprop`` (Springenberg et al. 2015, eq. in Fig. 1): R_l = 1[x_l > 0] · ReLU(R_{l+1}), the gradient
  masked by the forward pass *and* by the sign of the signal coming back.
* ``gradcam`` (Selvaraju et al. 2017, eq. 1-2): the feature maps A^k of a conv layer weighted by the spatial
  mean of ∂f_c/∂A^k, summed and rectified, L = ReLU(Σ_k α_k A^k), then upsampled to the input.

The ReLU rule is installed with a :class:`torch.overrides.TorchFunctionMode` for the duration of the forward pass:
every ``nn.ReLU`` module (reused ones too, e.g. torchvision's ``BasicBlock``) and every functional ``F.relu``,
``torch.relu``, ``Tensor.relu`` (and their in-place ``_`` forms, which then return a new tensor) is replaced by an
autograd function with the modified backward. Nothing is attached to the model, so nothing can be left behind.
Other rectifiers (``clamp``, ``leaky_relu``, ``F.threshold``) keep their ordinary gradient.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from xaicore.engine import hooks, target_scores
from xaicore.errors import NotApplicable, XaiCoreError
from xaicore.explain.registry import register


class _DeconvReLU(torch.autograd.Function):
    """Forward: ReLU. Backward: ReLU of the incoming signal (Zeiler & Fergus 2014)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.clamp_min(0)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.clamp_min(0)


class _GuidedReLU(torch.autograd.Function):
    """Forward: ReLU. Backward: the ReLU's gradient mask times ReLU of the incoming signal (Springenberg et al.)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.clamp_min(0)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        return torch.ops.aten.threshold_backward(grad, out, 0).clamp_min_(0)  # ReLU's own backward, rectified


_RELUS = frozenset({F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_})


class ReLUBackwardOverride(TorchFunctionMode):
    """Within ``with``, every ReLU call runs ``rule`` (an autograd function with the ReLU as its forward)."""

    def __init__(self, rule: type[torch.autograd.Function]) -> None:
        super().__init__()
        self.rule = rule

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        if func in _RELUS:
            return self.rule.apply(args[0])
        return func(*args, **(kwargs or {}))


def modified_relu_gradient(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                           rule: type[torch.autograd.Function]) -> torch.Tensor:
    """∂f_target/∂x with every ReLU's backward replaced by ``rule``'s."""
    x = x.detach().requires_grad_(True)
    with ReLUBackwardOverride(rule):
        score = target_scores(model, x, target)
    (grad,) = torch.autograd.grad(score.sum(), x)
    return grad


@register("deconvnet", family="signal", paper="Zeiler & Fergus 2014, §2.1: backward ReLU = ReLU(signal)")
def deconvnet(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """DeConvNet: the target logit projected back with rectified signals at every ReLU."""
    return modified_relu_gradient(model, x, target, _DeconvReLU)


@register("guided_backprop", family="signal",
          paper="Springenberg et al. 2015, §3.4 and Fig. 1: backward ReLU = 1[x > 0] ReLU(signal)")
def guided_backprop(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Guided Backpropagation (survey §5.4): the gradient, with only positive signals passed through ReLUs."""
    return modified_relu_gradient(model, x, target, _GuidedReLU)


def gradcam_layer(model: nn.Module, layer: str | None) -> tuple[str, nn.Module]:
    """(name, module) of the layer Grad-CAM reads when ``layer`` is given (a qualified module name); for
    ``layer=None`` the candidates are every ``nn.Conv2d`` (see :func:`gradcam_map`)."""
    modules = dict(model.named_modules())
    if layer and layer not in modules and f"net.{layer}" in modules and "normalize" in modules:
        layer = f"net.{layer}"  # the network's own name behind the survey's normalization wrapper (Normalized)
    if layer is None or layer not in modules or not layer:
        convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
        if layer is None and convs:
            return convs[-1], modules[convs[-1]]
        if layer is None:
            raise NotApplicable(f"gradcam needs a convolutional layer and {type(model).__name__} has no nn.Conv2d; "
                                "pass layer='<module name>' of a module with a (B, K, h, w) output")
        raise XaiCoreError(f"gradcam: the model has no layer {layer!r}; its conv layers: "
                           f"{', '.join(convs) or 'none'} (any module with a (B, K, h, w) output works)")
    return layer, modules[layer]


def gradcam_map(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layer: str | None) -> torch.Tensor:
    """The layer-resolution Grad-CAM map ReLU(Σ_k α_k A^k), (B, 1, h, w), α_k = mean_{h,w} ∂f_c/∂A^k.

    ``layer=None``: the last ``nn.Conv2d`` in registration order (``model.named_modules()``) whose map on this
    input is larger than 1×1 — on a small input a deep network's last maps are 1×1 and the heatmap would be one
    colour (a torchvision ResNet-18 at 32 px: ``layer4`` is 1×1, so ``layer3.1.conv2``, 2×2, is read); the last
    conv layer if every map is 1×1."""
    if layer is None:
        gradcam_layer(model, None)  # NotApplicable without any conv layer
        candidates = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    else:
        candidates = [gradcam_layer(model, layer)]
    acts: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Any:
        return lambda _m, _i, out: acts.__setitem__(name, out)  # a module called twice: its last call

    with hooks([(m, keep(n)) for n, m in candidates]):
        score = target_scores(model, x.detach().requires_grad_(True), target)
    called = [n for n, _ in candidates if n in acts]
    if not called:
        raise XaiCoreError(f"gradcam: layer {candidates[-1][0]!r} is not called in the model's forward pass")
    name = called[-1]
    if layer is None:
        wide = [n for n in called if acts[n].ndim == 4 and acts[n].shape[2] * acts[n].shape[3] > 1]
        name = wide[-1] if wide else called[-1]
    a = acts[name]
    if not isinstance(a, torch.Tensor) or a.ndim != 4:
        shape = tuple(a.shape) if isinstance(a, torch.Tensor) else type(a).__name__
        raise XaiCoreError(f"gradcam: layer {name!r} outputs {shape}; Grad-CAM needs feature maps (B, K, h, w)")
    (grad,) = torch.autograd.grad(score.sum(), a)
    alpha = grad.mean(dim=(2, 3), keepdim=True)  # eq. 1: global-average-pooled gradients
    return (alpha * a).sum(1, keepdim=True).clamp_min(0)  # eq. 2


@register("gradcam", family="attribution", kinds=("image",),
          paper="Selvaraju et al. 2017, eq. (1)-(2): ReLU(sum_k alpha_k A^k), upsampled bilinearly")
def gradcam(model: nn.Module, x: torch.Tensor, target: torch.Tensor, *, layer: str | None = None) -> torch.Tensor:
    """Grad-CAM on ``layer`` (a module name; default: the last Conv2d with a map larger than 1×1), upsampled
    bilinearly (``align_corners=False``) to the input's H×W and broadcast over
    the input channels, so every channel of a pixel carries the pixel's value."""
    if x.ndim != 4:
        raise NotApplicable(f"gradcam needs images (B, C, H, W), got shape {tuple(x.shape)}")
    cam = gradcam_map(model, x, target, layer)
    cam = F.interpolate(cam, size=tuple(x.shape[2:]), mode="bilinear", align_corners=False)
    return cam.expand_as(x).contiguous()
