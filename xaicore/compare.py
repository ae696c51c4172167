"""Whether one survey run reproduced another (``xaicore compare A B``): the archives variable by variable, the
methods' ranking per metric, and the published findings' verdicts, side by side.

The reproducibility contract (docs/reproducibility.md): on one machine, the same params and seed give
bitwise-identical archives; on another machine (another CPU or GPU, other batch compositions: conv and linear
results change in their last bits, and trained weights drift with them) every archive variable agrees within the
tolerance stated in :data:`xaicore.tolerances.TOLERANCES` and every finding's verdict is the same.
:func:`compare_runs` checks both on two outputs folders.

How a float variable is compared: per *slice*, the entries that share the values of the variable's string-valued
dimensions (``model``, ``explainer``, ``perturbation``, ``order``, ``measure``, ``mode``, ``fill``, ...; the
numeric ones, ``sample``, ``y``, ``x``, ``step``, ``class``, ... lie within a slice), the scale is the largest
|value| of the reference (A) in that slice, and an entry is within tolerance when
``|a - b| <= atol + rtol * scale``. A slice is one heatmap method on one model, one AOPC variant, ...: a
method whose relevance is 10⁴ times another's is judged on its own magnitude, as its rounding errors are. The
reported relative difference is ``max |a - b| / scale``. NaN positions must match (a NaN on one side only is a
difference, whatever the tolerance); integer, boolean and string variables must be equal (or differ in at most
the stated fraction of entries); the dimension coordinates (which models, methods, samples) must be equal, else
the variables over them are not compared and the run is not reproduced.

The library imports no Prefect, DVC or MLflow; the CLI materialises a git revision's ``outputs/`` with DVC.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xaicore.errors import XaiCoreError
from xaicore.tolerances import (  # noqa: F401  (re-exported: the table is part of compare's API)
    ACCURACY_ATOL,
    EPS32,
    RANKED,
    RELEVANCE_RTOL,
    TOLERANCES,
    Tolerance,
    tolerance_of,
)

_STRING_KINDS = "OUST"
BLOCK_BYTES = 32 * 2**20  # a float variable larger than this is compared one entry of its first dimension at a time


@dataclasses.dataclass(frozen=True)
class VariableRow:
    """One archive variable (or coordinate) compared: the largest absolute and relative difference, NaN positions
    that differ, entries beyond tolerance (discrete: entries that differ), and whether it is within tolerance."""

    archive: str
    variable: str
    size: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0
    nan_mismatch: int = 0
    beyond: int = 0
    tolerance: Tolerance | None = None
    ok: bool = True
    note: str = ""
    discrete: bool = False
    judged: bool = True  # False: reported only (runs from differently trained weights, see Comparison.retrained)


@dataclasses.dataclass(frozen=True)
class MetricRow:
    """The methods' ranking by one metric (one combination of its other dimensions) in A and in B: Kendall's tau
    (tau-b, ties allowed); ``swaps``: pairs ranked the other way round; ``ok`` false only where a swapped pair was
    not a near-tie (its values in A further apart than their two tolerances), i.e. where a rank changed beyond
    what values within tolerance allow."""

    archive: str
    variable: str
    where: str
    n_methods: int
    tau: float
    swaps: tuple[tuple[str, str], ...] = ()
    ok: bool = True
    judged: bool = True

    @property
    def rank_change(self) -> bool:
        """Whether B orders any pair of methods otherwise than A (tau below 1)."""
        return bool(self.swaps)


@dataclasses.dataclass(frozen=True)
class FindingRow:
    """One published finding's verdict (holds | does not hold | undetermined) in A and in B."""

    claim: str
    verdict_a: str
    verdict_b: str

    @property
    def ok(self) -> bool:
        return self.verdict_a == self.verdict_b


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The reproduction report of run B against reference A."""

    a: str
    b: str
    variables: tuple[VariableRow, ...]
    metrics: tuple[MetricRow, ...]
    findings: tuple[FindingRow, ...]
    tolerance_scale: float = 1.0
    retrained: bool = False

    @property
    def reproduced(self) -> bool:
        """Every judged variable within tolerance, no judged rank change beyond near-ties, every verdict the same.
        From the same trained weights every row is judged; from weights trained apart (:attr:`retrained`) the
        accuracies, the archives' structure and the verdicts are."""
        return all(r.ok or not r.judged for r in (*self.variables, *self.metrics)) and \
            all(r.ok for r in self.findings)

    @property
    def failures(self) -> list[str]:
        """One line per thing that was not reproduced."""
        out = [f"{r.archive}/{r.variable}: {r.note or 'beyond tolerance'}" for r in self.variables
               if not r.ok and r.judged]
        out += [f"{r.archive}/{r.variable} [{r.where}]: ranking changed beyond near-ties (tau {r.tau:.3f})"
                for r in self.metrics if not r.ok and r.judged]
        out += [f"finding {r.claim!r}: {r.verdict_a} -> {r.verdict_b}" for r in self.findings if not r.ok]
        return out

    def format(self) -> str:
        """The report as a plain-text table."""
        lines = [f"A: {self.a}", f"B: {self.b}"]
        if self.tolerance_scale != 1.0:
            lines.append(f"tolerances x {self.tolerance_scale:g}")
        if self.retrained:
            lines += ["", "The trained weights differ (each run trained its own models, e.g. on another machine):",
                      "training amplifies last bits, so the archives' differences are reported ('info') and the",
                      "reproduction is judged on the accuracies, the archives' structure and the verdicts."]
        lines += ["", "Archive variables (rel: max |a-b| / max |a| of the slice; beyond: entries over tolerance)"]
        rows = [("archive/variable", "size", "max abs", "max rel", "NaN diff", "beyond", "tolerance", "")]
        for r in self.variables:
            tol = "-" if r.tolerance is None else _tol_text(r.tolerance, r.discrete)
            state = "ok" if r.ok else ("FAIL" if r.judged else "info")
            rows.append((f"{r.archive}/{r.variable}", str(r.size), _num(r.max_abs), _num(r.max_rel),
                         str(r.nan_mismatch), str(r.beyond), tol, state + (f"  {r.note}" if r.note else "")))
        lines += _table(rows)
        lines += ["", "Rankings of the methods (Kendall tau of A's and B's order; swaps within tolerance pass)"]
        rows = [("archive/metric", "where", "methods", "tau", "")]
        for m in self.metrics:
            swaps = ", ".join(f"{i}<->{j}" for i, j in m.swaps[:4]) + (" ..." if len(m.swaps) > 4 else "")
            state = "ok" if not m.rank_change else ("rank change (near-ties)" if m.ok else
                                                     "RANK CHANGE" if m.judged else "rank change (info)")
            rows.append((f"{m.archive}/{m.variable}", m.where, str(m.n_methods), _num(m.tau, 3),
                         state + (f": {swaps}" if swaps else "")))
        lines += _table(rows)
        lines += ["", "Findings"]
        rows = [("claim", "A", "B", "")]
        for f in self.findings:
            rows.append((f.claim, f.verdict_a, f.verdict_b, "same" if f.ok else "CHANGED"))
        lines += _table(rows)
        lines.append("")
        if self.reproduced and self.retrained:
            lines.append("REPRODUCED (weights trained apart): accuracies within tolerance, every verdict the same.")
        elif self.reproduced:
            lines.append("REPRODUCED: every variable within tolerance, every verdict the same.")
        else:
            lines.append(f"NOT REPRODUCED ({len(self.failures)}):")
            lines += [f"  {f}" for f in self.failures]
        return "\n".join(lines)


