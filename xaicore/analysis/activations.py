"""The activations archive: what named layers of a model compute on a data set, written chunked like the
heatmaps so that dataset-level analyses (Network Dissection, :func:`~xaicore.analysis.dissect`) read it lazily.

Layout (``xaicore.activations/1``, float32, through :class:`~xaicore.store.ArchiveWriter`: built under
``<path>.partial``, marked ``complete`` last, refused by :func:`open_activations` when incomplete or foreign):

* one variable per layer, named as the layer (``conv2``, ``layer4.1``), dims (model, sample, ``<layer>:unit``,
  ``<layer>:y``, ``<layer>:x``) for a (B, C, H, W) output and (model, sample, ``<layer>:unit``) for a (B, F) one
  — layers differ in units and resolution, so each has its own dims;
* chunks of ``chunk`` samples × every unit of one model; coords ``model`` and ``sample`` (the inputs' indices);
* attrs: ``layers`` (JSON list) and whatever the caller adds.

    ds = open_activations("outputs/analysis/activations.zarr")
    dissect(ds["conv2"].sel(model="clever_hans"), masks)       # read chunk by chunk
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import xarray as xr

from xaicore.engine import FORWARD_BATCH, batch_slices, check_forward_batch, eval_mode
from xaicore.engine.model import captured_outputs
from xaicore.errors import XaiCoreError, require_finite
from xaicore.store.schemas import ACTIVATIONS_SCHEMA


def _dims(layer: str, ndim: int) -> tuple[str, ...]:
    return ("model", "sample", *(f"{layer}:{d}" for d in ("unit", "y", "x")[:ndim - 1]))


@torch.no_grad()
def _chunk_outputs(model: nn.Module, x: torch.Tensor, layers: Sequence[str], forward_batch: int
                   ) -> dict[str, np.ndarray]:
    parts: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    for s in batch_slices(len(x), forward_batch):
        with captured_outputs(model, layers) as out:
            model(x[s])
        for name in layers:
            parts[name].append(out[name].detach().float().cpu().numpy())
    return {name: np.concatenate(p) for name, p in parts.items()}


def write_activations(models: Mapping[str, nn.Module], x: torch.Tensor, layers: Sequence[str],
                      path: str | Path, *, sample: np.ndarray | None = None, chunk: int = 128,
                      forward_batch: int = FORWARD_BATCH, attrs: dict[str, Any] | None = None) -> Path:
    """Run every model of ``models`` (name → network) on ``x`` (N, ...) in chunks of ``chunk`` inputs and write
    the outputs of ``layers`` to the archive at ``path`` (see the module docstring); returns ``path``."""
    from xaicore.store import ArchiveWriter

    layers = list(layers)
    if not models or not layers:
        raise XaiCoreError("write_activations needs at least one model and one layer")
    if not isinstance(x, torch.Tensor) or x.ndim < 2 or len(x) == 0:
        raise XaiCoreError("x must be a non-empty (N, ...) tensor of inputs")
    require_finite(x, "x")
    if chunk < 1:
        raise XaiCoreError(f"chunk must be a positive number of samples, got {chunk}")
    forward_batch = check_forward_batch(forward_batch, "write_activations")
    sample = np.arange(len(x)) if sample is None else np.asarray(sample, dtype=np.int64)
    if sample.shape != (len(x),):
        raise XaiCoreError(f"sample must give one index per input ({len(x)}), got shape {sample.shape}")
    names = list(models)
    first = next(iter(models.values()))
    with eval_mode(first):
        probe = _chunk_outputs(first, x[:1], layers, 1)
    for name, out in probe.items():
        if out.ndim not in (2, 4):
            raise XaiCoreError(f"layer {name!r} returns a {out.ndim}-d output; activations need (B, units) or "
                               "(B, C, H, W)")
    variables = {name: (_dims(name, out.ndim), (len(names), len(x), *out.shape[1:]),
                        (1, chunk, *out.shape[1:])) for name, out in probe.items()}
    writer = ArchiveWriter(path, variables, coords={"model": np.asarray(names, dtype=object), "sample": sample},
                           attrs={"layers": json.dumps(layers), **(attrs or {})}, schema=ACTIVATIONS_SCHEMA)
    for mi, name in enumerate(names):
        model = models[name]
        with eval_mode(model):
            for s in batch_slices(len(x), chunk):
                for layer, values in _chunk_outputs(model, x[s], layers, forward_batch).items():
                    if values.shape[1:] != variables[layer][1][2:]:
                        raise XaiCoreError(f"model {name!r}: layer {layer!r} gives {values.shape[1:]}, the first "
                                           f"model {variables[layer][1][2:]}; one archive holds one architecture")
                    writer.write(layer, (mi, s), values)
    return writer.finalize()


def open_activations(path: str | Path) -> xr.Dataset:
    """The activations archive at ``path``, lazily (dask); refuses an incomplete or foreign store."""
    from xaicore.store import open_archive

    return open_archive(path, schema=ACTIVATIONS_SCHEMA, load_small=False)
