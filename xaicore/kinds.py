"""The input kinds, in one place: what a batch is (image, table or text), the token ids every vocabulary
starts with, and the checks every method and metric runs on its inputs.

* image: (B, C, H, W) floating point; tabular: (B, F) floating point; text: (B, T) integer token ids, PAD
  padding the end of a sentence and UNK standing for a word out of the vocabulary (``xaicore.data`` builds its
  vocabularies with them first).
"""

from __future__ import annotations

import torch

from xaicore.errors import XaiCoreError

KINDS = ("image", "tabular", "text")
PAD = 0  # text: the token id of padding, vocab[0] == "<pad>"
UNK = 1  # text: the token id of an out-of-vocabulary word, vocab[1] == "<unk>"


def describe_kind(x: torch.Tensor) -> str:
    """``image (B, C, H, W) input (2, 1, 8, 8)``-like words for errors."""
    kind = input_kind(x)
    dims = {"image": "(B, C, H, W)", "tabular": "(B, F)", "text": "(B, T) token-id"}.get(kind, "")
    return f"{kind} {dims} input {tuple(x.shape)}".replace("  ", " ")


def input_kind(x: torch.Tensor) -> str:
    """The input kind of a batch: ``image`` (B, C, H, W) floats, ``tabular`` (B, F) floats, ``text`` (B, T)
    integer token ids; anything else is ``unknown``."""
    if x.ndim == 4 and x.is_floating_point():
        return "image"
    if x.ndim == 2:
        return "tabular" if x.is_floating_point() else "text"
    return "unknown"


def check_inputs(x: torch.Tensor, target: torch.Tensor | None = None) -> torch.Tensor:
    """Validate ``x`` — (B, C, H, W) or (B, F) floating and finite, or (B, T) integer token ids — not empty, and
    ``target`` (B,) integer; returns target as long."""
    if not isinstance(x, torch.Tensor) or x.dtype == torch.bool or x.is_complex():
        raise XaiCoreError(f"x must be a floating-point tensor (or integer token ids), got {type(x).__name__} "
                           f"{getattr(x, 'dtype', '')}")
    if not x.is_floating_point() and x.ndim != 2:
        raise XaiCoreError(f"integer x is text: (B, T) token ids, got shape {tuple(x.shape)}; images and tables "
                           "must be a floating-point tensor")
    if x.ndim not in (2, 4):
        raise XaiCoreError(f"x must be (B, C, H, W), (B, F) or (B, T) token ids, got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise XaiCoreError(f"x is an empty batch {tuple(x.shape)}")
    if not x.is_floating_point():
        if int(x.min()) < 0:
            raise XaiCoreError(f"token ids must be >= 0, got {int(x.min())}")
        finite = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    else:
        finite = torch.isfinite(x).flatten(1).all(1)
    if not bool(finite.all()):
        raise XaiCoreError(f"x holds NaN or inf in {int((~finite).sum())} of {x.shape[0]} samples (first: sample "
                           f"{int((~finite).nonzero()[0, 0])})")
    if target is None:
        return target  # type: ignore[return-value]
    target = torch.as_tensor(target, device=x.device)
    if target.ndim != 1 or target.shape[0] != x.shape[0] or target.is_floating_point():
        raise XaiCoreError(f"target must be (B,) = ({x.shape[0]},) class indices, got {tuple(target.shape)} "
                           f"{target.dtype}")
    return target.long()