def _tol_text(t: Tolerance, discrete: bool = False) -> str:
    if discrete:
        return f"<= {t.mismatch:.2g} differ" if t.mismatch else "exact"
    parts = ([f"rtol {t.rtol:.2g}"] if t.rtol else []) + ([f"atol {t.atol:.2g}"] if t.atol else [])
    return " ".join(parts) or "exact"


def _num(v: float, digits: int = 3) -> str:
    if isinstance(v, float) and math.isnan(v):
        return "-"
    if v == 0:
        return "0"
    return f"{v:.{digits}g}"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
            for r in rows]


# --- variables ------------------------------------------------------------------------------------------------

def _is_string(arr: np.ndarray) -> bool:
    return arr.dtype.kind in _STRING_KINDS


def _text(arr: np.ndarray) -> np.ndarray:
    """A string array (fixed width, object or numpy's StringDType) as Python strings, for comparison."""
    return np.array([str(v) for v in np.asarray(arr).ravel().tolist()], dtype=object).reshape(np.shape(arr))


def _slice_axes(da: xr.DataArray) -> tuple[int, ...]:
    """Axes within a slice: those whose dimension is not string-valued."""
    return tuple(i for i, d in enumerate(da.dims)
                 if not (d in da.coords and _is_string(np.asarray(da.coords[d].values))))


