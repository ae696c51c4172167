"""Seeded, untrained zoo models for tests, with BatchNorm layers holding non-trivial statistics and affine
maps (a freshly built BatchNorm is the identity in eval mode and would hide mistakes)."""

from __future__ import annotations

import torch
import torch.nn as nn

from xaicore.models import build_model


def seeded_zoo_model(arch: str, *, seed: int, input_shape: tuple[int, int, int] = (1, 28, 28),
                     n_classes: int = 10) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = build_model(arch, input_shape, n_classes)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
                    m.running_mean.uniform_(-0.2, 0.2)
                    m.running_var.uniform_(0.5, 1.5)
    return model


def fitted_params(method: str, model: nn.Module, x: torch.Tensor) -> dict:
    """``{"reference": ...}`` for a method fitted on data (``xaicore.fit``: PatternNet's patterns, PDA's patch
    Gaussians), fitted on 48 seeded samples shaped like ``x`` — {} for methods that need none."""
    from xaicore import fit
    from xaicore.explain import get_explainer

    ex = get_explainer(method)
    if ex.fit is None:
        return {}
    g = torch.Generator().manual_seed(11)
    data = torch.rand((48, *x.shape[1:]), generator=g, dtype=torch.float64).to(dtype=x.dtype, device=x.device)
    kw = {"batch_size": 16} if "batch_size" in ex.fit_defaults else {}
    if "epochs" in ex.fit_defaults:  # CEM's autoencoder: a few epochs make a state of the right kind
        kw["epochs"] = 3
    return {"reference": fit(model, data, method, **kw)}
