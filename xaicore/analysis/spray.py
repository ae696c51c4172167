"""Spectral Relevance Analysis, SpRAy (Lapuschkin et al. 2019, "Unmasking Clever Hans predictors and assessing
what machines really learn", Nature Communications 10:1096; survey §7.3): spectral clustering of the heatmaps of
one class, to find the groups of inputs the model decides on for different reasons (a Clever Hans strategy shows
up as a small, compact cluster with its own eigengap).

Definitions:

* input: ``relevance`` (N, C, H, W), the heatmaps of N inputs for one class, as a torch tensor, numpy array or
  xarray DataArray (dims ending in channel, y, x; a dask-backed one is computed once).
* preprocessing (:func:`downsize`): each heatmap is summed over its channels, R_n (H, W), and then sum-pooled to
  ``size``×``size``: cell (i, j) is the sum of R_n over rows ⌊iH/s⌋ .. ⌈(i+1)H/s⌉ − 1 and columns
  ⌊jW/s⌋ .. ⌈(j+1)W/s⌉ − 1 (s = ``size``; the bins of ``torch.nn.functional.adaptive_avg_pool2d``, summed
  instead of averaged). When s divides H and W this is the plain block sum over (H/s)×(W/s) blocks; otherwise
  neighbouring bins may share one row or column. ``size=None``: no pooling. Each pooled map is flattened to a
  point p_n (s², float64) and divided by its L2 norm, p_n ← p_n/‖p_n‖₂ (a zero map stays zero), so that maps are
  compared by where their relevance lies, not by how much there is (our choice of normalisation).
* affinity (:func:`knn_affinity`): Euclidean distances d(m, n) = ‖p_m − p_n‖₂; each point is joined to its
  k = ``n_neighbors`` nearest *other* points (itself excluded even when duplicates are at distance 0; equal
  distances go to the lower index) with weight 1, giving B (N, N); the affinity is A = (B + Bᵀ)/2, so an edge
  chosen by both ends weighs 1 and one chosen by one end weighs 1/2. This is CoRelAy's ``SparseKNN`` (the SpRAy
  toolkit of Anders et al.), which differs only on exact ties and duplicate points.
* Laplacian (:func:`normalized_laplacian`): L = I − D^(−1/2) A D^(−1/2), D = diag(Σ_m A_nm), the symmetric
  normalised Laplacian (Ng, Jordan & Weiss 2002; von Luxburg 2007). Every node has degree ≥ k/2 > 0.
* spectrum: its smallest ``k_max`` + 1 eigenvalues 0 ≈ λ₁ ≤ λ₂ ≤ … ≤ λ_(k_max+1) (≤ 2) and their unit
  eigenvectors U (N, k_max + 1), each column's entry of largest magnitude made positive. Exact LAPACK
  (``scipy.linalg.eigh``, only the wanted eigenpairs) for N ≤ 500; above, ARPACK Lanczos
  (``scipy.sparse.linalg.eigsh``, to machine precision, deterministic start vector from ``seed``) on the largest
  algebraic eigenvalues μ of the sparse D^(−1/2) A D^(−1/2), λ = 1 − μ, falling back to LAPACK if it does not
  converge or k_max + 1 > N/10.
* eigengap: g_k = λ_(k+1) − λ_k for k = 1..k_max (1-based; the gap after the k-th smallest eigenvalue), and the
  number of clusters k̂ = argmax_k g_k (the smallest such k on ties). ``n_clusters`` given overrides k̂.
* clusters: k-means (scikit-learn ``KMeans``, n_init=10, random_state=``seed``) on the rows of U[:, :k̂], each
  row divided by its L2 norm (Ng, Jordan & Weiss 2002). Labels are renumbered by cluster size, largest first
  (ties: the cluster whose first member comes first), so label 0 is the majority strategy. k̂ = 1: all labels 0.
* t-SNE (``embedding=True``): a 2-D ``sklearn.manifold.TSNE`` (perplexity min(30, (N − 1)/3), PCA start,
  random_state=``seed``) of the whole spectral embedding U (N, k_max + 1) with its rows normalised to unit
  length (our choice: the space k-means works in, at full width); it is for looking at, the clusters do not use
  it.

Same input and seed: the same result (bitwise, on the same machine and thread count).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any

import numpy as np

from xaicore.engine import batch_slices
from xaicore.errors import XaiCoreError, require_finite

#: Up to this many maps the eigenpairs come from dense LAPACK; above, from sparse ARPACK.
DENSE_MAX = 500
#: Elements of the distance matrix computed at once (32 MiB of float64): blocks of rows keep memory O(N).
_BLOCK_ELEMENTS = 1 << 22


@dataclasses.dataclass(frozen=True, eq=False)
class SprayResult:
    """SpRAy's result; see the module docstring for the definitions.

    ``labels`` (N,) int64 cluster of each map, 0 the largest; ``eigenvalues`` (k_max + 1,) float64 the smallest
    eigenvalues of the normalised Laplacian, ascending; ``n_clusters`` the eigengap's k̂ (or the ``n_clusters``
    asked for); ``eigengap`` (k_max,) float64 g_k = λ_(k+1) − λ_k; ``embedding`` (N, k_max + 1) the eigenvectors
    (unit columns, rows not normalised); ``tsne`` (N, 2) or None.
    """

    labels: np.ndarray
    eigenvalues: np.ndarray
    n_clusters: int
    eigengap: np.ndarray
    embedding: np.ndarray
    tsne: np.ndarray | None

    def prototypes(self, values: Any) -> Any:
        """The mean of ``values`` (N, ...) over each cluster's members: (n_clusters, ...), e.g. the mean heatmap
        or the mean input image of every cluster. A torch tensor gives a tensor (its dtype and device), anything
        else (numpy, xarray) a numpy array."""
        import torch

        n = len(self.labels)
        if isinstance(values, torch.Tensor):
            if values.ndim < 1 or values.shape[0] != n:
                raise XaiCoreError(f"prototypes need one row per map: expected {n} rows, got shape "
                                   f"{tuple(values.shape)}")
            labels = torch.as_tensor(self.labels, device=values.device)
            if not (values.is_floating_point() or values.is_complex()):
                values = values.double()
            return torch.stack([values[labels == c].mean(0) for c in range(self.n_clusters)])
        array = _as_array(values)
        if array.ndim < 1 or array.shape[0] != n:
            raise XaiCoreError(f"prototypes need one row per map: expected {n} rows, got shape {array.shape}")
        return np.stack([array[self.labels == c].mean(0) for c in range(self.n_clusters)])


# --- input ------------------------------------------------------------------------------------------------

def _as_array(values: Any) -> np.ndarray:
    """A numpy view of a torch tensor, numpy array or (possibly dask-backed) xarray DataArray, computed once."""
    import torch

    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        return (values.float() if values.dtype == torch.bfloat16 else values).numpy()
    if hasattr(values, "dims") and hasattr(values, "values"):  # xarray: .values computes a dask array once
        return np.asarray(values.values)
    return np.asarray(values)


def _check_relevance(values: np.ndarray) -> None:
    if values.ndim != 4:
        raise XaiCoreError(f"relevance must be (N, C, H, W) heatmaps of one class, got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.floating) or np.issubdtype(values.dtype, np.integer)):
        raise XaiCoreError(f"relevance must hold real numbers, got dtype {values.dtype}")
    require_finite(values, "relevance")


def _check_size(size: int | None, height: int, width: int) -> None:
    if size is None:
        return
    if isinstance(size, bool) or not isinstance(size, numbers.Integral) or size < 1:
        raise XaiCoreError(f"size must be a positive int or None, got {size!r}")
    if size > height or size > width:
        raise XaiCoreError(f"size {size} is larger than the heatmaps ({height}×{width}); use size ≤ "
                           f"{min(height, width)} or None")


def _pool_matrix(length: int, size: int) -> np.ndarray:
    """(size, length) 0/1: row i marks positions ⌊i·length/size⌋ .. ⌈(i+1)·length/size⌉ − 1."""
    pool = np.zeros((size, length))
    for i in range(size):
        pool[i, (i * length) // size:-((-(i + 1) * length) // size)] = 1.0
    return pool


def downsize(relevance: Any, size: int | None) -> np.ndarray:
    """(N, size·size) float64: the heatmaps (N, C, H, W) summed over channels and sum-pooled to size×size
    (block sums when size divides H and W; the bins of adaptive average pooling, summed, otherwise), flattened
    row by row. ``size=None``: (N, H·W), no pooling. Not normalised (:func:`spray` divides by the L2 norm)."""
    values = _as_array(relevance)
    _check_relevance(values)
    _check_size(size, values.shape[2], values.shape[3])
    return _downsize(values, size)


def _downsize(values: np.ndarray, size: int | None) -> np.ndarray:
    n, _, height, width = values.shape
    maps = values.astype(np.float64).sum(1)
    if size is None:
        return maps.reshape(n, height * width)
    if height % size == 0 and width % size == 0:
        pooled = maps.reshape(n, size, height // size, size, width // size).sum((2, 4))
    else:
        pooled = _pool_matrix(height, size) @ maps @ _pool_matrix(width, size).T
    return pooled.reshape(n, size * size)


def _normalise_rows(points: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(points, axis=1, keepdims=True)
    return np.divide(points, norms, out=np.zeros_like(points), where=norms > 0)


# --- graph ------------------------------------------------------------------------------------------------

def _check_neighbors(n_neighbors: int, n: int) -> None:
    if isinstance(n_neighbors, bool) or not isinstance(n_neighbors, numbers.Integral) or n_neighbors < 1:
        raise XaiCoreError(f"n_neighbors must be a positive int, got {n_neighbors!r}")
    if n < n_neighbors + 1:
        raise XaiCoreError(f"too few maps: {n} maps cannot each have {n_neighbors} neighbours; give at least "
                           f"{n_neighbors + 1} maps or lower n_neighbors")


def knn_affinity(points: np.ndarray, n_neighbors: int) -> Any:
    """(N, N) ``scipy.sparse.csr_matrix`` A = (B + Bᵀ)/2, B_mn = 1 when n is one of the ``n_neighbors`` points
    nearest to m in Euclidean distance (m itself excluded; equal distances go to the lower index), else 0.

    Distances are screened with the Gram identity ‖x − y‖² = ‖x‖² + ‖y‖² − 2x·y (matrix products, in blocks of
    rows) and every point that could be among the k nearest within that identity's rounding-error bound is
    re-measured exactly as ‖x − y‖₂ before the choice, so the result is that of exact pairwise distances.
    """
    import scipy.sparse

    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2:
        raise XaiCoreError(f"points must be (N, D), got shape {points.shape}")
    require_finite(points, "points")
    n, dim = points.shape
    _check_neighbors(n_neighbors, n)
    k = int(n_neighbors)
    squares = np.einsum("ij,ij->i", points, points)
    # |computed − exact| of the Gram-identity d² for a row i and any column: a worst-case bound on the dot
    # products' and the sums' rounding, 4(D + 4)·u·(‖x_i‖² + max_j ‖x_j‖²)
    slack = 4 * (dim + 4) * np.finfo(np.float64).eps * (squares + squares.max())
    rows, cols = [], []
    step = max(1, _BLOCK_ELEMENTS // n)
    for s in batch_slices(n, step):
        start = s.start
        block = np.arange(start, s.stop)
        screen = squares[block, None] + squares[None, :] - 2.0 * (points[block] @ points.T)
        screen[block - start, block] = np.inf
        kth = np.partition(screen, k - 1, axis=1)[:, k - 1]
        r, c = np.nonzero(screen <= (kth + 2 * slack[block])[:, None])
        rows.append(r + start)
        cols.append(c)
    row, col = np.concatenate(rows), np.concatenate(cols)
    diff = points[row] - points[col]
    exact = np.sqrt(np.einsum("ij,ij->i", diff, diff))
    order = np.lexsort((col, exact, row))  # by row, then distance, then the lower index
    row, col = row[order], col[order]
    first = np.searchsorted(row, np.arange(n))
    keep = np.arange(len(row)) - first[row] < k
    directed = scipy.sparse.csr_matrix((np.ones(n * k), (row[keep], col[keep])), shape=(n, n))
    affinity = ((directed + directed.T) / 2.0).tocsr()
    affinity.sort_indices()
    return affinity


def normalized_laplacian(affinity: Any) -> Any:
    """L = I − D^(−1/2) A D^(−1/2), D = diag(row sums of A): a ``csr_matrix`` for a sparse ``affinity``, a numpy
    array for a dense one. A node of degree 0 gets D^(−1/2) = 0 (so L_nn = 1)."""
    import scipy.sparse

    degree = np.asarray(affinity.sum(1), dtype=np.float64).ravel()
    scale = np.divide(1.0, np.sqrt(degree), out=np.zeros_like(degree), where=degree > 0)
    if scipy.sparse.issparse(affinity):
        d = scipy.sparse.diags(scale)
        laplacian = (scipy.sparse.identity(len(degree), format="csr") - d @ affinity @ d).tocsr()
        laplacian.sort_indices()
        return laplacian
    dense = np.asarray(affinity, dtype=np.float64)
    return np.eye(len(degree)) - scale[:, None] * dense * scale[None, :]


# --- spectrum ---------------------------------------------------------------------------------------------

def _smallest_eigenpairs(laplacian: Any, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``count`` smallest eigenvalues of the sparse ``laplacian``, ascending, and unit eigenvectors with
    each column's largest-magnitude entry positive."""
    import scipy.linalg
    import scipy.sparse
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    n = laplacian.shape[0]
    values = vectors = None
    if n > DENSE_MAX and 10 * count <= n:
        adjacency = (scipy.sparse.identity(n, format="csr") - laplacian).tocsr()  # D^-1/2 A D^-1/2
        start = np.random.default_rng(seed).standard_normal(n)
        try:
            mu, vectors = eigsh(adjacency, k=count, which="LA", v0=start, tol=0.0)
            values = 1.0 - mu
        except ArpackNoConvergence:
            values = vectors = None
    if values is None:
        values, vectors = scipy.linalg.eigh(laplacian.toarray(), subset_by_index=[0, count - 1])
    order = np.argsort(values, kind="stable")
    values, vectors = np.asarray(values[order], dtype=np.float64), np.asarray(vectors[:, order], dtype=np.float64)
    peak = vectors[np.argmax(np.abs(vectors), axis=0), np.arange(count)]
    vectors = vectors * np.where(peak < 0, -1.0, 1.0)
    return values, vectors


