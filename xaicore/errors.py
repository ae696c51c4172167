"""The one exception type xaicore raises for bad input, so a caller (or a CLI) can show one line."""

from __future__ import annotations

from typing import Any


class XaiCoreError(ValueError):
    """Bad input, bad configuration, missing data or a corrupt archive; the message names the problem."""


def require_finite(values: Any, what: str) -> None:
    """Raise when a tensor or array holds NaN or inf, naming ``what`` and how many of its rows do."""
    import numpy as np
    import torch

    if isinstance(values, torch.Tensor):
        bad = ~torch.isfinite(values.detach())
        rows = int(bad.reshape(bad.shape[0], -1).any(1).sum()) if bad.ndim > 1 else int(bad.sum())
    else:
        bad = ~np.isfinite(np.asarray(values, dtype=float))
        rows = int(bad.reshape(bad.shape[0], -1).any(1).sum()) if bad.ndim > 1 else int(bad.sum())
    if rows:
        raise XaiCoreError(f"{what} holds NaN or inf in {rows} of {len(values)} rows")


def require_same_shape(a: Any, b: Any, what: str) -> None:
    """Raise when two tensors or arrays that are compared row by row differ in shape."""
    if tuple(a.shape) != tuple(b.shape):
        raise XaiCoreError(f"{what}: shapes differ, {tuple(a.shape)} vs {tuple(b.shape)}")


class NotApplicable(XaiCoreError):
    """A method that cannot explain this model at all (e.g. Grad-CAM on a network without a conv layer)."""
