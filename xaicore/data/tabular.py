"""Tabular data: scikit-learn's embedded breast cancer set, a generated Titanic-like set whose generating model is
known, and a researcher's own CSV file.

The Titanic data are those Robnik-Šikonja & Kononenko (2008) explain (class, age, sex of 2,201 people aboard);
here they are drawn from stated priors (the attributes independent) and a stated logistic model, so an
explanation can be checked against the truth: ``p(survived | codes) = sigmoid(titanic_logodds(codes))``. The
attribute ``embarked`` has no effect at all; a faithful explanation gives it none.

Nominal columns hold integer codes 0..K−1 into ``Dataset.categories[j]`` (stored as float32, like every column).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xaicore.data.core import Dataset
from xaicore.data.files import _split
from xaicore.errors import XaiCoreError

TITANIC_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "class": ("1st", "2nd", "3rd", "crew"),
    "age": ("adult", "child"),
    "sex": ("male", "female"),
    "embarked": ("S", "C", "Q"),
}
# the sampling probability of every value; the attributes are drawn independently (class, age, sex as aboard)
TITANIC_PRIORS: dict[str, tuple[float, ...]] = {
    "class": (0.15, 0.13, 0.32, 0.40),
    "age": (0.95, 0.05),
    "sex": (0.79, 0.21),
    "embarked": (0.7, 0.2, 0.1),
}
# log-odds of survival = intercept + the effect of each attribute's value (embarked: none)
TITANIC_LOGODDS: dict[str, Any] = {
    "intercept": -1.2,
    "class": (1.6, 0.8, 0.0, 0.1),
    "age": (0.0, 1.0),
    "sex": (0.0, 2.3),
    "embarked": (0.0, 0.0, 0.0),
}


def titanic_logodds(codes: np.ndarray) -> np.ndarray:
    """The generating model's log-odds of survival (N,) float64 for (N, 4) codes in TITANIC_ATTRIBUTES' order."""
    codes = np.asarray(codes)
    names = list(TITANIC_ATTRIBUTES)
    if codes.ndim != 2 or codes.shape[1] != len(names):
        raise XaiCoreError(f"titanic codes must be (N, {len(names)}) ({', '.join(names)}), got {codes.shape}")
    out = np.full(codes.shape[0], float(TITANIC_LOGODDS["intercept"]))
    for j, name in enumerate(names):
        col = codes[:, j]
        k = len(TITANIC_ATTRIBUTES[name])
        bad = (col != np.round(col)) | (col < 0) | (col >= k)
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise XaiCoreError(f"titanic column {name!r}: code {col[row]} in row {row} is not one of its {k} values")
        out += np.asarray(TITANIC_LOGODDS[name], dtype=np.float64)[col.astype(np.int64)]
    return out


def titanic(n: int = 2201, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """``n`` people drawn from TITANIC_PRIORS, survival ~ Bernoulli(sigmoid(titanic_logodds)); the same ``seed``
    gives the same arrays. ``idx_test``: positions in the generated set."""
    if n < 10:
        raise XaiCoreError(f"titanic needs n >= 10 people, got {n}")
    rng = np.random.default_rng([seed, 0x717A])
    codes = np.stack([rng.choice(len(values), size=n, p=TITANIC_PRIORS[name])
                      for name, values in TITANIC_ATTRIBUTES.items()], axis=1)
    p = 1.0 / (1.0 + np.exp(-titanic_logodds(codes)))
    y = (rng.random(n) < p).astype(np.int64)
    tr, te = _split(y, test_fraction, seed)
    x = torch.from_numpy(codes.astype(np.float32))
    return Dataset(name="titanic", x_train=x[tr], y_train=torch.from_numpy(y[tr]), x_test=x[te],
                   y_test=torch.from_numpy(y[te]), idx_test=torch.from_numpy(te).long(), n_classes=2,
                   kind="tabular", feature_names=tuple(TITANIC_ATTRIBUTES),
                   categories=tuple(TITANIC_ATTRIBUTES.values()), class_names=("died", "survived"))


def load_breast_cancer_data(*, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """scikit-learn's embedded Wisconsin breast cancer set (569 × 30 numeric columns, no download), split
    stratified and seeded; ``idx_test``: row indices in scikit-learn's data."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target.astype(np.int64)
    tr, te = _split(y, test_fraction, seed)
    return Dataset(name="breast_cancer", x_train=torch.from_numpy(x[tr]), y_train=torch.from_numpy(y[tr]),
                   x_test=torch.from_numpy(x[te]), y_test=torch.from_numpy(y[te]), idx_test=torch.from_numpy(te).long(),
                   n_classes=2, kind="tabular", feature_names=tuple(str(f) for f in data.feature_names),
                   categories=((),) * x.shape[1], class_names=tuple(str(c) for c in data.target_names))


def class_order(labels: Sequence[str]) -> tuple[str, ...]:
    """The class names of a file's labels: sorted as integers when every label is one, else as strings."""
    unique = set(labels)
    try:
        return tuple(sorted(unique, key=int))
    except ValueError:
        return tuple(sorted(unique))


def _number(value: str) -> float | None:
    try:
        v = float(value)
    except ValueError:
        return None
    return v if math.isfinite(v) else None


