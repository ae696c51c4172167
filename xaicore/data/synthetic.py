"""An MNIST-sized data set without a download: elastic deformations (Simard et al. 2003, §2) of the embedded
scikit-learn digits, written as the four MNIST IDX files so that ``data.dataset: mnist`` reads them as it reads
real MNIST. For scale tests and benchmarks (70,000 images by default), never for accuracy claims.

Each image is a random embedded digit (training images from the digits' training split, test images from its
test split, so no test image is a deformation of a training one), displaced by a random field smoothed with a
Gaussian of ``sigma`` pixels and scaled by ``alpha``, rotated by up to ``max_rotation`` degrees, and stored as
bytes. The whole set is a function of ``seed``.

    python -m xaicore.data.synthetic data/mnist_like --train 60000 --test 10000
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from xaicore.atomic import write_bytes
from xaicore.data.mnist import _FILES
from xaicore.engine import batch_slices

BATCH = 5000  # images deformed at once (memory ~ 25 float64 arrays of BATCH x 28 x 28)


def _write_idx(path: Path, data: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, data.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in data.shape)
    write_bytes(path, header + np.ascontiguousarray(data, dtype=np.uint8).tobytes())


def elastic(images: np.ndarray, rng: np.random.Generator, *, alpha: float = 34.0, sigma: float = 4.0,
            max_rotation: float = 10.0) -> np.ndarray:
    """(N, H, W) images in [0, 1], each deformed by its own smoothed random field and rotation (bilinear)."""
    from scipy.ndimage import gaussian_filter, map_coordinates

    n, h, w = images.shape
    dy = gaussian_filter(rng.uniform(-1, 1, (n, h, w)), sigma=(0, sigma, sigma), mode="constant") * alpha
    dx = gaussian_filter(rng.uniform(-1, 1, (n, h, w)), sigma=(0, sigma, sigma), mode="constant") * alpha
    theta = np.deg2rad(rng.uniform(-max_rotation, max_rotation, n))[:, None, None]
    yy, xx = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    ry = np.cos(theta) * yy - np.sin(theta) * xx + (h - 1) / 2 + dy
    rx = np.sin(theta) * yy + np.cos(theta) * xx + (w - 1) / 2 + dx
    nn = np.broadcast_to(np.arange(n, dtype=np.float64)[:, None, None], (n, h, w))
    return map_coordinates(images, [nn, ry, rx], order=1, mode="constant", cval=0.0).clip(0.0, 1.0)


def write_mnist_like(root: str | Path, *, n_train: int = 60_000, n_test: int = 10_000, seed: int = 0,
                     progress: bool = False) -> Path:
    """Write the four IDX files of an MNIST-sized set under ``root`` (see the module docstring)."""
    from tqdm.auto import tqdm

    from xaicore.data.digits import load_digits28

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    base = load_digits28(seed=seed)
    rng = np.random.default_rng(seed)
    bar = tqdm(total=n_train + n_test, desc="deforming digits", unit="image", disable=not progress)
    for split, n, x, y in (("train", n_train, base.x_train, base.y_train), ("test", n_test, base.x_test,
                                                                            base.y_test)):
        src = x[:, 0].numpy().astype(np.float64)
        labels = y.numpy()
        pick = rng.integers(0, len(labels), n)
        out = np.empty((n, *src.shape[1:]), dtype=np.uint8)
        for s in batch_slices(n, BATCH):
            out[s] = np.rint(elastic(src[pick[s]], rng) * 255.0)
            bar.update(s.stop - s.start)
        _write_idx(root / _FILES[f"x_{split}"], out)
        _write_idx(root / _FILES[f"y_{split}"], labels[pick].astype(np.uint8))
    bar.close()
    return root


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m xaicore.data.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="folder for the four IDX files (then set data.dataset: mnist, data.root: OUT)")
    parser.add_argument("--train", type=int, default=60_000, help="training images (default 60000)")
    parser.add_argument("--test", type=int, default=10_000, help="test images (default 10000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    write_mnist_like(args.out, n_train=args.train, n_test=args.test, seed=args.seed, progress=True)
    print(f"wrote {args.train} + {args.test} images to {args.out}/")


if __name__ == "__main__":
    main()
