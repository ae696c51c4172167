"""The dataset container shared by every stage, and its on-disk form (``.npz``, no pickle)."""

from __future__ import annotations

import dataclasses
import zipfile
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


SAVED = ("dataset file", "is missing; run the data stage first (dvc repro data)", "is corrupt")


def read_npz(path: str | Path, names: tuple[str, str, str] = SAVED) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` (never a pickle). ``names`` words the errors: (what the file is, what to say when
    it is missing, what to say when it cannot be read); the data stage's own file by default."""
    path = Path(path)
    what, missing, corrupt = names
    if not path.is_file():
        raise XaiCoreError(f"{what} {path} {missing}")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise XaiCoreError(f"{what} {path} {corrupt}: {e}") from None


def load_saved(path: str | Path) -> tuple[Dataset, dict[str, torch.Tensor]]:
    """Read what :func:`save_dataset` wrote; returns the dataset and the extra arrays."""
    arrays = read_npz(path)
    fields = {f.name for f in dataclasses.fields(Dataset)}
    ds = Dataset(
        name=str(arrays.pop("name")),
        n_classes=int(arrays.pop("n_classes")),
        **{k: torch.from_numpy(arrays.pop(k)) for k in list(arrays) if k in fields},
    )
    return ds, {k: torch.from_numpy(v) for k, v in arrays.items()}


class DatasetFile:
    """A saved dataset read in pieces: test images by slice, the training mean by streaming, so that a stage's
    memory does not grow with the data set (:func:`load_saved` reads everything). Only the small arrays (labels,
    indices) are held; images are read from the ``.npz`` member by offset (``save_dataset`` stores uncompressed).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        what, missing, corrupt = SAVED
        if not self.path.is_file():
            raise XaiCoreError(f"{what} {self.path} {missing}")
        try:
            with np.load(self.path, allow_pickle=False) as z:
                self.name = str(z["name"])
                self.y_test = torch.from_numpy(z["y_test"])
                self.idx_test = torch.from_numpy(z["idx_test"])
            self._members = {k: _npy_member(self.path, k) for k in ("x_train", "x_test")}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as e:
            raise XaiCoreError(f"{what} {self.path} {corrupt}: {e}") from None

    @property
    def n_test(self) -> int:
        return int(self.y_test.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self._members["x_test"][1][1:]

    def _rows(self, split: str, start: int, stop: int) -> np.ndarray:
        offset, shape, dtype = self._members[split]
        start, stop = max(0, start), min(stop, shape[0])
        row = int(np.prod(shape[1:]))
        with self.path.open("rb") as f:
            f.seek(offset + start * row * dtype.itemsize)
            out = np.fromfile(f, dtype=dtype, count=max(0, stop - start) * row)
        return out.reshape(-1, *shape[1:])

    def test_images(self, start: int, stop: int) -> torch.Tensor:
        """Test images ``start:stop`` (a copy)."""
        return torch.from_numpy(self._rows("x_test", start, stop))

    def test_images_at(self, positions: np.ndarray) -> torch.Tensor:
        """Test images at ``positions`` (read as the one range that spans them)."""
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size == 0:
            return self.test_images(0, 0)
        lo = int(positions.min())
        return torch.from_numpy(self._rows("x_test", lo, int(positions.max()) + 1)[positions - lo])

    def train_mean(self, block: int = 4096) -> torch.Tensor:
        """The training images' mean (1, C, H, W), summed in float64 a block at a time."""
        _, shape, _ = self._members["x_train"]
        total = np.zeros(shape[1:], dtype=np.float64)
        for a in range(0, shape[0], block):
            total += self._rows("x_train", a, a + block).sum(0, dtype=np.float64)
        return torch.from_numpy((total / shape[0])[None].astype(np.float32))


def _npy_member(path: Path, name: str) -> tuple[int, tuple[int, ...], np.dtype]:
    """(byte offset of the data, shape, dtype) of the uncompressed ``name.npy`` member of an ``.npz``."""
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(f"{name}.npy")
    if info.compress_type != zipfile.ZIP_STORED:
        raise ValueError(f"{name} is compressed; write the file with save_dataset")
    with path.open("rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)
        f.seek(info.header_offset + 30 + int.from_bytes(local[26:28], "little")
               + int.from_bytes(local[28:30], "little"))
        version = np.lib.format.read_magic(f)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
            np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(f)
        if fortran:
            raise ValueError(f"{name} is stored in Fortran order")
        return f.tell(), tuple(shape), dtype


def load_dataset(name: str, *, root: str | Path = "data/mnist", size: int = 28, test_fraction: float = 0.2,
                 seed: int = 0, resize: int | None = None, channels: int | None = None) -> Dataset:
    """The dataset params.yaml names: ``digits`` (embedded), ``mnist`` (IDX files under ``root``), ``imagefolder``
    (class subfolders of images under ``root``) or ``npz`` (arrays in the file ``root``)."""
    from xaicore.data.digits import load_digits28
    from xaicore.data.files import load_imagefolder, load_npz
    from xaicore.data.mnist import load_mnist

    if name == "digits":
        return load_digits28(size=size, test_fraction=test_fraction, seed=seed)
    if name == "mnist":
        return load_mnist(root)
    if name == "imagefolder":
        return load_imagefolder(root, size=size, resize=resize, channels=channels or 3,
                                test_fraction=test_fraction, seed=seed)
    if name == "npz":
        return load_npz(root, test_fraction=test_fraction, seed=seed)
    raise XaiCoreError(f"unknown dataset {name!r}; expected digits, mnist, imagefolder or npz")
