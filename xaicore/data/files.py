"""A researcher's own images: an ImageFolder (one subfolder of PNG/JPEG files per class) or an ``.npz`` of arrays.

Pixels are in [0, 1] in both; normalization belongs to the model (a torchvision model's mean/std is part of its
wrapper), so heatmaps stay in pixel space. Every failure names the file: a corrupt image, an image of another size
when no ``resize`` is asked for, an empty class folder, arrays of the wrong shape.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from xaicore.data.core import Dataset, read_npz
from xaicore.errors import XaiCoreError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _split(y: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified and seeded, as the embedded digits are split (scikit-learn's ``train_test_split``); sorted
    (train, test) indices."""
    from sklearn.model_selection import train_test_split

    try:
        tr, te = train_test_split(np.arange(y.size), test_size=test_fraction, random_state=seed, stratify=y)
    except ValueError as e:  # a class with one sample, or fewer test samples than classes
        raise XaiCoreError(f"cannot split {y.size} samples of {np.unique(y).size} classes by test_fraction "
                           f"{test_fraction} with every class in both splits ({e})") from None
    return np.sort(tr), np.sort(te)


def read_image(path: str | Path, *, size: int, resize: int | None, channels: int) -> np.ndarray:
    """One image as (C, size, size) float32 in [0, 1]: with ``resize``, the shorter side scaled to ``resize``
    (bilinear) and the centre ``size`` × ``size`` cropped; without, it must be ``size`` × ``size`` already."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise XaiCoreError(f"image {path} not found")
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if resize is not None:
                w, h = im.size
                scale = resize / min(w, h)
                im = im.resize((max(size, round(w * scale)), max(size, round(h * scale))),
                               Image.Resampling.BILINEAR)
                w, h = im.size
                left, top = (w - size) // 2, (h - size) // 2
                im = im.crop((left, top, left + size, top + size))
            elif im.size != (size, size):
                raise XaiCoreError(f"image {path} is {im.size[0]}x{im.size[1]}, the data set's images are "
                                   f"{size}x{size} (data.size); set data.resize to resize and centre-crop them")
            a = np.asarray(im, dtype=np.float32) / 255.0
    except XaiCoreError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise XaiCoreError(f"image {path} cannot be read ({type(e).__name__}: {str(e)[:120]})") from None
    return a[None] if channels == 1 else np.ascontiguousarray(a.transpose(2, 0, 1))


def _class_files(root: Path) -> dict[str, list[Path]]:
    if not root.is_dir():
        raise XaiCoreError(f"image folder {root} not found (data.root)")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise XaiCoreError(f"image folder {root} has {len(classes)} class subfolder(s); an ImageFolder has one "
                           "subfolder of images per class, at least two")
    out = {}
    for c in classes:
        files = sorted(p for p in c.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise XaiCoreError(f"class folder {c} holds no image ({', '.join(IMAGE_SUFFIXES)})")
        out[c.name] = files
    return out


def load_imagefolder(root: str | Path, *, size: int, resize: int | None = None, channels: int = 3,
                     test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """torchvision's ImageFolder layout: ``root/<class>/<image>``, classes in sorted order (their index is the
    label), files in sorted order (their position in that order is the ``sample`` id). With ``root/train`` and
    ``root/test`` both ImageFolders, those are the splits; otherwise a stratified, seeded ``test_fraction``."""
    root = Path(root)
    splits = {s: root / s for s in ("train", "test")}
    if all(p.is_dir() for p in splits.values()):
        parts = {s: _class_files(p) for s, p in splits.items()}
        if list(parts["train"]) != list(parts["test"]):
            raise XaiCoreError(f"{splits['train']} and {splits['test']} have different class folders: "
                               f"{list(parts['train'])} vs {list(parts['test'])}")
        names = list(parts["train"])
        files = [f for s in ("train", "test") for c in names for f in parts[s][c]]
        y = np.array([i for s in ("train", "test") for i, c in enumerate(names) for _ in parts[s][c]])
        n_train = sum(len(v) for v in parts["train"].values())
        train_idx, test_idx = np.arange(n_train), np.arange(n_train, len(files))
    else:
        per_class = _class_files(root)
        names = list(per_class)
        files = [f for c in names for f in per_class[c]]
        y = np.array([i for i, c in enumerate(names) for _ in per_class[c]])
        train_idx, test_idx = _split(y, test_fraction, seed)
    if channels not in (1, 3):
        raise XaiCoreError(f"channels must be 1 (grey) or 3 (RGB), got {channels}")
    x = np.stack([read_image(f, size=size, resize=resize, channels=channels) for f in files])
    return Dataset(name=f"imagefolder:{root.name}", x_train=torch.from_numpy(x[train_idx]),
                   y_train=torch.from_numpy(y[train_idx]).long(), x_test=torch.from_numpy(x[test_idx]),
                   y_test=torch.from_numpy(y[test_idx]).long(), idx_test=torch.from_numpy(test_idx).long(),
                   n_classes=len(names))


def _images(a: np.ndarray, name: str, path: Path) -> np.ndarray:
    """(N, C, H, W) float32 in [0, 1] from (N, H, W), (N, C, H, W) or (N, H, W, C) with C 1 or 3; uint8 is /255."""
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4:
        raise XaiCoreError(f"{path}: {name} has shape {a.shape}; expected (N, H, W), (N, C, H, W) or (N, H, W, C)")
    if a.shape[1] not in (1, 3) and a.shape[3] in (1, 3):
        a = a.transpose(0, 3, 1, 2)
    if a.shape[1] not in (1, 3):
        raise XaiCoreError(f"{path}: {name} has {a.shape[1]} channels; expected 1 or 3")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a, dtype=np.float32) / 255.0
    if not np.issubdtype(a.dtype, np.floating) and not np.issubdtype(a.dtype, np.integer):
        raise XaiCoreError(f"{path}: {name} has dtype {a.dtype}; expected uint8 or float")
    a = np.ascontiguousarray(a, dtype=np.float32)
    if not np.isfinite(a).all():
        raise XaiCoreError(f"{path}: {name} holds NaN or inf")
    return a


def _labels(a: np.ndarray, n: int, name: str, path: Path) -> np.ndarray:
    if a.ndim != 1 or a.shape[0] != n or not np.issubdtype(a.dtype, np.integer) or (a < 0).any():
        raise XaiCoreError(f"{path}: {name} must be ({n},) non-negative integer class indices, got {a.shape} "
                           f"{a.dtype}")
    return a.astype(np.int64)


def load_npz(path: str | Path, *, test_fraction: float = 0.2, seed: int = 0) -> Dataset:
    """Arrays ``x`` and ``y`` (split stratified by ``test_fraction``), or ``x_train``, ``y_train``, ``x_test``,
    ``y_test``. Images (N, H, W), (N, C, H, W) or (N, H, W, C); uint8 scaled to [0, 1], floats taken as given."""
    path = Path(path)
    arrays = read_npz(path, ("data file", "not found (data.root)", "cannot be read as .npz without pickle"))
    if {"x_train", "y_train", "x_test", "y_test"} <= set(arrays):
        x_train, x_test = _images(arrays["x_train"], "x_train", path), _images(arrays["x_test"], "x_test", path)
        y_train = _labels(arrays["y_train"], x_train.shape[0], "y_train", path)
        y_test = _labels(arrays["y_test"], x_test.shape[0], "y_test", path)
        if x_train.shape[1:] != x_test.shape[1:]:
            raise XaiCoreError(f"{path}: x_train {x_train.shape[1:]} and x_test {x_test.shape[1:]} images differ")
        idx_test = np.arange(x_test.shape[0])
    elif {"x", "y"} <= set(arrays):
        x = _images(arrays["x"], "x", path)
        y = _labels(arrays["y"], x.shape[0], "y", path)
        train_idx, idx_test = _split(y, test_fraction, seed)
        x_train, y_train, x_test, y_test = x[train_idx], y[train_idx], x[idx_test], y[idx_test]
    else:
        raise XaiCoreError(f"{path} holds {sorted(arrays)}; expected x and y, or x_train, y_train, x_test, y_test")
    n_classes = int(max(y_train.max(), y_test.max())) + 1
    return Dataset(name=f"npz:{path.stem}", x_train=torch.from_numpy(x_train), y_train=torch.from_numpy(y_train),
                   x_test=torch.from_numpy(x_test), y_test=torch.from_numpy(y_test),
                   idx_test=torch.from_numpy(idx_test).long(), n_classes=n_classes)


__all__ = ["IMAGE_SUFFIXES", "load_imagefolder", "load_npz", "read_image"]
