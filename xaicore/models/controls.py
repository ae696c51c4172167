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


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of the modules that own parameters directly, input to output."""
    return [name for name, m in model.named_modules()
            if name and any(True for _ in m.parameters(recurse=False))]


def randomize_layers(model: nn.Module, layers: list[str], seed: int) -> nn.Module:
    """A deep copy of ``model`` whose ``layers`` are re-drawn from their default initialisation.

    Each layer's draw depends on ``seed`` and its name only, so a layer gets the same random weights in the
    cascading and the independent control.
    """
    known = dict(model.named_modules())
    out = copy.deepcopy(model)
    mods = dict(out.named_modules())
    for name in layers:
        if name not in known or not hasattr(mods[name], "reset_parameters"):
            known_layers = ", ".join(parameter_layers(model))
            raise XaiCoreError(f"cannot randomize layer {name!r}; parameter layers: {known_layers}")
        with torch.random.fork_rng():
            torch.manual_seed(seed * 1_000_003 + zlib.crc32(name.encode()))
            mods[name].reset_parameters()
    return out.eval()


def cascading_controls(model: nn.Module, seed: int) -> dict[str, nn.Module]:
    """``{"cascade:<layer>": model}`` with that layer and every layer above it randomized, top layer first."""
    layers = parameter_layers(model)[::-1]
    return {f"cascade:{name}": randomize_layers(model, layers[: i + 1], seed) for i, name in enumerate(layers)}


def independent_controls(model: nn.Module, seed: int) -> dict[str, nn.Module]:
    """``{"independent:<layer>": model}`` with only that layer randomized."""
    return {f"independent:{name}": randomize_layers(model, [name], seed) for name in parameter_layers(model)[::-1]}
