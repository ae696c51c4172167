"""Archive schema and writers.

Every archive is built under ``<path>.partial`` and only renamed to ``<path>`` after its ``complete``
attribute is set, so a killed run never leaves a store that looks finished; ``open_archive`` refuses
incomplete and foreign stores.

A finished archive carries a manifest (the ``xaicore_manifest`` member group's attributes): the size and
SHA-256 of every file in it. Zarr reads a missing chunk as its fill value, so a deleted chunk would otherwise
come back as zeros (or NaN) without a word. ``open_archive`` checks every file's presence and size and the
metadata's hashes (a stat per chunk); ``verify=True`` also hashes every chunk, which the stages that read a
whole archive do.

Every array's chunks end in Zarr 3's ``crc32c`` codec (after zstd): any Zarr 3 reader, plain ``xr.open_zarr``
included, checks a chunk's checksum when it decodes it and refuses a corrupted one ("Stored and computed checksum
do not match"). The root's metadata is consolidated, so plain xarray opens an archive in one read, without a
warning.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from xaicore._version import __version__
from xaicore.atomic import atomic_path, commit, partial_path
from xaicore.errors import XaiCoreError
from xaicore.store.journal import Journal
from xaicore.store.schemas import HEATMAP_SCHEMA, SCORES_SCHEMA


def _clean(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


MANIFEST = "xaicore_manifest"  # a member group whose attributes list the files: Zarr and xarray read it as one


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def checked_codecs() -> dict[str, Any]:
    """The encoding of every array of an archive: zstd (Zarr 3's default) then a crc32c checksum per chunk."""
    from zarr.codecs import Crc32cCodec, ZstdCodec

    return {"compressors": (ZstdCodec(level=0), Crc32cCodec())}


def _encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    return {str(n): checked_codecs() for n in [*ds.data_vars, *ds.coords]}


def _files(root: Path) -> dict[str, Path]:
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*"))
            if p.is_file() and p.relative_to(root).parts[0] != MANIFEST}


def _finalize(tmp: Path, path: Path) -> None:
    _seal(tmp)
    commit(tmp, path)


def _seal(tmp: Path) -> None:
    """Mark the store complete and write its manifest (sizes and sha256 of every file)."""
    group = zarr.open_group(str(tmp), mode="r+")
    group.attrs["complete"] = True
    with warnings.catch_warnings():  # "consolidated metadata is not part of the Zarr 3 spec": xarray reads it
        warnings.simplefilter("ignore")
        zarr.consolidate_metadata(str(tmp))
    files = {rel: [p.stat().st_size, _sha256(p)] for rel, p in _files(tmp).items()}
    (tmp / MANIFEST).mkdir()
    (tmp / MANIFEST / "zarr.json").write_text(json.dumps(
        {"zarr_format": 3, "node_type": "group", "attributes": {"algorithm": "sha256", "files": files}},
        sort_keys=True))


def verify_manifest(path: str | Path, *, full: bool = False) -> None:
    """Check a finished archive against its manifest: every file present, of its size, nothing added, the
    metadata (``zarr.json``) unchanged; with ``full``, every chunk's hash too. Raises naming the first file
    that differs."""
    path = Path(path)
    rerun = f"the archive is corrupt; rerun the stage that writes {path.name} (dvc repro -f <stage>)"
    try:
        recorded = json.loads((path / MANIFEST / "zarr.json").read_text())["attributes"]["files"]
    except FileNotFoundError:
        raise XaiCoreError(f"archive {path} has no manifest ({MANIFEST}): it was written by an older xaicore or "
                           f"altered; rerun the stage that writes {path.name}") from None
    except (ValueError, KeyError, TypeError) as e:
        raise XaiCoreError(f"archive {path}: its manifest cannot be read ({e}); {rerun}") from None
    found = _files(path)
    for rel, (size, digest) in recorded.items():
        p = found.get(rel)
        if p is None:
            raise XaiCoreError(f"archive {path}: file {rel} is missing; {rerun}")
        got = p.stat().st_size
        if got != size:
            raise XaiCoreError(f"archive {path}: file {rel} has {got} bytes, {size} when written (truncated or "
                               f"changed); {rerun}")
        if (full or p.name == "zarr.json") and _sha256(p) != digest:
            raise XaiCoreError(f"archive {path}: file {rel} changed since it was written; {rerun}")
    extra = sorted(set(found) - set(recorded))
    if extra:
        raise XaiCoreError(f"archive {path}: file {extra[0]} was not written with it"
                           f"{f' (and {len(extra) - 1} more)' if len(extra) > 1 else ''}; {rerun}")


