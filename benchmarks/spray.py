"""SpRAy benchmark: :func:`xaicore.analysis.spray.spray` against CoRelAy's pipeline on the same heatmaps.

The data: ``--n`` synthetic 28×28 single-channel heatmaps, a central blob plus N(0, 0.1²) noise per pixel, a
random 10 % with a strong mark in the top-left corner (the planted Clever Hans cluster). Timed:

* ``spray size=8`` and ``spray size=None``: the whole call from the (N, 1, 28, 28) heatmaps to the labels
  (channel sum, pooling, normalisation, kNN affinity, Laplacian, eigenpairs, eigengap, k-means); N above
  ``DENSE_MAX`` takes ARPACK, and ``spray size=8, LAPACK`` forces the dense solver for comparison;
* ``CoRelAy``: CoRelAy 1.0.0's processors on the same normalised points (so without our preprocessing):
  ``SciPyPDist`` → ``SparseKNN(n_neighbors=10)`` → ``SymmetricNormalLaplacian`` → ``EigenDecomposition(n_eigval=11)``
  → ``KMeans`` (n_init=10, on its row-normalised eigenvectors) with our eigengap's number of clusters; once with
  its default eigsh ``which="LM"`` (largest magnitude: it can take Laplacian eigenvalues near 2, not the
  smallest) and once with ``which="LA"`` (the smallest Laplacian eigenvalues, as SpRAy means), k-means on all
  11 eigenvectors (its default) and, ``k cols``, on those of the k smallest eigenvalues only (as we do).

``--threads`` torch, BLAS and OpenMP threads (threadpoolctl); medians of ``--repeats``; the load average is
printed with the figures, and each labeling's adjusted Rand index against the planted one and against ours.

    .venv/bin/python benchmarks/spray.py [--n 2000] [--threads 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

import xaicore.analysis.spray as spray_module  # noqa: E402
from xaicore.analysis.spray import downsize, spray  # noqa: E402


def heatmaps(n: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:28, :28]
    maps = np.exp(-((y - 13.5) ** 2 + (x - 13.5) ** 2) / (2 * 4.0 ** 2)) + 0.1 * rng.standard_normal((n, 28, 28))
    hans = np.zeros(n, dtype=np.int64)
    hans[rng.choice(n, n // 10, replace=False)] = 1
    maps[hans == 1, :5, :5] += 1.0
    return torch.from_numpy(maps[:, None].astype(np.float32)), hans


def corelay_labels(points: np.ndarray, n_clusters: int, which: str, first: bool = False, k_max: int = 10,
                   n_neighbors: int = 10) -> np.ndarray:
    """CoRelAy's pipeline; ``first``: k-means on the eigenvectors of the ``n_clusters`` smallest eigenvalues only
    (CoRelAy's ``KMeans(index=...)``), else on all k_max + 1 as its processors do by default."""
    from corelay.processor.affinity import SparseKNN
    from corelay.processor.clustering import KMeans
    from corelay.processor.distance import SciPyPDist
    from corelay.processor.embedding import EigenDecomposition
    from corelay.processor.laplacian import SymmetricNormalLaplacian

    affinity = SparseKNN(n_neighbors=n_neighbors)(SciPyPDist(metric="euclidean")(points))
    values, vectors = EigenDecomposition(n_eigval=k_max + 1, which=which)(SymmetricNormalLaplacian()(affinity))
    index = (slice(None), np.argsort(values)[:n_clusters].tolist()) if first else (slice(None),)
    return KMeans(n_clusters=n_clusters, index=index, kwargs={"n_init": 10, "random_state": 0})(vectors)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from threadpoolctl import threadpool_limits

    threadpool_limits(args.threads)
    import corelay.processor.embedding  # noqa: F401  (imported before timing: CoRelAy and sklearn load slowly)
    from sklearn.metrics import adjusted_rand_score

    print(f"load average before: {os.getloadavg()[0]:.2f}; torch {torch.__version__}, {args.threads} thread(s); "
          f"N = {args.n} maps of 28×28")
    relevance, hans = heatmaps(args.n)

    def timed(fn) -> tuple[float, object]:
        times, out = [], None
        for _ in range(args.repeats):
            start = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times), out

    def forced_dense():
        saved, spray_module.DENSE_MAX = spray_module.DENSE_MAX, 10 ** 9
        try:
            return spray(relevance, size=8)
        finally:
            spray_module.DENSE_MAX = saved

    rows = []
    for size in (8, None):
        seconds, result = timed(lambda size=size: spray(relevance, size=size))
        rows.append((f"spray size={size}", seconds, result.labels, result.n_clusters))
        flat = downsize(relevance, size)
        points = flat / np.linalg.norm(flat, axis=1, keepdims=True)
        for which, first in (("LM", False), ("LA", False), ("LA", True)):
            ref_seconds, ref_labels = timed(lambda p=points, k=result.n_clusters, w=which, f=first:
                                            corelay_labels(p, k, w, f))
            name = f"  CoRelAy {which}{', k cols' if first else ''}"
            rows.append((name, ref_seconds, ref_labels, result.n_clusters))
    dense_seconds, dense = timed(forced_dense)
    rows.append(("spray size=8, LAPACK", dense_seconds, dense.labels, dense.n_clusters))

    print(f"{'':26s} {'median s':>9s} {'× ours':>7s} {'k':>3s} {'ARI planted':>12s} {'ARI vs ours':>12s}")
    ours_seconds, ours_labels = rows[0][1], rows[0][2]
    for name, seconds, labels, k in rows:
        if name.startswith("spray"):
            ours_seconds, ours_labels = seconds, labels
        print(f"{name:26s} {seconds:9.3f} {seconds / ours_seconds:6.2f}× {k:3d} "
              f"{adjusted_rand_score(hans, labels):12.3f} {adjusted_rand_score(ours_labels, labels):12.3f}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
