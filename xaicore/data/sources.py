"""Where a dataset comes from: the names params.yaml takes and the loader behind each."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xaicore.data.core import Dataset
from xaicore.data.digits import load_digits28
from xaicore.data.files import load_imagefolder, load_npz
from xaicore.data.mnist import load_mnist
from xaicore.data.tabular import load_breast_cancer_data, load_csv, titanic
from xaicore.data.text import load_textfile, sentiment
from xaicore.errors import XaiCoreError

#: the dataset names params.yaml takes, per kind of input (data.dataset, tabular.dataset, text.dataset)
IMAGE_DATASETS = ("digits", "mnist", "imagefolder", "npz")
TABULAR_DATASETS = ("titanic", "breast_cancer", "csv")
TEXT_DATASETS = ("sentiment", "textfile")
DATASETS = IMAGE_DATASETS + TABULAR_DATASETS + TEXT_DATASETS


def load_dataset(name: str, *, root: str | Path = "data/mnist", size: int = 28, test_fraction: float = 0.2,
                 seed: int = 0, resize: int | None = None, channels: int | None = None, label: str = "label",
                 nominal: Sequence[str] | None = None, max_len: int | None = None) -> Dataset:
    """The dataset params.yaml names. Images: ``digits`` (embedded), ``mnist`` (IDX files under ``root``),
    ``imagefolder`` (class subfolders of images under ``root``) or ``npz`` (arrays in the file ``root``).
    Tabular: ``breast_cancer`` (embedded), ``titanic`` (generated), ``csv`` (the file ``root``; ``label``,
    ``nominal``). Text: ``sentiment`` (generated), ``textfile`` (the file ``root``; ``max_len``)."""
    split = dict(test_fraction=test_fraction, seed=seed)
    text_len = {} if max_len is None else {"max_len": max_len}
    if name == "digits":
        return load_digits28(size=size, **split)
    if name == "mnist":
        return load_mnist(root)
    if name == "imagefolder":
        return load_imagefolder(root, size=size, resize=resize, channels=channels or 3, **split)
    if name == "npz":
        return load_npz(root, **split)
    if name == "breast_cancer":
        return load_breast_cancer_data(**split)
    if name == "titanic":
        return titanic(**split)
    if name == "csv":
        return load_csv(root, label=label, nominal=None if nominal is None else tuple(nominal), **split)
    if name == "sentiment":
        return sentiment(**text_len, **split)
    if name == "textfile":
        return load_textfile(root, **text_len, **split)
    raise XaiCoreError(f"unknown dataset {name!r}; expected {', '.join(DATASETS[:-1])} or {DATASETS[-1]}")
