"""MNIST from its IDX files (LeCun et al.), read from disk with numpy: never downloaded at run time."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch

from xaicore.data.core import Dataset
from xaicore.errors import XaiCoreError

_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file (plain or ``.gz``) of unsigned bytes; raises on a bad magic number or size."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # a corrupt or cut-short .gz (gzip.BadGzipFile is an OSError)
        raise XaiCoreError(f"{path} cannot be read: {type(e).__name__}: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise XaiCoreError(f"{path} is not an IDX file of unsigned bytes (bad magic number)")
    ndim = raw[3]
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    offset = 4 + 4 * ndim
    if len(raw) - offset != int(np.prod(dims)):
        raise XaiCoreError(f"{path} is truncated: header says {dims}, file holds {len(raw) - offset} values")
    return np.frombuffer(raw, dtype=np.uint8, offset=offset).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for cand in (root / stem, root / f"{stem}.gz", root / stem.replace("-idx", ".idx")):
        if cand.is_file():
            return cand
    raise XaiCoreError(f"MNIST file {stem}[.gz] is missing under {root}; put the four IDX files there "
                       "(and `dvc add data`), or set data.dataset: digits in params.yaml")


def check_mnist_dir(root: str | Path) -> dict[str, Path]:
    """The paths of the four IDX files under ``root``; raises naming what is missing."""
    root = Path(root)
    if not root.is_dir():
        raise XaiCoreError(f"data.dataset is mnist but {root}/ does not exist; put the MNIST IDX files there "
                           "(and `dvc add data`) or set data.dataset: digits in params.yaml")
    return {k: _find(root, stem) for k, stem in _FILES.items()}


def load_mnist(root: str | Path = "data/mnist") -> Dataset:
    """The four MNIST IDX files under ``root`` as a :class:`Dataset` of (N, 1, 28, 28) images in [0, 1]."""
    a = {k: read_idx(p) for k, p in check_mnist_dir(root).items()}
    for split in ("train", "test"):
        if a[f"x_{split}"].shape[0] != a[f"y_{split}"].shape[0]:
            raise XaiCoreError(f"MNIST {split} images and labels differ in count under {root}")
    x = {k: torch.from_numpy(a[k].astype(np.float32) / 255.0)[:, None] for k in ("x_train", "x_test")}
    y = {k: torch.from_numpy(a[k].astype(np.int64)) for k in ("y_train", "y_test")}
    return Dataset(name="mnist", **x, **y, idx_test=torch.arange(a["x_test"].shape[0]))