def _compare_floats(a: np.ndarray, b: np.ndarray, axes: tuple[int, ...], tol: Tolerance) -> tuple[
        float, float, int, int]:
    """(max abs, max rel, NaN mismatches, entries beyond tolerance) of two float arrays of one shape."""
    a = a.astype(np.float64, copy=False)
    b = b.astype(np.float64, copy=False)
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    nan_mismatch = int(np.count_nonzero(nan_a != nan_b))
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.where((a == b) | nan_a | nan_b, 0.0, np.abs(a - b))  # equal infinities: no difference
        diff = np.where(np.isnan(diff), np.inf, diff)  # inf vs -inf
        mag = np.where(nan_a | np.isinf(a), 0.0, np.abs(a))
        scale = mag.max(axis=axes, keepdims=True) if axes and mag.size else mag
        beyond = int(np.count_nonzero(diff > tol.atol + tol.rtol * scale))
        max_abs = float(diff.max()) if diff.size else 0.0
        rel = np.where(diff == 0, 0.0, diff / np.where(scale > 0, scale, 0.0))
        max_rel = float(np.nanmax(rel)) if rel.size else 0.0
    return max_abs, max_rel, nan_mismatch, beyond


def _compare_discrete(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    """(max abs for numbers, entries that differ) of two integer/boolean/string arrays of one shape."""
    if _is_string(a) or _is_string(b):
        differ = int(np.count_nonzero(_text(a) != _text(b)))
        return (math.nan if differ else 0.0), differ  # strings: no distance
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
    return (float(diff.max()) if diff.size else 0.0), int(np.count_nonzero(diff))


def _worst_slice(a: xr.DataArray, b: xr.DataArray, tol: Tolerance) -> str:
    """Where a float variable differs most: the slice with the most entries beyond tolerance (or NaN on one side)."""
    inner = [d for i, d in enumerate(a.dims) if i in _slice_axes(a)]
    outer = [d for d in a.dims if d not in inner]
    if not outer:
        return ""
    mag = abs(a).where(np.isfinite(a), 0.0)
    scale = mag.max(inner) if inner else mag
    bad = ((abs(a - b) > tol.atol + tol.rtol * scale) & (a != b)) | (np.isnan(a) != np.isnan(b))
    counts = bad.sum(inner) if inner else bad
    idx = np.unravel_index(int(np.argmax(counts.values)), counts.shape)
    where = " ".join(f"{d}={np.asarray(counts[d].values)[i]}" for d, i in zip(counts.dims, idx, strict=True))
    return f"most in {where} ({int(counts.values[idx])} of {int(np.prod([a.sizes[d] for d in inner]))})"


def compare_variable(archive: str, name: str, a: xr.DataArray, b: xr.DataArray, tol: Tolerance) -> VariableRow:
    """Compare one variable of two archives whose dimension coordinates agree (see :func:`compare_datasets`)."""
    if a.dims != b.dims or a.shape != b.shape:
        return VariableRow(archive, name, ok=False, tolerance=tol,
                           note=f"dims {dict(a.sizes)} in A, {dict(b.sizes)} in B")
    floats = a.dtype.kind in "fc" and b.dtype.kind in "fc"
    if floats:
        axes = _slice_axes(a)
        if a.nbytes > BLOCK_BYTES and a.ndim > 1 and 0 not in axes:  # one slice dim at a time: bounded memory
            parts = [_compare_floats(np.asarray(a[i].values), np.asarray(b[i].values), tuple(x - 1 for x in axes),
                                     tol) for i in range(a.shape[0])]
            max_abs, max_rel = max(p[0] for p in parts), max(p[1] for p in parts)
            nan_mismatch, beyond = sum(p[2] for p in parts), sum(p[3] for p in parts)
        else:
            max_abs, max_rel, nan_mismatch, beyond = _compare_floats(np.asarray(a.values), np.asarray(b.values),
                                                                     axes, tol)
        ok = nan_mismatch == 0 and beyond == 0
        note = "; ".join(([f"{nan_mismatch} NaN where the other is not"] if nan_mismatch else []) +
                         ([] if ok else [f"beyond tolerance, {_worst_slice(a, b, tol)}".strip(", ")]))
        return VariableRow(archive, name, a.size, max_abs, max_rel, nan_mismatch, beyond, tol, ok, note.strip("; "))
    av, bv = np.asarray(a.values), np.asarray(b.values)
    if (av.dtype.kind in "fc") != (bv.dtype.kind in "fc"):
        return VariableRow(archive, name, av.size, ok=False, tolerance=tol, note=f"dtype {av.dtype} vs {bv.dtype}")
    max_abs, differ = _compare_discrete(av, bv)
    ok = differ <= tol.mismatch * av.size
    return VariableRow(archive, name, av.size, max_abs, differ / max(av.size, 1), 0, differ, tol, ok,
                       f"{differ} of {av.size} entries differ" if differ else "", discrete=True)


def _index_mismatch(a: xr.Dataset, b: xr.Dataset) -> dict[str, str]:
    """{dimension: why} for the dimensions whose size or coordinate values differ between A and B."""
    out = {}
    for dim in sorted(set(a.sizes) | set(b.sizes)):
        if dim not in a.sizes or dim not in b.sizes:
            out[dim] = f"dimension {dim!r} only in {'A' if dim in a.sizes else 'B'}"
            continue
        if a.sizes[dim] != b.sizes[dim]:
            out[dim] = f"{dim}: {a.sizes[dim]} entries in A, {b.sizes[dim]} in B"
            continue
        ca = np.asarray(a[dim].values) if dim in a.coords else np.arange(a.sizes[dim])
        cb = np.asarray(b[dim].values) if dim in b.coords else np.arange(b.sizes[dim])
        if not np.array_equal(_text(ca) if _is_string(ca) else ca, _text(cb) if _is_string(cb) else cb):
            first = next(i for i, (x, y) in enumerate(zip(ca.tolist(), cb.tolist(), strict=True)) if x != y)
            out[dim] = f"{dim}[{first}]: {ca.tolist()[first]!r} in A, {cb.tolist()[first]!r} in B"
    return out


def compare_datasets(archive: str, a: xr.Dataset, b: xr.Dataset, *,
                     tolerances: Mapping[str, Tolerance] = TOLERANCES, tolerance_scale: float = 1.0) -> list[
                         VariableRow]:
    """Compare every variable and non-dimension coordinate of two datasets (an archive of run A and of run B)."""
    rows = []
    bad_dims = _index_mismatch(a, b)
    for dim, why in bad_dims.items():
        rows.append(VariableRow(archive, f"<{dim}>", ok=False, note=f"coordinates differ: {why}"))
    names_a = [n for n in a.coords if n not in a.dims] + list(a.data_vars)
    names_b = [n for n in b.coords if n not in b.dims] + list(b.data_vars)
    for name in sorted(set(names_a) | set(names_b), key=str):
        if name not in names_a or name not in names_b:
            rows.append(VariableRow(archive, str(name), ok=False, note=f"only in {'A' if name in names_a else 'B'}"))
            continue
        tol = tolerance_of(f"{archive}/{name}", tolerances).scaled(tolerance_scale)
        skipped = [d for d in a[name].dims if d in bad_dims]
        if skipped:
            rows.append(VariableRow(archive, str(name), tolerance=tol, ok=False,
                                    note=f"not compared: {', '.join(map(str, skipped))} differ"))
            continue
        rows.append(compare_variable(archive, str(name), a[name], b[name], tol))
    return rows


# --- rankings ---------------------------------------------------------------------------------------------------

def _kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of two score vectors; 1 where both are constant and equal (one tie: the same order)."""
    from scipy.stats import kendalltau

    if np.ptp(x) == 0 and np.ptp(y) == 0:
        return 1.0
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(kendalltau(x, y).statistic)


def rank_agreement(archive: str, name: str, a: xr.DataArray, b: xr.DataArray, tol: Tolerance,
                   reduce: Iterable[str] = ()) -> list[MetricRow]:
    """Kendall's tau of the methods' order by ``a`` and by ``b`` (mean over ``reduce``), one row per combination of
    the other dimensions but ``explainer``; combinations with fewer than two methods scored on both sides are
    left out. A swapped pair fails when its values in A lie further apart than ``2 (atol + rtol |a|)``."""
    reduce = [d for d in reduce if d in a.dims]
    with np.errstate(all="ignore"):
        ma = a.mean(reduce, skipna=True) if reduce else a
        mb = b.mean(reduce, skipna=True) if reduce else b
        scale = abs(a).max(reduce, skipna=True) if reduce else abs(a)
    others = [d for d in ma.dims if d != "explainer"]
    rows = []
    for idx in np.ndindex(*[ma.sizes[d] for d in others]):
        combo = dict(zip(others, idx, strict=True))
        sa, sb, ss = ma.isel(combo), mb.isel(combo), scale.isel(combo)
        va, vb, vs = (np.asarray(v.values, dtype=np.float64) for v in (sa, sb, ss))
        keep = np.isfinite(va) & np.isfinite(vb)
        if keep.sum() < 2:
            continue
        names = [str(e) for e in np.asarray(sa["explainer"].values)[keep]]
        va, vb, vs = va[keep], vb[keep], vs[keep]
        bound = tol.atol + tol.rtol * vs
        swaps, ok = [], True
        for i in range(len(va)):
            for j in range(i + 1, len(va)):
                if (va[i] - va[j]) * (vb[i] - vb[j]) < 0 or ((va[i] == va[j]) != (vb[i] == vb[j])):
                    swaps.append((names[i], names[j]))
                    ok = ok and bool(abs(va[i] - va[j]) <= bound[i] + bound[j])
        where = " ".join(f"{d}={np.asarray(ma[d].values)[i]}" if d in ma.coords else f"{d}={i}"
                         for d, i in combo.items())
        rows.append(MetricRow(archive, name, where or "-", len(va), _kendall_tau(va, vb), tuple(swaps), ok))
    return rows


# --- runs -------------------------------------------------------------------------------------------------------

def archives(root: str | Path) -> list[str]:
    """The archives of an outputs folder, relative to it (``heatmaps.zarr``, ``tabular/features.zarr``, ...)."""
    root = Path(root)
    found = [p for p in (*root.glob("*.zarr"), *root.glob("*/*.zarr")) if p.is_dir()]
    return sorted(p.relative_to(root).as_posix() for p in found)


def _open(path: Path) -> xr.Dataset:
    from xaicore.store import open_archive

    try:
        return open_archive(path, load_small=False)
    except XaiCoreError as err:
        raise XaiCoreError(f"cannot compare {path}: {err}") from None


def _compare_archive(name: str, a: Path, b: Path, tolerances: Mapping[str, Tolerance],
                     tolerance_scale: float) -> tuple[list[VariableRow], list[MetricRow]]:
    da, db = _open(a / name), _open(b / name)
    rows = compare_datasets(name, da, db, tolerances=tolerances, tolerance_scale=tolerance_scale)
    compared = {r.variable for r in rows if r.size}
    metrics = []
    for var in sorted(compared, key=str):
        pattern = next((p for p in RANKED if fnmatch.fnmatchcase(f"{name}/{var}", p)), None)
        if pattern is None or var not in da.data_vars or "explainer" not in da[var].dims:
            continue
        tol = tolerance_of(f"{name}/{var}", tolerances).scaled(tolerance_scale)
        metrics += rank_agreement(name, var, da[var].load(), db[var].load(), tol, RANKED[pattern])
    return rows, metrics


def _flatten(doc: Any, prefix: str = "") -> dict[str, float]:
    """The numbers of a JSON document by their path (``trained/test_accuracy``)."""
    out: dict[str, float] = {}
    if isinstance(doc, dict):
        for k, v in doc.items():
            out.update(_flatten(v, f"{prefix}{k}/" if isinstance(v, dict | list) else f"{prefix}{k}"))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out.update(_flatten(v, f"{prefix}{i}/" if isinstance(v, dict | list) else f"{prefix}{i}"))
    elif isinstance(doc, int | float) and not isinstance(doc, bool):
        out[prefix] = float(doc)
    return out


def _compare_index(name: str, a: Path, b: Path, tolerances: Mapping[str, Tolerance],
                   tolerance_scale: float) -> list[VariableRow]:
    """The numbers of ``models/index.json`` / ``controls/index.json``, each compared as a variable of its own."""
    try:
        fa, fb = (_flatten(json.loads((p / name).read_text())) for p in (a, b))
    except (OSError, ValueError) as err:
        raise XaiCoreError(f"cannot compare {name}: {err}") from None
    rows = []
    for key in sorted(set(fa) | set(fb)):
        if key not in fa or key not in fb:
            rows.append(VariableRow(name, key, ok=False, note=f"only in {'A' if key in fa else 'B'}"))
            continue
        tol = tolerance_of(f"{name}/{key}", tolerances).scaled(tolerance_scale)
        max_abs, max_rel, nan_mismatch, beyond = _compare_floats(np.array([fa[key]]), np.array([fb[key]]), (), tol)
        rows.append(VariableRow(name, key, 1, max_abs, max_rel, nan_mismatch, beyond, tol,
                                nan_mismatch == 0 and beyond == 0))
    return rows


WEIGHT_FILES = ("models/*.pt", "controls/*.pt", "autoencoder.pt", "planted/*.pt", "*/model.pt")


def weight_files(root: str | Path) -> list[str]:
    """The saved weights of an outputs folder (the trained models, controls, autoencoder, branch models)."""
    root = Path(root)
    return sorted({p.relative_to(root).as_posix() for pattern in WEIGHT_FILES for p in root.glob(pattern)
                   if p.is_file()})


def compare_weights(name: str, a: Path, b: Path, tol: Tolerance) -> VariableRow:
    """One saved ``state_dict`` against the other, tensor by tensor (each tensor a slice: scale = its max |w|)."""
    import torch

    try:
        sa, sb = (torch.load(p / name, map_location="cpu", weights_only=True) for p in (a, b))
    except Exception as err:  # noqa: BLE001 - whatever torch raises, the file is unreadable to the user
        raise XaiCoreError(f"cannot compare {name}: {type(err).__name__}: {err}") from None
    ta, tb = _tensors(sa), _tensors(sb)
    if list(ta) != list(tb) or any(getattr(ta[k], "shape", None) != getattr(tb[k], "shape", None) for k in ta):
        return VariableRow(name, "weights", ok=False, tolerance=tol, note="other tensors (names or shapes)")
    floats = [k for k in ta if isinstance(ta[k], torch.Tensor) and ta[k].is_floating_point()]
    parts = [_compare_floats(ta[k].double().reshape(1, -1).numpy(), tb[k].double().reshape(1, -1).numpy(), (1,),
                             tol) for k in floats]
    size = sum(int(ta[k].numel()) for k in floats)
    differ = sum(int(not (torch.equal(ta[k], tb[k]) if isinstance(ta[k], torch.Tensor) else ta[k] == tb[k]))
                 for k in ta if k not in floats)
    max_abs = max((q[0] for q in parts), default=0.0)
    max_rel = max((q[1] for q in parts), default=0.0)
    nan_mismatch, beyond = sum(q[2] for q in parts), sum(q[3] for q in parts) + differ
    return VariableRow(name, "weights", size, max_abs, max_rel, nan_mismatch, beyond, tol,
                       nan_mismatch == 0 and beyond == 0,
                       f"{differ} integer buffers or settings differ" if differ else "")


def _tensors(obj: Any, prefix: str = "") -> dict[str, Any]:
    """The tensors (and other leaves) of a saved object (a ``state_dict`` or nested dicts/lists) by path."""
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _tensors(val, f"{prefix}{key}/").items()}
    if isinstance(obj, list | tuple):
        return {k: v for i, val in enumerate(obj) for k, v in _tensors(val, f"{prefix}{i}/").items()}
    return {prefix.rstrip("/"): obj}


def verdicts(metrics: str | Path) -> dict[str, str]:
    """``{claim: verdict}`` of the findings in a ``metrics.json``."""
    from xaicore.report.findings import VERDICTS

    try:
        doc = json.loads(Path(metrics).read_text())
    except (OSError, ValueError) as err:
        raise XaiCoreError(f"cannot read the findings of {metrics}: {err}") from None
    found = doc.get("findings") if isinstance(doc, dict) else None
    if not isinstance(found, list):
        raise XaiCoreError(f"{metrics} has no list of findings: rerun the aggregate stage")
    out = {}
    for f in found:
        if not isinstance(f, dict) or "claim" not in f:
            raise XaiCoreError(f"{metrics}: a finding without a claim: {str(f)[:80]}")
        out[str(f["claim"])] = str(f.get("verdict") or VERDICTS.get(f.get("holds"), "undetermined"))
    return out


def compare_findings(a: str | Path, b: str | Path) -> list[FindingRow]:
    """The verdicts of the two ``metrics.json`` side by side (a finding missing on one side: ``missing``)."""
    va, vb = verdicts(a), verdicts(b)
    return [FindingRow(c, va.get(c, "missing"), vb.get(c, "missing")) for c in [*va, *(c for c in vb if c not in va)]]


INDEX_FILES = ("models/index.json", "controls/index.json")


def compare_runs(a: str | Path, b: str | Path, *, tolerance_scale: float = 1.0,
                 tolerances: Mapping[str, Tolerance] = TOLERANCES) -> Comparison:
    """Compare the outputs folder ``b`` against the reference ``a``: every archive's variables (within
    ``tolerances`` times ``tolerance_scale``), the methods' ranking per metric, the findings' verdicts. An archive
    or index file present on one side only is a difference; an incomplete or corrupt archive raises
    :class:`XaiCoreError`."""
    a, b = Path(a), Path(b)
    for p in (a, b):
        if not p.is_dir():
            raise XaiCoreError(f"{p} is not an outputs folder")
    if not tolerance_scale > 0:
        raise XaiCoreError(f"the tolerance scale must be positive, got {tolerance_scale}")
    variables: list[VariableRow] = []
    metrics: list[MetricRow] = []
    names_a, names_b = archives(a), archives(b)
    if not names_a and not names_b:
        raise XaiCoreError(f"neither {a} nor {b} holds an archive (*.zarr): not outputs folders of a survey")
    for name in sorted(set(names_a) | set(names_b)):
        if name not in names_a or name not in names_b:
            side = "A" if name in names_a else "B"
            variables.append(VariableRow(name, "*", ok=False, note=f"archive only in {side}"))
            continue
        v, m = _compare_archive(name, a, b, tolerances, tolerance_scale)
        variables += v
        metrics += m
    wa, wb = weight_files(a), weight_files(b)
    for name in sorted(set(wa) | set(wb)):
        if name in wa and name in wb:
            variables.append(compare_weights(name, a, b, tolerance_of(f"{name}/weights", tolerances).scaled(
                tolerance_scale)))
        else:
            variables.append(VariableRow(name, "weights", ok=False, note=f"only in {'A' if name in wa else 'B'}"))
    for name in INDEX_FILES:
        there = [(p / name).is_file() for p in (a, b)]
        if all(there):
            variables += _compare_index(name, a, b, tolerances, tolerance_scale)
        elif any(there):
            variables.append(VariableRow(name, "*", ok=False, note=f"only in {'A' if there[0] else 'B'}"))
    retrained = any(r.variable == "weights" and r.size > 0 and (r.max_abs > 0 or r.beyond > 0) for r in variables)
    if retrained:  # judge what training's chaos leaves comparable: accuracies, structure (rows without a size)
        variables = [r if r.size == 0 or _is_accuracy(f"{r.archive}/{r.variable}") else
                     dataclasses.replace(r, judged=False) for r in variables]
        metrics = [dataclasses.replace(m, judged=False) for m in metrics]
    there = [(p / "metrics.json").is_file() for p in (a, b)]
    findings: list[FindingRow] = []
    if all(there):
        findings = compare_findings(a / "metrics.json", b / "metrics.json")
    elif any(there):
        variables.append(VariableRow("metrics.json", "findings", ok=False,
                                     note=f"only in {'A' if there[0] else 'B'}"))
    return Comparison(str(a), str(b), tuple(variables), tuple(metrics), tuple(findings), tolerance_scale, retrained)


#: what is still compared, within its tolerance, between runs whose models were trained apart
ACCURACIES = ("*index.json/*accuracy", "roar.zarr/*", "analysis.zarr/reliance")


def _is_accuracy(key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in ACCURACIES)
