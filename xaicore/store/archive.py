"""Archive schema and writers.

Every archive is built under ``<path>.partial`` and only renamed to ``<path>`` after its ``complete``
attribute is set, so a killed run never leaves a store that looks finished; ``open_archive`` refuses
incomplete and foreign stores.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from xaicore._version import __version__
from xaicore.errors import XaiCoreError

HEATMAP_SCHEMA = "xaicore.heatmaps/1"
SCORES_SCHEMA = "xaicore.scores/1"


def _partial(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def _clean(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def _finalize(tmp: Path, path: Path) -> None:
    group = zarr.open_group(str(tmp), mode="r+")
    group.attrs["complete"] = True
    _clean(path)
    tmp.rename(path)


def _str_coord(values: Sequence[str]) -> np.ndarray:
    return np.asarray(list(values), dtype=object)


class HeatmapArchiveWriter:
    """Writes ``relevance`` (model, explainer, sample, channel, y, x) one chunk-aligned block at a time.

    Coordinates and the per-(model, sample) ``prediction``/``score`` are written when the store is created;
    the per-heatmap axiom figures and the methods' ``extras`` (one (model, explainer, sample) variable each,
    NaN where a method does not return it) are kept (they are small) and written by :meth:`finalize`.
    """

    def __init__(self, path: str | Path, *, models: Sequence[str], explainers: Sequence[str],
                 sample: np.ndarray, label: np.ndarray, target: np.ndarray, prediction: np.ndarray,
                 score: np.ndarray, image_shape: tuple[int, int, int], chunk: int, attrs: dict[str, Any],
                 extras: Sequence[str] = ()) -> None:
        self.path = Path(path)
        self.tmp = _partial(self.path)
        _clean(self.tmp)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        m, e, s = len(models), len(explainers), len(sample)
        c, h, w = image_shape
        self.chunk = int(chunk)
        self.models, self.explainers = list(models), list(explainers)
        import dask.array as da

        rel = da.zeros((m, e, s, c, h, w), dtype=np.float32, chunks=(1, 1, self.chunk, c, h, w))
        per_map = ("model", "explainer", "sample")
        ds = xr.Dataset(
            {"relevance": (per_map + ("channel", "y", "x"), rel),
             "conservation_error": (per_map, da.zeros((m, e, s), dtype=np.float32, chunks=-1)),
             "positive_fraction": (per_map, da.zeros((m, e, s), dtype=np.float32, chunks=-1)),
             **{k: (per_map, da.zeros((m, e, s), dtype=np.float32, chunks=-1)) for k in extras}},
            coords={
                "model": _str_coord(models),
                "explainer": _str_coord(explainers),
                "sample": np.asarray(sample, dtype=np.int64),
                "channel": np.arange(c), "y": np.arange(h), "x": np.arange(w),
                "label": ("sample", np.asarray(label, dtype=np.int64)),
                "target": ("sample", np.asarray(target, dtype=np.int64)),
                "prediction": (("model", "sample"), np.asarray(prediction, dtype=np.int64)),
                "score": (("model", "sample"), np.asarray(score, dtype=np.float32)),
            },
            attrs={"xaicore_schema": HEATMAP_SCHEMA, "xaicore_version": __version__,
                   "complete": False, **attrs},
        )
        ds.to_zarr(str(self.tmp), mode="w", compute=False, consolidated=False, zarr_format=3)
        self._group = zarr.open_group(str(self.tmp), mode="r+")
        self._rel = self._group["relevance"]
        self.conservation_error = np.full((m, e, s), np.nan, dtype=np.float32)
        self.positive_fraction = np.full((m, e, s), np.nan, dtype=np.float32)
        self.extras = {k: np.full((m, e, s), np.nan, dtype=np.float32) for k in extras}
        self._written = np.zeros((m, e, s), dtype=bool)
        self.not_applicable: dict[str, dict[str, str]] = {}

    def write_block(self, model: int, explainer: int, start: int, relevance: np.ndarray,
                    conservation_error: np.ndarray, positive_fraction: np.ndarray,
                    extras: dict[str, np.ndarray] | None = None) -> None:
        """Write heatmaps of samples ``start:start+len(relevance)``; ``start`` must begin a chunk."""
        if start % self.chunk:
            raise XaiCoreError(f"block start {start} is not aligned to the archive chunk {self.chunk}")
        n = relevance.shape[0]
        self._rel[model, explainer, start:start + n] = relevance.astype(np.float32, copy=False)
        self.conservation_error[model, explainer, start:start + n] = conservation_error
        self.positive_fraction[model, explainer, start:start + n] = positive_fraction
        for k, v in (extras or {}).items():
            if k not in self.extras:
                raise XaiCoreError(f"archive {self.path}: extra {k!r} was not declared when the store was created")
            self.extras[k][model, explainer, start:start + n] = v
        self._written[model, explainer, start:start + n] = True

    def mark_not_applicable(self, model: int, explainer: int, reason: str) -> None:
        """Record that a method cannot explain a model (e.g. Grad-CAM without a conv layer): NaN heatmaps,
        and the reason in the ``not_applicable`` attribute."""
        self._rel[model, explainer] = np.nan
        self._written[model, explainer] = True
        self.not_applicable.setdefault(self.models[model], {})[self.explainers[explainer]] = reason

    def finalize(self) -> Path:
        """Write the axiom figures, mark the store complete, move it to its final path."""
        if not self._written.all():
            raise XaiCoreError(f"archive {self.path}: some (model, explainer, sample) blocks were never written")
        self._group.attrs["not_applicable"] = json.dumps(self.not_applicable, sort_keys=True)
        self._group["conservation_error"][...] = self.conservation_error
        self._group["positive_fraction"][...] = self.positive_fraction
        for k, v in self.extras.items():
            self._group[k][...] = v
        _finalize(self.tmp, self.path)
        return self.path


def write_dataset(ds: xr.Dataset, path: str | Path, *, schema: str) -> Path:
    """Write a whole (small) dataset as a complete archive, atomically."""
    path = Path(path)
    tmp = _partial(path)
    _clean(tmp)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    ds.attrs.update({"xaicore_schema": schema, "xaicore_version": __version__, "complete": False})
    for name in list(ds.coords) + list(ds.data_vars):
        if ds[name].dtype.kind == "U":
            ds[name] = ds[name].astype(object)
    ds.to_zarr(str(tmp), mode="w", consolidated=False, zarr_format=3)
    _finalize(tmp, path)
    return path


def open_archive(path: str | Path, *, schema: str | None = None) -> xr.Dataset:
    """Open a heatmap or scores archive lazily (dask-backed); refuse a missing, foreign or incomplete store."""
    path = Path(path)
    if not path.exists():
        partial = _partial(path)
        hint = f" (an unfinished {partial.name} is there: the run that wrote it did not finish)" \
            if partial.exists() else ""
        raise XaiCoreError(f"archive {path} does not exist{hint}; run the pipeline (make survey / dvc repro)")
    try:
        ds = xr.open_zarr(str(path), consolidated=False)
    except Exception as e:  # noqa: BLE001 - whatever zarr raises, the store is unreadable to the user
        raise XaiCoreError(f"archive {path} cannot be read as Zarr: {type(e).__name__}: {e}") from None
    found = ds.attrs.get("xaicore_schema")
    if found is None or (schema is not None and found != schema):
        raise XaiCoreError(f"{path} is not an xaicore archive{' of ' + schema if schema else ''} "
                           f"(schema attribute: {found!r})")
    if not ds.attrs.get("complete"):
        raise XaiCoreError(f"archive {path} is incomplete: the run that wrote it did not finish; rerun it")
    return ds


def not_applicable(ds: xr.Dataset) -> dict[str, dict[str, str]]:
    """``{model: {explainer: reason}}`` of the heatmaps a method could not compute (NaN in the archive)."""
    return json.loads(ds.attrs.get("not_applicable", "{}"))
