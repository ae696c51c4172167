"""Model-parameter randomization controls (Adebayo et al. 2018, survey §4.4).

Cascading: the layers are re-initialized from the top (logits) down, cumulatively, one copy per layer.
Independent: one layer at a time, the others keep their trained weights. The trained model is never touched.
"""

from __future__ import annotations

import copy
import zlib

import torch
import torch.nn as nn

from xaicore.errors import XaiCoreError
from xaicore.models.spec import split_normalization


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, input to output (of the network behind a
    :class:`~xaicore.models.spec.Normalized` wrapper: its own names)."""
    net = split_normalization(model)[1]
    return [name for name, m in net.named_modules() if name and any(True for _ in m.parameters(recurse=False))]


def randomize_layers(model: nn.Module, layers: list[str], seed: int) -> nn.Module:
    """A deep copy of ``model`` whose ``layers`` are re-drawn from their default initialisation.

    A layer may be a block (``layer4`` of a ResNet): every module inside it that owns parameters is re-drawn.
    Each module's draw depends on ``seed`` and its name only, so a layer gets the same random weights in the
    cascading and the independent control, and as part of a block.
    """
    known = dict(split_normalization(model)[1].named_modules())
    out = copy.deepcopy(model)
    mods = dict(split_normalization(out)[1].named_modules())
    for name in layers:
        if not name or name not in known:
            raise XaiCoreError(f"cannot randomize layer {name!r}: the model has no such module; parameter layers: "
                               f"{', '.join(parameter_layers(model))}")
        owners = [(sub, m) for sub, m in mods.items()
                  if (sub == name or sub.startswith(name + ".")) and any(True for _ in m.parameters(recurse=False))]
        if not owners:
            raise XaiCoreError(f"cannot randomize layer {name!r}: it has no parameters; parameter layers: "
                               f"{', '.join(parameter_layers(model))}")
        for sub, m in owners:
            if not hasattr(m, "reset_parameters"):
                raise XaiCoreError(f"cannot randomize layer {sub!r} ({type(m).__name__}): it has no "
                                   "reset_parameters() to re-draw its weights from")
            with torch.random.fork_rng():
                torch.manual_seed(seed * 1_000_003 + zlib.crc32(sub.encode()))
                m.reset_parameters()
    return out.eval()


def control_layers(model: nn.Module, layers: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """The layers the controls randomize, top (output) first: ``layers`` (module names, e.g. a ResNet's blocks)
    in the model's order, or every parameter layer when ``None``."""
    if layers is None:
        return parameter_layers(model)[::-1]
    order = {name: i for i, (name, _) in enumerate(split_normalization(model)[1].named_modules())}
    unknown = [n for n in layers if n not in order or not n]
    if unknown:
        raise XaiCoreError(f"controls.layers: the model has no module {unknown[0]!r}; parameter layers: "
                           f"{', '.join(parameter_layers(model))}")
    return sorted(dict.fromkeys(layers), key=lambda n: -order[n])


def cascading_controls(model: nn.Module, seed: int, layers: list[str] | tuple[str, ...] | None = None
                       ) -> dict[str, nn.Module]:
    """``{"cascade:<layer>": model}`` with that layer and every layer above it randomized, top layer first
    (``layers``: see :func:`control_layers`)."""
    order = control_layers(model, layers)
    return {f"cascade:{name}": randomize_layers(model, order[: i + 1], seed) for i, name in enumerate(order)}


def independent_controls(model: nn.Module, seed: int, layers: list[str] | tuple[str, ...] | None = None
                         ) -> dict[str, nn.Module]:
    """``{"independent:<layer>": model}`` with only that layer randomized."""
    return {f"independent:{name}": randomize_layers(model, [name], seed) for name in control_layers(model, layers)}
