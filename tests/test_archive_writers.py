"""One contract for every archive writer (xaicore.store, xaicore.analysis.write_activations): what a reader finds
is complete or absent. A writer that dies leaves no archive at its path (only a ``.partial`` that
``open_archive`` refuses and names); one that finishes leaves a complete archive of a declared schema with its
manifest, which replaces an older one whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import dask
import dask.array
import numpy as np
import pytest
import torch
import torch.nn as nn
import xarray as xr

from xaicore import XaiCoreError
from xaicore.analysis import write_activations
from xaicore.store import (
    ACTIVATIONS_SCHEMA,
    HEATMAP_SCHEMA,
    SCHEMAS,
    SCORES_SCHEMA,
    ArchiveWriter,
    HeatmapArchiveWriter,
    open_archive,
    write_dataset,
)
from xaicore.store.archive import MANIFEST


class Died(RuntimeError):
    """The run is killed half-way."""


def _die() -> np.ndarray:
    raise Died


def _dataset(path: Path, value: float, die: bool) -> str:
    ds = xr.Dataset({"aopc": (("explainer",), np.array([value, value + 1]))},
                    coords={"explainer": np.array(["gradient", "random"])})
    if die:  # the values are computed while the store is written: the write fails half-way
        ds["aopc"] = (("explainer",), dask.array.from_delayed(dask.delayed(_die)(), shape=(2,), dtype=float))
    write_dataset(ds, path, schema=SCORES_SCHEMA)
    return SCORES_SCHEMA


def _region(path: Path, value: float, die: bool) -> str:
    w = ArchiveWriter(path, {"curve": (("explainer", "step"), (2, 3), (1, 3))},
                      coords={"explainer": np.array(["gradient", "random"])}, attrs={}, schema=SCORES_SCHEMA)
    w.write("curve", (slice(0, 1), slice(None)), np.full((1, 3), value))
    if die:
        raise Died
    w.write("curve", (slice(1, 2), slice(None)), np.full((1, 3), value + 1))
    w.finalize()
    return SCORES_SCHEMA


def _heatmaps(path: Path, value: float, die: bool) -> str:
    w = HeatmapArchiveWriter(path, models=["trained"], explainers=["gradient"], sample=np.array([0, 1]),
                             label=np.array([0, 1]), target=np.array([0, 1]), prediction=np.array([[0, 1]]),
                             score=np.zeros((1, 2), np.float32), image_shape=(1, 2, 2), chunk=2, attrs={})
    if die:
        raise Died
    w.write_block(0, 0, 0, np.full((2, 1, 2, 2), value, np.float32), np.zeros(2, np.float32),
                  np.ones(2, np.float32))
    w.finalize()
    return HEATMAP_SCHEMA


def _activations(path: Path, value: float, die: bool) -> str:
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    nn.init.constant_(net[1].weight, value)

    class Dies(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise Died

    models = {"trained": net} | ({"second": nn.Sequential(nn.Flatten(), nn.Linear(4, 3), Dies())} if die else {})
    write_activations(models, torch.ones(5, 1, 2, 2), ["1"], path, chunk=2)
    return ACTIVATIONS_SCHEMA


WRITERS: dict[str, Callable[[Path, float, bool], str]] = {
    "write_dataset": _dataset, "ArchiveWriter": _region, "HeatmapArchiveWriter": _heatmaps,
    "write_activations": _activations,
}


@pytest.mark.parametrize("writer", list(WRITERS))
def test_an_archive_is_complete_or_absent(tmp_path, writer):
    write = WRITERS[writer]
    path = tmp_path / "out.zarr"
    with pytest.raises(Died):
        write(path, 1.0, True)
    assert not path.exists()
    with pytest.raises(XaiCoreError, match="does not exist"):
        open_archive(path)

    schema = write(path, 1.0, False)
    assert schema in SCHEMAS
    ds = open_archive(path, schema=schema, verify=True)
    assert ds.attrs["complete"] is True and (path / MANIFEST).is_dir()
    assert not path.with_name(path.name + ".partial").exists()
    first = {k: np.asarray(v.values) for k, v in ds.data_vars.items()}

    write(path, 2.0, False)  # a rewrite replaces the archive whole
    second = {k: np.asarray(v.values) for k, v in open_archive(path, schema=schema, verify=True).data_vars.items()}
    assert any(not np.array_equal(first[k], second[k], equal_nan=True) for k in first)
    with pytest.raises(Died):
        write(path, 3.0, True)  # a rewrite that dies leaves the finished archive as it was
    kept = {k: np.asarray(v.values) for k, v in open_archive(path, schema=schema, verify=True).data_vars.items()}
    assert all(np.array_equal(second[k], kept[k], equal_nan=True) for k in second)
