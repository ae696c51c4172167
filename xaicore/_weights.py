"""Every file of tensors xaicore reads (models, fitted states) is loaded here: ``weights_only=True``, so a file
can never run code, and any failure is one line naming the file and the stage that rewrites it. Every such file
is written here too, atomically."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import torch

from xaicore.atomic import atomic_path
from xaicore.errors import XaiCoreError


def load_tensors(path: str | Path, what: str, rerun: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU; ``what`` names the file's role ("model weights"),
    ``rerun`` the stage that writes it ("the train stage")."""
    path = Path(path)
    if not path.is_file():
        raise XaiCoreError(f"{what} {path} is missing; run {rerun}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's message is a page long: keep what names the cause
        text = str(e)
        found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
        if found:
            raise XaiCoreError(f"{what} {path} holds a pickled object ({found.group(1)}), not only tensors; "
                               f"weights_only loading refuses it (a pickle payload can run code); rerun {rerun}") \
                from None
        cause = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(?:\n\n|$)", text, re.S)
        raise XaiCoreError(f"{what} {path} cannot be read (not a torch file: "
                           f"{cause.group(1).strip() if cause else 'unpickling failed'}); rerun {rerun}") from None
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line, whatever torch raises
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise XaiCoreError(f"{what} {path} cannot be read ({type(e).__name__}: {first[:160]}); rerun {rerun}") \
            from None


def save_tensors(obj: Any, path: str | Path) -> Path:
    """``torch.save`` of ``obj`` (tensors, numbers, strings, lists and dicts of them: what ``load_tensors`` reads
    back) to ``path``, atomically (:mod:`xaicore.atomic`)."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)
    return Path(path)