def _str_coord(values: Sequence[str]) -> np.ndarray:
    return np.asarray(list(values), dtype=object)


class HeatmapArchiveWriter:
    """Writes ``relevance`` (model, explainer, sample, channel, y, x) one chunk-aligned block at a time.

    Coordinates and the per-(model, sample) ``prediction``/``score`` are written when the store is created;
    the per-heatmap axiom figures and the methods' ``extras`` (one (model, explainer, sample) variable each,
    NaN where a method does not return it) are kept (they are small) and written by :meth:`finalize`.
    Model i's heatmaps cover its first ``explained[i]`` samples (all by default), the ``n_explained``
    coordinate; the others stay NaN, Zarr's fill value, and take no disk.
    """

    def __init__(self, path: str | Path, *, models: Sequence[str], explainers: Sequence[str],
                 sample: np.ndarray, label: np.ndarray, target: np.ndarray, prediction: np.ndarray,
                 score: np.ndarray, image_shape: tuple[int, int, int], chunk: int, attrs: dict[str, Any],
                 extras: Sequence[str] = (), journal: Journal | None = None,
                 explained: Sequence[int] | None = None) -> None:
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        m, e, s = len(models), len(explainers), len(sample)
        c, h, w = image_shape
        self.chunk = int(chunk)
        self.models, self.explainers = list(models), list(explainers)
        self.journal = journal
        self.conservation_error = np.full((m, e, s), np.nan, dtype=np.float32)
        self.positive_fraction = np.full((m, e, s), np.nan, dtype=np.float32)
        self.extras = {k: np.full((m, e, s), np.nan, dtype=np.float32) for k in extras}
        self._written = np.zeros((m, e, s), dtype=bool)
        explained = np.full(m, s, dtype=np.int64) if explained is None else np.asarray(explained, dtype=np.int64)
        if explained.shape != (m,) or (explained < 0).any() or (explained > s).any():
            raise XaiCoreError(f"archive {self.path}: explained must give 0..{s} samples for each of {m} models")
        for mi, b in enumerate(explained):  # a model's samples past its budget stay NaN (the fill value)
            self._written[mi, :, b:] = True
        self.not_applicable: dict[str, dict[str, str]] = {}
        #: (model, explainer, chunk start) blocks and (model, explainer) not-applicable marks an interrupted run
        #: of the same configuration left, verified against the chunk files: the caller skips their jobs
        self.resumed_blocks: set[tuple[int, int, int]] = set()
        self.resumed_not_applicable: set[tuple[int, int]] = set()
        if journal is not None and journal.resumed and (self.tmp / "zarr.json").is_file():
            self._group = zarr.open_group(str(self.tmp), mode="r+")
            self._rel = self._group["relevance"]
            self._resume()
            return
        _clean(self.tmp)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
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
                "n_explained": ("model", explained),
            },
            attrs={"xaicore_schema": HEATMAP_SCHEMA, "xaicore_version": __version__,
                   "complete": False, **attrs},
        )
        ds.to_zarr(str(self.tmp), mode="w", compute=False, consolidated=False, zarr_format=3,
                   encoding=_encoding(ds))
        self._group = zarr.open_group(str(self.tmp), mode="r+")
        self._rel = self._group["relevance"]

    @property
    def written(self) -> np.ndarray:
        """(model, explainer, sample) True where the heatmap is in the store (or marked not applicable)."""
        return self._written

    def _chunk_digest(self, model: int, explainer: int, starts: Sequence[int]) -> np.ndarray:
        """SHA-256 over the relevance chunk files of these blocks (a chunk Zarr left unwritten counts as such)."""
        h = hashlib.sha256()
        for start in starts:
            key = self._rel.metadata.encode_chunk_key((model, explainer, start // self.chunk, 0, 0, 0))
            f = self.tmp / "relevance" / key
            h.update(f.read_bytes() if f.is_file() else b"<unwritten>")
        return np.frombuffer(h.digest(), dtype=np.uint8)

    def _starts(self) -> range:
        return range(0, self._written.shape[2], self.chunk)

    def _resume(self) -> None:
        assert self.journal is not None
        for name in self.journal.names():
            kind, *ids = name.split("-")
            entry = self.journal.get(name)
            if entry is None:
                continue
            mi, ei = int(ids[0]), int(ids[1])
            if kind == "na":
                if np.array_equal(entry["digest"], self._chunk_digest(mi, ei, self._starts())):
                    self._mark(mi, ei, str(entry["reason"]))
                    self.resumed_not_applicable.add((mi, ei))
            elif kind == "block":
                start = int(ids[2])
                if np.array_equal(entry["digest"], self._chunk_digest(mi, ei, [start])):
                    self._record(mi, ei, start, entry["conservation_error"], entry["positive_fraction"],
                                 {k[6:]: v for k, v in entry.items() if k.startswith("extra_")})
                    self.resumed_blocks.add((mi, ei, start))

    def _record(self, model: int, explainer: int, start: int, conservation_error: np.ndarray,
                positive_fraction: np.ndarray, extras: dict[str, np.ndarray]) -> None:
        n = len(conservation_error)
        self.conservation_error[model, explainer, start:start + n] = conservation_error
        self.positive_fraction[model, explainer, start:start + n] = positive_fraction
        for k, v in extras.items():
            if k not in self.extras:
                raise XaiCoreError(f"archive {self.path}: extra {k!r} was not declared when the store was created")
            self.extras[k][model, explainer, start:start + n] = v
        self._written[model, explainer, start:start + n] = True

    def _mark(self, model: int, explainer: int, reason: str) -> None:
        self._written[model, explainer] = True
        self.not_applicable.setdefault(self.models[model], {})[self.explainers[explainer]] = reason

    def write_block(self, model: int, explainer: int, start: int, relevance: np.ndarray,
                    conservation_error: np.ndarray, positive_fraction: np.ndarray,
                    extras: dict[str, np.ndarray] | None = None) -> None:
        """Write heatmaps of samples ``start:start+len(relevance)``; ``start`` must begin a chunk."""
        if start % self.chunk:
            raise XaiCoreError(f"block start {start} is not aligned to the archive chunk {self.chunk}")
        n = relevance.shape[0]
        extras = extras or {}
        for k in extras:
            if k not in self.extras:
                raise XaiCoreError(f"archive {self.path}: extra {k!r} was not declared when the store was created")
        self._rel[model, explainer, start:start + n] = relevance.astype(np.float32, copy=False)
        self._record(model, explainer, start, conservation_error, positive_fraction, extras)
        if self.journal is not None:  # after the chunk is on disk: an entry always describes a whole chunk
            self.journal.put(f"block-{model}-{explainer}-{start}", {
                "digest": self._chunk_digest(model, explainer, [start]),
                "conservation_error": conservation_error, "positive_fraction": positive_fraction,
                **{f"extra_{k}": v for k, v in extras.items()}})

    def mark_not_applicable(self, model: int, explainer: int, reason: str) -> None:
        """Record that a method cannot explain a model (e.g. Grad-CAM without a conv layer): NaN heatmaps,
        and the reason in the ``not_applicable`` attribute."""
        self._rel[model, explainer] = np.nan
        self._mark(model, explainer, reason)
        if self.journal is not None:
            self.journal.put(f"na-{model}-{explainer}", {"digest": self._chunk_digest(model, explainer, self._starts()),
                                                          "reason": np.str_(reason)})

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


class ArchiveWriter:
    """An archive written region by region, for results too large to hold at once (the scores of every chunk):
    float32 variables declared with their dims, shape and chunks; a region never written reads as NaN (Zarr's
    fill value) and takes no disk. Built under ``<path>.partial``; :meth:`finalize` marks it complete, writes
    the manifest and moves it into place, as :func:`write_dataset` does for a dataset held in memory."""

    def __init__(self, path: str | Path, variables: dict[str, tuple[tuple[str, ...], tuple[int, ...],
                                                                     tuple[int, ...]]],
                 coords: dict[str, Any], attrs: dict[str, Any], *, schema: str) -> None:
        import dask.array as da

        _check_schema(schema)
        self.path = Path(path)
        self.tmp = partial_path(self.path)
        _clean(self.tmp)
        self.tmp.parent.mkdir(parents=True, exist_ok=True)
        ds = xr.Dataset({name: (dims, da.zeros(shape, dtype=np.float32, chunks=chunks))
                         for name, (dims, shape, chunks) in variables.items()},
                        coords={k: (v.astype(object) if isinstance(v, np.ndarray) and v.dtype.kind == "U" else v)
                                for k, v in coords.items()},
                        attrs={**attrs, "xaicore_schema": schema, "xaicore_version": __version__, "complete": False})
        ds.to_zarr(str(self.tmp), mode="w", compute=False, consolidated=False, zarr_format=3,
                   encoding=_encoding(ds))
        self.group = zarr.open_group(str(self.tmp), mode="r+")

    def write(self, name: str, region: tuple[Any, ...], values: np.ndarray) -> None:
        """Write ``values`` into ``name[region]``."""
        self.group[name][region] = np.asarray(values, dtype=np.float32)

    def read(self, name: str, region: tuple[Any, ...] = (Ellipsis,)) -> np.ndarray:
        return np.asarray(self.group[name][region])

    def finalize(self) -> Path:
        _finalize(self.tmp, self.path)
        return self.path


def _check_schema(schema: str) -> None:
    if not isinstance(schema, str) or not re.fullmatch(r"[A-Za-z][\w.\-]*/\d+", schema):
        raise XaiCoreError(f"schema {schema!r} must be 'name/version', e.g. {SCORES_SCHEMA!r}")


def write_dataset(ds: xr.Dataset, path: str | Path, *, schema: str) -> Path:
    """Write a whole (small) dataset as a complete archive, atomically; ``schema`` is ``name/version``."""
    _check_schema(schema)
    path = Path(path)
    ds = ds.copy()
    ds.attrs.update({"xaicore_schema": schema, "xaicore_version": __version__, "complete": False})
    for name in list(ds.coords) + list(ds.data_vars):
        if ds[name].dtype.kind == "U":
            ds[name] = ds[name].astype(object)
    with atomic_path(path) as tmp:
        ds.to_zarr(str(tmp), mode="w", consolidated=False, zarr_format=3, encoding=_encoding(ds))
        _seal(tmp)
    return path


def open_archive(path: str | Path, *, schema: str | None = None, verify: bool = False,
                 load_small: bool = True) -> xr.Dataset:
    """Open a heatmap or scores archive; refuse a missing, foreign, incomplete or corrupt store
    (:func:`verify_manifest`; ``verify`` hashes every chunk as well). The coordinates and the variables of at most
    64 MiB are read into memory (``load_small=False``: every variable stays lazy, for the stages that stream); the
    heatmaps themselves stay lazy (dask-backed)."""
    path = Path(path)
    if not path.exists():
        partial = partial_path(path)
        hint = f" (an unfinished {partial.name} is there: the run that wrote it did not finish)" \
            if partial.exists() else ""
        raise XaiCoreError(f"archive {path} does not exist{hint}; run the pipeline (make survey / dvc repro)")
    if (path / MANIFEST).exists():
        verify_manifest(path, full=verify)
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
    if not (path / MANIFEST).exists():
        verify_manifest(path)  # a finished xaicore archive without its manifest: says so
    return _small_in_memory(ds) if load_small else ds


IN_MEMORY_BYTES = 64 * 2**20
ALWAYS_LAZY = ("relevance", "aopc_curve")  # the maps and curves: read chunk by chunk, whatever their size


def _small_in_memory(ds: xr.Dataset) -> xr.Dataset:
    """Read the coordinates, and the variables of at most ``IN_MEMORY_BYTES``, into memory; the heatmaps'
    ``relevance``, the scores' ``aopc_curve`` and anything larger stay lazy. Grouping by ``label`` or
    ``prediction`` and selecting on a condition of them (``ds.where(ds.prediction != ds.label, drop=True)``)
    then work as on any in-memory dataset; xarray refuses both on dask-backed coordinates."""
    small = [n for n in ds.coords if n not in ds.dims] + \
        [n for n in ds.data_vars if n not in ALWAYS_LAZY and ds[n].nbytes <= IN_MEMORY_BYTES]
    return ds.assign_coords({n: ds[n].compute() for n in small if n in ds.coords}).assign(
        {n: ds[n].compute() for n in small if n in ds.data_vars})


def explained_counts(ds: xr.Dataset) -> np.ndarray:
    """How many samples each model explained (the ``n_explained`` (model) coordinate of ``explain.samples``);
    every sample for an archive written without a budget."""
    if not isinstance(ds, xr.Dataset) or not {"model", "sample"} <= set(ds.sizes):
        raise XaiCoreError("explained_counts reads a heatmaps archive with model and sample dimensions: open it "
                           "with xaicore.store.open_archive")
    if "n_explained" in ds.coords or "n_explained" in ds:
        return np.asarray(ds["n_explained"].values, dtype=int)
    return np.full(ds.sizes["model"], ds.sizes["sample"], dtype=int)


def not_applicable(ds: xr.Dataset) -> dict[str, dict[str, str]]:
    """``{model: {explainer: reason}}`` of the heatmaps a method could not compute (NaN in the archive)."""
    if not isinstance(ds, xr.Dataset) or "xaicore_schema" not in ds.attrs:
        raise XaiCoreError("not_applicable reads an xaicore archive: open it with xaicore.store.open_archive")
    return json.loads(ds.attrs.get("not_applicable", "{}"))
