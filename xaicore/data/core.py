"""The dataset container shared by every stage, and its on-disk form (``.npz``, no pickle)."""

from __future__ import annotations

import dataclasses
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from xaicore.atomic import atomic_path
from xaicore.engine import batch_slices
from xaicore.errors import XaiCoreError
from xaicore.kinds import KINDS, PAD, UNK  # noqa: F401  (re-exported: xaicore.data.PAD, ...)

_META = ("kind", "feature_names", "categories", "vocab", "class_names")


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Two splits of one input kind with long labels.

    * ``image``: (N, C, H, W) float tensors (pixels in [0, 1]).
    * ``tabular``: (N, F) float32, one column per ``feature_names``; ``categories[j]`` names the values of a
      nominal column j, stored as integer codes 0..K−1, and is ``()`` for a numeric column.
    * ``text``: (N, T) int64 token ids into ``vocab`` (``vocab[PAD] == "<pad>"``, ``vocab[UNK] == "<unk>"``),
      padded with PAD at the end.

    ``idx_test`` holds each test sample's index in the source dataset, the archive's ``sample`` coordinate.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    idx_test: torch.Tensor
    n_classes: int = 10
    kind: str = "image"
    feature_names: tuple[str, ...] = ()
    categories: tuple[tuple[str, ...], ...] = ()
    vocab: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for key in ("feature_names", "vocab", "class_names"):  # JSON gives lists: keep the fields hashable
            object.__setattr__(self, key, tuple(str(v) for v in getattr(self, key)))
        object.__setattr__(self, "categories", tuple(tuple(str(v) for v in c) for c in self.categories))
        if self.kind not in KINDS:
            raise XaiCoreError(f"{self.name}: unknown data kind {self.kind!r}; expected one of {', '.join(KINDS)}")
        if self.kind != "tabular" and (self.feature_names or self.categories):
            raise XaiCoreError(f"{self.name}: feature_names and categories describe tabular data, not {self.kind}")
        if self.kind != "text" and self.vocab:
            raise XaiCoreError(f"{self.name}: a vocab belongs to text data, not {self.kind}")
        if self.class_names and len(self.class_names) != self.n_classes:
            raise XaiCoreError(f"{self.name}: {len(self.class_names)} class_names for {self.n_classes} classes")
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if (self.kind == "image" and x.ndim != 4) or x.shape[0] != y.shape[0]:
                raise XaiCoreError(f"{self.name}: x_{split} {tuple(x.shape)} and y_{split} {tuple(y.shape)} disagree")
            if self.kind == "image" and not x.is_floating_point():
                raise XaiCoreError(f"{self.name}: x_{split} images must be float (N, C, H, W), got {x.dtype}")
            if self.kind == "tabular":
                self._check_tabular(x, split)
            elif self.kind == "text":
                self._check_text(x, split)
        if self.idx_test.shape[0] != self.x_test.shape[0]:
            raise XaiCoreError(f"{self.name}: idx_test does not match x_test")

    def _check_tabular(self, x: torch.Tensor, split: str) -> None:
        f = len(self.feature_names)
        if x.ndim != 2 or x.dtype != torch.float32:
            raise XaiCoreError(f"{self.name}: tabular x_{split} must be (N, F) float32, got {tuple(x.shape)} "
                               f"{x.dtype}")
        if not x.shape[1] == f == len(self.categories):
            raise XaiCoreError(f"{self.name}: x_{split} has {x.shape[1]} columns, feature_names {f}, categories "
                               f"{len(self.categories)}; they must agree")
        for j, cats in enumerate(self.categories):
            col = x[:, j]
            bad = ~torch.isfinite(col)
            if cats:
                bad |= (col != col.round()) | (col < 0) | (col >= len(cats))
            if bool(bad.any()):
                row = int(bad.nonzero()[0, 0])
                what = f"a code of its {len(cats)} categories" if cats else "a finite number"
                raise XaiCoreError(f"{self.name}: column {self.feature_names[j]!r} of x_{split} holds "
                                   f"{float(col[row])} in row {row}, not {what}")

    def _check_text(self, x: torch.Tensor, split: str) -> None:
        if self.vocab[:2] != ("<pad>", "<unk>"):
            raise XaiCoreError(f"{self.name}: a text vocab starts with '<pad>', '<unk>', got {list(self.vocab[:2])}")
        if x.ndim != 2 or x.dtype != torch.int64:
            raise XaiCoreError(f"{self.name}: text x_{split} must be (N, T) int64 token ids, got {tuple(x.shape)} "
                               f"{x.dtype}")
        bad = ((x < 0) | (x >= len(self.vocab))).any(1)
        if bool(bad.any()):
            row = int(bad.nonzero()[0, 0])
            raise XaiCoreError(f"{self.name}: x_{split} row {row} holds token ids outside [0, {len(self.vocab)}) "
                               f"(the vocab's size): {x[row].tolist()}")

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def nominal(self) -> tuple[int, ...]:
        """Tabular: the indices of the nominal columns (empty for other kinds)."""
        return tuple(j for j, cats in enumerate(self.categories) if cats)


def randomized_labels(y: torch.Tensor, seed: int) -> torch.Tensor:
    """Adebayo et al.'s data randomization: the training labels, permuted with a fixed seed."""
    rng = np.random.default_rng([seed, 0xDA7A])
    return torch.from_numpy(y.numpy()[rng.permutation(y.shape[0])].copy())


def save_dataset(ds: Dataset, path: str | Path, **extra: np.ndarray) -> None:
    """Write the dataset (and extra arrays, e.g. randomized labels) as one uncompressed ``.npz``."""
    arrays = {f.name: getattr(ds, f.name).numpy() for f in dataclasses.fields(ds)
              if f.name.startswith(("x_", "y_", "idx_"))}
    meta = json.dumps({k: getattr(ds, k) for k in _META})  # a 0-d unicode array: read back without pickle
    with atomic_path(path, suffix=".npz") as tmp:  # np.savez appends .npz to a name without it
        np.savez(tmp, name=np.array(ds.name), n_classes=np.array(ds.n_classes), dataset_meta=np.array(meta),
                 **arrays, **extra)


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
    """Read what :func:`save_dataset` wrote; returns the dataset and the extra arrays. A file written before
    datasets had a kind reads as images."""
    arrays = read_npz(path)
    fields = {f.name for f in dataclasses.fields(Dataset)} - set(_META)
    meta = {}
    if "dataset_meta" in arrays:
        try:
            meta = json.loads(str(arrays.pop("dataset_meta")))
        except json.JSONDecodeError as e:
            raise XaiCoreError(f"{SAVED[0]} {path} {SAVED[2]}: its dataset_meta is not JSON ({e})") from None
    ds = Dataset(
        name=str(arrays.pop("name")),
        n_classes=int(arrays.pop("n_classes")),
        **{k: torch.from_numpy(arrays.pop(k)) for k in list(arrays) if k in fields},
        **{k: meta[k] for k in _META if k in meta},
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
        for s in batch_slices(shape[0], block):
            total += self._rows("x_train", s.start, s.stop).sum(0, dtype=np.float64)
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
