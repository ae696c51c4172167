"""Weights on disk: a ``state_dict`` file plus a small JSON of what to build; loaded with
``weights_only=True`` so a weights file can never run code."""

from __future__ import annotations

import json
from pathlib import Path

import torch.nn as nn

from xaicore._weights import load_tensors, save_tensors
from xaicore.atomic import write_text
from xaicore.errors import XaiCoreError
from xaicore.models.spec import ModelSpec, as_spec


def save_model(model: nn.Module, path: str | Path, *, arch: str | ModelSpec, input_shape: tuple[int, ...],
               n_classes: int, **info: object) -> None:
    path = Path(path)
    meta = {**as_spec(arch).to_meta(), "input_shape": list(input_shape), "n_classes": n_classes, **info}
    write_text(path.with_suffix(".json"), json.dumps(meta, indent=1, sort_keys=True))
    save_tensors(model.state_dict(), path)  # last: the weights file's presence means the model is complete


def load_model(path: str | Path) -> nn.Module:
    """Rebuild a model from ``path`` (``.pt``) and its ``.json`` beside it (what to build: zoo architecture, or
    torchvision/own network with its normalization); returned in eval mode."""
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise XaiCoreError(f"model weights {path} (or {meta_path.name}) are missing; run the train stage first")
    meta = json.loads(meta_path.read_text())
    model = ModelSpec.from_meta(meta).build(tuple(meta["input_shape"]), meta["n_classes"])
    state = load_tensors(path, "model weights", "the train stage (python -m flows train)")
    try:
        model.load_state_dict(state)
    except Exception as e:  # noqa: BLE001 - missing or misshapen tensors: a corrupt file to the user
        first = str(e).strip().splitlines()[0]
        raise XaiCoreError(f"model weights {path} do not fit its {meta['arch']} ({first[:160]}); rerun the train "
                           "stage") from None
    return model.eval()