def _relabel_by_size(labels: np.ndarray, n_clusters: int) -> np.ndarray:
    sizes = np.bincount(labels, minlength=n_clusters)
    first = np.array([np.flatnonzero(labels == c)[0] if sizes[c] else len(labels) for c in range(n_clusters)])
    order = np.lexsort((first, -sizes))  # largest first, then by first member
    new = np.empty(n_clusters, dtype=np.int64)
    new[order] = np.arange(n_clusters)
    return new[labels].astype(np.int64)


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise XaiCoreError(f"{what} must be an int, got {value!r}")
    return int(value)


def spray(relevance: Any, *, k_max: int = 10, n_neighbors: int = 10, size: int | None = 8,
          n_clusters: int | None = None, embedding: bool = False, seed: int = 0) -> SprayResult:
    """SpRAy on the heatmaps ``relevance`` (N, C, H, W) of one class; see the module docstring.

    ``k_max``: eigenvalues λ₁..λ_(k_max+1) are computed and the eigengap picks k̂ in 1..k_max.
    ``n_neighbors``: k of the kNN affinity. ``size``: the heatmaps are sum-pooled to size×size (None: not).
    ``n_clusters``: use this many clusters (1..k_max + 1) instead of the eigengap's. ``embedding``: also a 2-D
    t-SNE of the spectral embedding (``.tsne``). ``seed``: k-means, ARPACK's start vector and t-SNE.
    """
    values = _as_array(relevance)
    _check_relevance(values)
    n, _, height, width = values.shape
    _check_size(size, height, width)
    _check_neighbors(n_neighbors, n)
    k_max = _check_int(k_max, "k_max")
    if not 1 <= k_max < n:
        raise XaiCoreError(f"k_max must be in 1..N − 1 = 1..{n - 1} (N = {n} maps), got {k_max}")
    if n_clusters is not None:
        n_clusters = _check_int(n_clusters, "n_clusters")
        if not 1 <= n_clusters <= k_max + 1:
            raise XaiCoreError(f"n_clusters must be in 1..k_max + 1 = 1..{k_max + 1}, got {n_clusters}; raise "
                               "k_max for more clusters")
    seed = _check_int(seed, "seed")
    if seed < 0:
        raise XaiCoreError(f"seed must be a non-negative int, got {seed}")

    points = _normalise_rows(_downsize(values, size))
    laplacian = normalized_laplacian(knn_affinity(points, n_neighbors))
    eigenvalues, vectors = _smallest_eigenpairs(laplacian, k_max + 1, seed)
    gaps = np.diff(eigenvalues)
    k_hat = n_clusters if n_clusters is not None else int(np.argmax(gaps)) + 1

    if k_hat == 1:
        labels = np.zeros(n, dtype=np.int64)
    else:
        from sklearn.cluster import KMeans

        rows = _normalise_rows(vectors[:, :k_hat])
        raw = KMeans(n_clusters=k_hat, n_init=10, random_state=seed).fit_predict(rows)
        labels = _relabel_by_size(np.asarray(raw, dtype=np.int64), k_hat)

    tsne = None
    if embedding:
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (n - 1) / 3)
        tsne = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(
            _normalise_rows(vectors)).astype(np.float64)
    return SprayResult(labels=labels, eigenvalues=eigenvalues, n_clusters=int(k_hat), eigengap=gaps,
                       embedding=vectors, tsne=tsne)

