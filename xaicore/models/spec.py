"""A researcher's own network: how to build it (:class:`ModelSpec`), its input normalization as the first module
(:class:`Normalized`), and its weights from a local file.

``model.source`` in params.yaml:

* ``zoo``: an architecture of :mod:`xaicore.models.zoo` (``model.arch: cnn``);
* ``torchvision``: a ``torchvision.models`` architecture by name (``model.arch: resnet18``), built with
  ``weights=None`` and ``num_classes`` = the dataset's classes, so nothing is downloaded;
* ``file``: ``model.arch: package.module:function`` or ``path/to/file.py:function``, a function returning an
  ``nn.Module``, called with ``model.kwargs``.

With ``model.normalize: {mean: [...], std: [...]}`` the built network is wrapped as ``Normalized(Normalize, net)``:
the model takes pixels in [0, 1] and normalizes them itself, so every heatmap is on the pixel grid and the
perturbation metrics perturb pixels. The LRP family explains ``net`` on the normalized input and carries its
relevance to the pixels unchanged (an element-wise map is one-to-one; :func:`split_normalization`). The
wrapper's layer names are the network's own (``layer4``, ``fc``): the randomized controls address them without
the ``net.`` prefix.

Weights (``model.weights``) are a ``state_dict`` file, loaded with ``weights_only=True``; a checkpoint dict with
a ``state_dict`` or ``model`` entry, and DataParallel's ``module.`` prefixes, are accepted.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from xaicore._weights import load_tensors
from xaicore.errors import XaiCoreError
from xaicore.models.zoo import ARCHS, build_model

#: model.source: how :class:`ModelSpec` builds the network
SOURCES = ("zoo", "torchvision", "file")

_BUILDER = re.compile(r"^[\w./\\-]+:[A-Za-z_]\w*$")


class Normalize(nn.Module):
    """(x − mean) / std per channel: the preprocessing of a network trained on normalized images."""

    def __init__(self, mean: list[float] | tuple[float, ...], std: list[float] | tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Normalized(nn.Module):
    """``net(normalize(x))``: a network on pixels in [0, 1] that normalizes its input itself."""

    def __init__(self, normalize: Normalize, net: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


def split_normalization(model: nn.Module) -> tuple[Normalize | None, nn.Module]:
    """``(normalize, net)`` of a :class:`Normalized` model, ``(None, model)`` of any other."""
    if isinstance(model, Normalized):
        return model.normalize, model.net
    return None, model


def _import_builder(arch: str) -> Callable[..., nn.Module]:
    target, _, func = arch.rpartition(":")
    try:
        if target.endswith(".py"):
            path = Path(target).resolve()
            if not path.is_file():
                raise XaiCoreError(f"model.arch {arch!r}: {path} is not a file")
            name = f"xaicore_user_model_{abs(hash(str(path)))}"
            module = sys.modules.get(name)
            if module is None:
                spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
                sys.modules[name] = module
                spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            if str(Path.cwd()) not in sys.path:
                sys.path.insert(0, str(Path.cwd()))
            module = importlib.import_module(target)
    except XaiCoreError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever the user's module raises on import: one line
        raise XaiCoreError(f"model.arch {arch!r}: cannot import {target} ({type(e).__name__}: {e})") from None
    fn = getattr(module, func, None)
    if not callable(fn):
        raise XaiCoreError(f"model.arch {arch!r}: {target} has no function {func!r}")
    return fn


def torchvision_archs() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(torchvision.models))


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What to build: ``source`` (zoo | torchvision | file), ``arch``, the builder's ``kwargs``, and the input
    normalization (``mean``/``std`` per channel, or none)."""

    source: str = "zoo"
    arch: str = "cnn"
    kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def check(self) -> None:
        """One clear error for a source, architecture or normalization that cannot be built."""
        if self.source not in SOURCES:
            raise XaiCoreError(f"model.source {self.source!r} is unknown; known: {', '.join(SOURCES)}")
        if self.source == "zoo" and self.arch not in ARCHS:
            raise XaiCoreError(f"model.arch {self.arch!r} is not a zoo architecture ({', '.join(ARCHS)}); for "
                               "torchvision's set model.source: torchvision")
        if self.source == "torchvision" and self.arch not in torchvision_archs():
            raise XaiCoreError(f"model.arch {self.arch!r} is not a torchvision.models architecture (e.g. "
                               "resnet18, vgg16_bn, densenet121)")
        if self.source == "file" and not _BUILDER.match(self.arch):
            raise XaiCoreError(f"model.arch {self.arch!r}: model.source file needs module:function or "
                               "path/to/file.py:function")
        if (self.mean is None) != (self.std is None) or (
                self.mean is not None and (len(self.mean) != len(self.std) or not self.mean)):  # type: ignore[arg-type]
            raise XaiCoreError("model.normalize needs mean and std lists of one value per channel")
        if self.std is not None and min(self.std) <= 0:
            raise XaiCoreError(f"model.normalize.std must be > 0, got {list(self.std)}")

    def build_net(self, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        """The bare network, freshly initialised (from the global torch seed)."""
        if self.source == "zoo":
            return build_model(self.arch, tuple(input_shape), n_classes)  # type: ignore[arg-type]
        if self.source == "torchvision":
            import torchvision

            self.check()
            return torchvision.models.get_model(self.arch, weights=None, num_classes=int(n_classes), **self.kwargs)
        net = _import_builder(self.arch)(**self.kwargs)
        if not isinstance(net, nn.Module):
            raise XaiCoreError(f"model.arch {self.arch!r} returned {type(net).__name__}, not a torch nn.Module")
        return net

    def wrap(self, net: nn.Module) -> nn.Module:
        return net if self.mean is None else Normalized(Normalize(self.mean, self.std), net)  # type: ignore[arg-type]

    def build(self, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
        """The model the survey explains: the network, with its normalization in front when there is one."""
        if self.mean is not None and len(self.mean) != input_shape[0]:
            raise XaiCoreError(f"model.normalize has {len(self.mean)} channel(s), the images {input_shape[0]}")
        return self.wrap(self.build_net(input_shape, n_classes))

    def to_meta(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"arch": self.arch}
        if self.source != "zoo":
            meta["source"] = self.source
        if self.kwargs:
            meta["kwargs"] = dict(self.kwargs)
        if self.mean is not None:
            meta["normalize"] = {"mean": list(self.mean), "std": list(self.std)}  # type: ignore[arg-type]
        return meta

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> ModelSpec:
        norm = meta.get("normalize") or {}
        return cls(meta.get("source", "zoo"), meta["arch"], dict(meta.get("kwargs", {})),
                   tuple(norm["mean"]) if norm else None, tuple(norm["std"]) if norm else None)


def as_spec(arch: str | ModelSpec) -> ModelSpec:
    return arch if isinstance(arch, ModelSpec) else ModelSpec("zoo", arch)


def load_weights(spec: ModelSpec, path: str | Path, input_shape: tuple[int, ...], n_classes: int) -> nn.Module:
    """``spec``'s model with the network's weights from ``path`` (``weights_only``), in eval mode."""
    net = spec.build_net(input_shape, n_classes)
    state = load_tensors(path, "model weights (model.weights)", "with a state_dict file saved by torch.save")
    if isinstance(state, dict) and not any(isinstance(v, torch.Tensor) for v in state.values()):
        state = state.get("state_dict", state.get("model", state))
    if not isinstance(state, dict):
        raise XaiCoreError(f"model weights {path} hold a {type(state).__name__}, not a state_dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        lines = [s.strip() for s in str(e).splitlines() if s.strip()]
        raise XaiCoreError(f"model weights {path} do not fit model.arch {spec.arch!r} with {n_classes} classes: "
                           f"{' '.join(lines[1:3])[:300]}") from None
    model = spec.wrap(net).eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(1, *input_shape))
    except RuntimeError as e:  # e.g. 1-channel images into a network whose first conv takes 3
        first = str(e).strip().splitlines()[0][:240]
        raise XaiCoreError(f"model {spec.arch!r} with weights {path} cannot take the data's images of shape "
                           f"{tuple(input_shape)} (data.channels, data.size): {first}") from None
    if out.ndim != 2 or out.shape[1] != n_classes:
        raise XaiCoreError(f"model {spec.arch!r} with weights {path} returns logits of shape {tuple(out.shape)} "
                           f"for one image of {tuple(input_shape)}; the data has {n_classes} classes")
    return model