def _read_csv(path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """The header and the (line number, fields) of every data row; blank lines only at the end."""
    if not path.is_file():
        raise XaiCoreError(f"CSV file {path} not found")
    rows: list[tuple[int, list[str]]] = []
    blank = 0
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None:
                raise XaiCoreError(f"CSV file {path} is empty; it needs a header row")
            header = [h.strip() for h in header]
            for row in reader:
                if not row or (len(row) == 1 and not row[0].strip()):
                    blank = blank or reader.line_num
                    continue
                if blank:
                    raise XaiCoreError(f"{path} line {blank}: empty line between rows")
                if len(row) != len(header):
                    raise XaiCoreError(f"{path} line {reader.line_num}: {len(row)} columns, the header has "
                                       f"{len(header)}")
                rows.append((reader.line_num, [v.strip() for v in row]))
    except (UnicodeDecodeError, csv.Error) as e:
        raise XaiCoreError(f"CSV file {path} cannot be read ({type(e).__name__}: {e})") from None
    if len(set(header)) != len(header) or not all(header):
        raise XaiCoreError(f"{path} line 1: column names must be unique and non-empty, got {header}")
    return header, rows


def load_csv(path: str | Path, *, label: str = "label", nominal: tuple[str, ...] | None = None,
             test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """A CSV file with a header row (line 1): the ``label`` column names each row's class (class names sorted,
    as integers when all are), every other column is a feature. A column is nominal when ``nominal`` names it,
    or, with ``nominal=None``, when any of its values is not a number; its categories are its sorted values.
    Missing values are refused. ``idx_test``: positions of the data rows in the file (0 = line 2)."""
    path = Path(path)
    header, rows = _read_csv(path)
    if label not in header:
        raise XaiCoreError(f"{path} has no label column {label!r} (columns: {', '.join(header)})")
    names = tuple(h for h in header if h != label)
    if not names:
        raise XaiCoreError(f"{path} has only the label column {label!r}; it needs at least one feature column")
    if nominal is not None:
        unknown = [c for c in nominal if c not in names]
        if unknown:
            raise XaiCoreError(f"{path}: nominal columns {unknown} are not feature columns (columns: "
                               f"{', '.join(names)})")
    if not rows:
        raise XaiCoreError(f"CSV file {path} has a header but no rows")
    li = header.index(label)
    cols = [header.index(c) for c in names]
    for line, row in rows:
        if not row[li]:
            raise XaiCoreError(f"{path} line {line}: empty label (column {label!r})")
        for c in cols:
            if not row[c]:
                raise XaiCoreError(f"{path} line {line}: column {header[c]!r} is empty (missing values are not "
                                   "supported)")
    is_nominal = [(name in nominal) if nominal is not None else any(_number(row[c]) is None for _, row in rows)
                  for name, c in zip(names, cols, strict=True)]
    categories = tuple(tuple(sorted({row[c] for _, row in rows})) if nom else ()
                       for c, nom in zip(cols, is_nominal, strict=True))
    x = np.empty((len(rows), len(names)), dtype=np.float32)
    for j, (c, cats) in enumerate(zip(cols, categories, strict=True)):
        index = {v: i for i, v in enumerate(cats)}
        for i, (line, row) in enumerate(rows):
            if cats:
                x[i, j] = index[row[c]]
            elif (v := _number(row[c])) is None:
                raise XaiCoreError(f"{path} line {line}: column {header[c]!r} is numeric, {row[c]!r} is not a finite "
                                   "number (list the column in nominal if it is categorical)")
            else:
                x[i, j] = v
    class_names = class_order([row[li] for _, row in rows])
    if len(class_names) < 2:
        raise XaiCoreError(f"{path}: every row has label {class_names[0]!r}; a classifier needs at least 2 classes")
    y = np.array([class_names.index(row[li]) for _, row in rows], dtype=np.int64)
    tr, te = _split(y, test_fraction, seed)
    return Dataset(name=f"csv:{path.stem}", x_train=torch.from_numpy(x[tr]), y_train=torch.from_numpy(y[tr]),
                   x_test=torch.from_numpy(x[te]), y_test=torch.from_numpy(y[te]), idx_test=torch.from_numpy(te).long(),
                   n_classes=len(class_names), kind="tabular", feature_names=names, categories=categories,
                   class_names=class_names)


def encode_rows(rows: Sequence[Sequence[str]] | np.ndarray, feature_names: Sequence[str],
                categories: Sequence[Sequence[str]]) -> np.ndarray:
    """Raw string rows (feature columns only, in ``feature_names`` order) as the (N, F) float32 a training
    :class:`Dataset` holds: nominal values coded by its ``categories``. Rows are counted from 0 (``rows[i]``)."""
    f = len(feature_names)
    if len(categories) != f:
        raise XaiCoreError(f"{len(feature_names)} feature_names but {len(categories)} categories")
    indices = [{v: i for i, v in enumerate(cats)} for cats in categories]
    out = np.empty((len(rows), f), dtype=np.float32)
    for i, row in enumerate(rows):
        if len(row) != f:
            raise XaiCoreError(f"row {i} has {len(row)} columns, training had {f}")
        for j, value in enumerate(row):
            value = str(value).strip()
            if categories[j]:
                if value not in indices[j]:
                    raise XaiCoreError(f"column {feature_names[j]!r}: value {value!r} in row {i} was not seen in "
                                       f"training (seen: {', '.join(categories[j])})")
                out[i, j] = indices[j][value]
            elif (v := _number(value)) is None:
                raise XaiCoreError(f"column {feature_names[j]!r}: value {value!r} in row {i} is not a finite number")
            else:
                out[i, j] = v
    return out


__all__ = ["TITANIC_ATTRIBUTES", "TITANIC_LOGODDS", "TITANIC_PRIORS", "class_order", "encode_rows",
           "load_breast_cancer_data", "load_csv", "titanic", "titanic_logodds"]
