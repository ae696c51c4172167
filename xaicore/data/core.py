"""The dataset container shared by every stage, and its on-disk form (``.npz``, no pickle)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from xaicore.errors import XaiCoreError


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Images in [0, 1] as (N, C, H, W) float32 tensors with long labels.

    ``idx_test`` holds each test sample's index in the source dataset, the archive's ``sample`` coordinate.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    idx_test: torch.Tensor
    n_classes: int = 10

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 4 or x.shape[0] != y.shape[0]:
                raise XaiCoreError(f"{self.name}: x_{split} {tuple(x.shape)} and y_{split} {tuple(y.shape)} disagree")
        if self.idx_test.shape[0] != self.x_test.shape[0]:
            raise XaiCoreError(f"{self.name}: idx_test does not match x_test")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def randomized_labels(y: torch.Tensor, seed: int) -> torch.Tensor:
    """Adebayo et al.'s data randomization: the training labels, permuted with a fixed seed."""
    rng = np.random.default_rng([seed, 0xDA7A])
    return torch.from_numpy(y.numpy()[rng.permutation(y.shape[0])].copy())


def save_dataset(ds: Dataset, path: str | Path, **extra: np.ndarray) -> None:
    """Write the dataset (and extra arrays, e.g. randomized labels) as one uncompressed ``.npz``."""
    arrays = {f.name: getattr(ds, f.name).numpy() for f in dataclasses.fields(ds)
              if f.name.startswith(("x_", "y_", "idx_"))}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial.npz")
    np.savez(tmp, name=np.array(ds.name), n_classes=np.array(ds.n_classes), **arrays, **extra)
    tmp.replace(path)


def load_saved(path: str | Path) -> tuple[Dataset, dict[str, torch.Tensor]]:
    """Read what :func:`save_dataset` wrote; returns the dataset and the extra arrays."""
    path = Path(path)
    if not path.is_file():
        raise XaiCoreError(f"dataset file {path} is missing; run the data stage first (dvc repro data)")
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise XaiCoreError(f"dataset file {path} is corrupt: {e}") from None
    fields = {f.name for f in dataclasses.fields(Dataset)}
    ds = Dataset(
        name=str(arrays.pop("name")),
        n_classes=int(arrays.pop("n_classes")),
        **{k: torch.from_numpy(arrays.pop(k)) for k in list(arrays) if k in fields},
    )
    return ds, {k: torch.from_numpy(v) for k, v in arrays.items()}


def load_dataset(name: str, *, root: str | Path = "data/mnist", size: int = 28, test_fraction: float = 0.2,
                 seed: int = 0) -> Dataset:
    """The dataset params.yaml names: ``digits`` (embedded) or ``mnist`` (IDX files under ``root``)."""
    from xaicore.data.digits import load_digits28
    from xaicore.data.mnist import load_mnist

    if name == "digits":
        return load_digits28(size=size, test_fraction=test_fraction, seed=seed)
    if name == "mnist":
        return load_mnist(root)
    raise XaiCoreError(f"unknown dataset {name!r}; expected digits or mnist")
