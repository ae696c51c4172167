"""SpRAy (Lapuschkin et al. 2019; survey §7.3) against CoRelAy, planted clusters and hand computations.

* reference: CoRelAy 1.0.0 (Anders et al.'s SpRAy toolkit). Where the definitions coincide: its
  ``SparseKNN`` is our kNN affinity (binary weights, self excluded, (B + Bᵀ)/2) — equal on points without exact
  distance ties or duplicates (CoRelAy drops column 0 of an unstable argsort, assuming it is the point itself; we
  exclude the point itself and break ties by index). Where they differ: ``SymmetricNormalLaplacian`` returns the
  normalised *adjacency* D^(−1/2) A D^(−1/2), our Laplacian is I minus it; ``EigenDecomposition`` takes eigsh's
  largest-*magnitude* eigenvalues μ by default (``which="LM"``) and returns 1 − μ, so besides the smallest
  Laplacian eigenvalues it can return ones near 2 (μ near −1) — with ``which="LA"`` it gives exactly our
  smallest k_max + 1; it also normalises every row of all its eigenvectors, where we normalise the rows of the
  first k̂ only, for k-means.
* the eigengap finds 2, 3 and 4 planted compact clusters (LAPACK, N ≤ DENSE_MAX) and a planted 10 % corner
  cluster among 1,000 maps (ARPACK) (ARI ≥ 0.99 / 0.9);
* ARPACK equals LAPACK on the same graph; torch, numpy and dask-backed xarray inputs give identical results;
  determinism; prototypes, downsizing (block sums, uneven adaptive bins), the kNN tie rule (against a brute-force
  stable sort, and where the Gram identity it screens with cancels) and the Laplacian by hand; the errors.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import scipy.sparse
import torch
import xarray as xr
from corelay.processor.affinity import SparseKNN
from corelay.processor.distance import SciPyPDist
from corelay.processor.embedding import EigenDecomposition
from corelay.processor.laplacian import SymmetricNormalLaplacian
from sklearn.metrics import adjusted_rand_score
from threadpoolctl import threadpool_limits

from xaicore.analysis.spray import SprayResult, downsize, knn_affinity, normalized_laplacian, spray
from xaicore.errors import XaiCoreError

HW = 16


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """BLAS, k-means and t-SNE on one thread: several times faster on a small, shared machine."""
    with threadpool_limits(1):
        yield


CENTRES = [(4, 4), (11, 11), (4, 11), (11, 4)]


def blob(cy: float, cx: float, width: float) -> np.ndarray:
    y, x = np.mgrid[:HW, :HW]
    return np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * width ** 2))


def planted(n_clusters: int, per_cluster: int, seed: int, noise: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, 16, 16) maps: cluster j is a blob at CENTRES[j] plus N(0, noise²) per pixel; and the labels."""
    rng = np.random.default_rng(seed)
    maps = [blob(*CENTRES[j], 1.5) + noise * rng.standard_normal((per_cluster, HW, HW)) for j in range(n_clusters)]
    labels = np.repeat(np.arange(n_clusters), per_cluster)
    perm = rng.permutation(len(labels))
    return np.concatenate(maps)[perm][:, None].astype(np.float32), labels[perm]


def corner(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """n maps of a central blob plus noise; a random 10 % also carry a strong 3×3 mark in the top-left corner."""
    rng = np.random.default_rng(seed)
    maps = blob(7.5, 7.5, 2.5) + 0.05 * rng.standard_normal((n, HW, HW))
    hans = np.zeros(n, dtype=np.int64)
    hans[rng.choice(n, n // 10, replace=False)] = 1
    maps[hans == 1, :3, :3] += 1.0
    return maps[:, None], hans


def unit_rows(points: np.ndarray) -> np.ndarray:
    return points / np.linalg.norm(points, axis=1, keepdims=True)


# --- reference: CoRelAy ------------------------------------------------------------------------------------

def test_affinity_laplacian_and_spectrum_match_corelay():
    x, _ = planted(3, 70, seed=1, noise=0.7)  # noisy: one connected graph, a non-trivial spectrum
    points = unit_rows(downsize(x, 8))
    distances = SciPyPDist(metric="euclidean")(points)

    ours = knn_affinity(points, 10)
    theirs = SparseKNN(n_neighbors=10)(distances)
    assert isinstance(ours, scipy.sparse.csr_matrix) and ours.shape == (210, 210)
    assert abs(ours - theirs).max() <= 1e-12
    assert set(np.unique(ours.data)) == {0.5, 1.0} and ours.diagonal().max() == 0

    adjacency = SymmetricNormalLaplacian()(theirs)
    laplacian = normalized_laplacian(ours)
    assert abs(laplacian - (scipy.sparse.identity(210) - adjacency)).max() <= 1e-12

    result = spray(x, k_max=20, n_neighbors=10, size=8)
    assert result.eigenvalues[1] > 0.05  # connected: only λ₁ is 0
    la_values, _ = EigenDecomposition(n_eigval=21, which="LA")(adjacency)
    np.testing.assert_allclose(result.eigenvalues, np.sort(la_values), rtol=0, atol=1e-6)
    # CoRelAy's default ("LM") mixes in eigenvalues near 2; those below 1 are our smallest ones
    lm_values, _ = EigenDecomposition(n_eigval=21)(adjacency)
    low = np.sort(lm_values[lm_values < 1])
    assert lm_values.max() > 1.4 and 2 <= len(low) < 21
    np.testing.assert_allclose(result.eigenvalues[:len(low)], low, rtol=0, atol=1e-6)

    # and the eigenpairs themselves: L U = U diag(λ), UᵀU = I
    u = result.embedding
    np.testing.assert_allclose(laplacian @ u, u * result.eigenvalues, rtol=0, atol=1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(21), rtol=0, atol=1e-10)
    assert np.all(u[np.argmax(np.abs(u), axis=0), np.arange(21)] > 0)  # the sign convention


# --- planted clusters -------------------------------------------------------------------------------------

@pytest.mark.parametrize("n_clusters", [2, 3, 4])
def test_eigengap_finds_planted_clusters(n_clusters):
    x, truth = planted(n_clusters, 60, seed=n_clusters)
    result = spray(torch.from_numpy(x))
    assert result.n_clusters == n_clusters
    assert int(np.argmax(result.eigengap)) == n_clusters - 1
    np.testing.assert_allclose(result.eigengap, np.diff(result.eigenvalues), rtol=0, atol=0)
    assert result.eigengap[n_clusters - 1] > 0.3
    assert adjusted_rand_score(truth, result.labels) >= 0.99
    assert result.labels.dtype == np.int64 and result.labels.shape == (len(truth),)
    assert result.eigenvalues.dtype == np.float64 and result.eigenvalues.shape == (11,)
    assert np.all(np.diff(result.eigenvalues) >= 0) and result.embedding.shape == (len(truth), 11)


def test_corner_cluster_is_found():
    x, hans = corner(1000, seed=0)
    result = spray(x)
    assert result.n_clusters == 2
    assert adjusted_rand_score(hans, result.labels) >= 0.9
    assert np.bincount(result.labels).tolist() == [900, 100]  # relabelled: 0 the majority
    heat = result.prototypes(x)
    assert heat.shape == (2, 1, HW, HW)
    assert heat[1, 0, :3, :3].mean() > 0.9 and abs(heat[0, 0, :3, :3].mean()) < 0.02


def test_arpack_equals_lapack(monkeypatch):
    x, truth = planted(3, 60, seed=7, noise=0.2)
    dense = spray(x, k_max=6)
    monkeypatch.setattr(importlib.import_module("xaicore.analysis.spray"), "DENSE_MAX", 0)
    sparse = spray(x, k_max=6)
    np.testing.assert_allclose(sparse.eigenvalues, dense.eigenvalues, rtol=0, atol=1e-10)
    assert sparse.n_clusters == dense.n_clusters == 3
    np.testing.assert_array_equal(sparse.labels, dense.labels)
    assert adjusted_rand_score(truth, sparse.labels) >= 0.99


# --- inputs, determinism, prototypes ----------------------------------------------------------------------

def test_torch_numpy_and_dask_xarray_agree_and_are_deterministic():
    x, _ = planted(2, 60, seed=3, noise=0.2)
    array = xr.DataArray(x, dims=("sample", "channel", "y", "x")).chunk({"sample": 50})
    first, again = spray(x, seed=4, embedding=True), spray(x, seed=4, embedding=True)
    assert first.tsne.shape == (120, 2) and first.tsne.dtype == np.float64 and np.isfinite(first.tsne).all()
    for other in (again, spray(torch.from_numpy(x), seed=4), spray(array, seed=4)):
        for name in ("labels", "eigenvalues", "eigengap", "embedding"):
            np.testing.assert_array_equal(getattr(other, name), getattr(first, name))
        assert other.n_clusters == first.n_clusters == 2
    np.testing.assert_array_equal(again.tsne, first.tsne)
    assert spray(x).tsne is None
    # the t-SNE separates the two clusters: every point's nearest other point is in its own cluster
    d = np.linalg.norm(first.tsne[:, None] - first.tsne[None], axis=2) + np.diag(np.full(120, np.inf))
    assert np.array_equal(first.labels[d.argmin(1)], first.labels)


def test_n_clusters_overrides_the_eigengap_and_labels_are_ordered_by_size():
    x, _ = planted(2, 60, seed=5)
    result = spray(x, n_clusters=3, k_max=4)
    assert result.n_clusters == 3 and result.eigengap.shape == (4,)
    assert int(np.argmax(result.eigengap)) == 1  # the eigengap would have said 2
    sizes = np.bincount(result.labels)
    assert len(sizes) == 3 and np.all(np.diff(sizes) <= 0)
    single = spray(x, n_clusters=1)
    assert single.n_clusters == 1 and not single.labels.any()


def test_prototypes_are_cluster_means():
    x, _ = planted(3, 40, seed=2)
    result = spray(x)
    images = np.random.default_rng(0).random((120, 3, 5, 5))
    by_hand = np.stack([images[result.labels == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(result.prototypes(images), by_hand, rtol=0, atol=1e-15)
    tensor = result.prototypes(torch.from_numpy(images))
    assert isinstance(tensor, torch.Tensor) and tensor.dtype == torch.float64
    np.testing.assert_allclose(tensor.numpy(), by_hand, rtol=0, atol=1e-15)
    labels = torch.from_numpy(result.labels)
    assert torch.equal(result.prototypes(labels.float()), torch.tensor([0.0, 1.0, 2.0]))
    assert torch.equal(result.prototypes(labels), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64))
    with pytest.raises(XaiCoreError, match="one row per map"):
        result.prototypes(images[:5])


def test_result_is_frozen():
    result = SprayResult(labels=np.zeros(3, dtype=np.int64), eigenvalues=np.zeros(2), n_clusters=1,
                         eigengap=np.zeros(1), embedding=np.zeros((3, 2)), tsne=None)
    with pytest.raises(AttributeError):
        result.n_clusters = 2


# --- pieces by hand ---------------------------------------------------------------------------------------

def test_downsize_block_sum_by_hand():
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)  # channel sum: 16 + 2·(4i + j)
    out = downsize(x, 2)
    # block (0, 0): rows 0-1, cols 0-1 → 4·16 + 2·(0 + 1 + 4 + 5) = 84; each block step right adds 2·2·4 = 16,
    # each step down 2·8·4 = 64
    np.testing.assert_array_equal(out, [[84.0, 100.0, 148.0, 164.0]])
    assert out.dtype == np.float64
    np.testing.assert_array_equal(downsize(torch.from_numpy(x), None), (x[:, 0] + x[:, 1]).reshape(1, 16))
    half = torch.from_numpy(x).bfloat16()  # numpy has no bfloat16: read as float32
    np.testing.assert_array_equal(downsize(half, 2), downsize(half.float(), 2))


def test_downsize_uneven_bins_by_hand():
    x = np.arange(9, dtype=np.float64).reshape(1, 1, 3, 3)  # [[0 1 2] [3 4 5] [6 7 8]]
    # size 2 on 3 rows: bins rows/cols {0, 1} and {1, 2} (the adaptive pooling bins), summed
    np.testing.assert_array_equal(downsize(x, 2), [[0 + 1 + 3 + 4, 1 + 2 + 4 + 5, 3 + 4 + 6 + 7, 4 + 5 + 7 + 8]])
    # the same as adaptive average pooling times each bin's area, on a larger uneven case
    y = np.random.default_rng(0).standard_normal((2, 3, 13, 11))
    pooled = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(y).sum(1, keepdim=True), 4)
    rows = np.array([-((-(i + 1) * 13) // 4) - (i * 13) // 4 for i in range(4)])
    cols = np.array([-((-(j + 1) * 11) // 4) - (j * 11) // 4 for j in range(4)])
    expected = (pooled[:, 0].numpy() * np.outer(rows, cols)).reshape(2, 16)
    np.testing.assert_allclose(downsize(y, 4), expected, rtol=1e-12, atol=1e-12)


def test_knn_ties_go_to_the_lower_index_and_duplicates_count():
    line = np.array([[0.0], [1.0], [2.0], [3.0]])
    # 1-NN: 0→1, 1→0 (0 and 2 tie), 2→1 (1 and 3 tie), 3→2
    b = np.zeros((4, 4))
    b[0, 1] = b[1, 0] = b[2, 1] = b[3, 2] = 1
    np.testing.assert_array_equal(knn_affinity(line, 1).toarray(), (b + b.T) / 2)
    same = np.zeros((3, 2))
    # duplicates at distance 0: 0→1, 1→0, 2→0 (never itself)
    np.testing.assert_array_equal(knn_affinity(same, 1).toarray(), [[0, 1, 0.5], [1, 0, 0], [0.5, 0, 0]])


def test_knn_equals_a_brute_force_stable_sort_on_many_ties():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 3, size=(300, 4)).astype(np.float64) * 1e3  # 81 positions: duplicates and ties
    points[:50] = rng.standard_normal((50, 4))
    dist = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :7]
    b = np.zeros((300, 300))
    b[np.repeat(np.arange(300), 7), nearest.ravel()] = 1
    np.testing.assert_array_equal(knn_affinity(points, 7).toarray(), (b + b.T) / 2)


def test_knn_is_exact_where_the_gram_identity_cancels():
    # a common offset of 1e8: ‖x‖² + ‖y‖² − 2x·y loses every digit of d² ≈ 1, the exact re-measure does not
    points = 1e8 + np.random.default_rng(1).standard_normal((120, 3))
    dist = np.sqrt(((points[:, None] - points[None]) ** 2).sum(2))
    np.fill_diagonal(dist, np.inf)
    nearest = np.argsort(dist, axis=1, kind="stable")[:, :5]
    b = np.zeros((120, 120))
    b[np.repeat(np.arange(120), 5), nearest.ravel()] = 1
    np.testing.assert_array_equal(knn_affinity(points, 5).toarray(), (b + b.T) / 2)


def test_normalized_laplacian_by_hand():
    a = np.array([[0, 1, 0.5], [1, 0, 0], [0.5, 0, 0]])  # degrees 1.5, 1, 0.5
    d = np.array([1.5, 1.0, 0.5]) ** -0.5
    expected = np.eye(3) - a * np.outer(d, d)
    np.testing.assert_allclose(normalized_laplacian(a), expected, rtol=0, atol=1e-15)
    sparse = normalized_laplacian(scipy.sparse.csr_matrix(a))
    assert scipy.sparse.issparse(sparse)
    np.testing.assert_allclose(sparse.toarray(), expected, rtol=0, atol=1e-15)
    isolated = normalized_laplacian(np.zeros((2, 2)))
    np.testing.assert_array_equal(isolated, np.eye(2))


# --- errors -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda x: spray(x[:, 0]), r"must be \(N, C, H, W\)"),
    (lambda x: spray(x[:10]), "too few maps: 10 maps"),
    (lambda x: spray(x, k_max=0), "k_max must be in 1..N − 1"),
    (lambda x: spray(x, k_max=40), "k_max must be in 1..N − 1 = 1..39"),
    (lambda x: spray(x, size=0), "size must be a positive int"),
    (lambda x: spray(x, size=2.0), "size must be a positive int"),
    (lambda x: spray(x, size=17), "size 17 is larger than the heatmaps"),
    (lambda x: spray(x, n_clusters=0), "n_clusters must be in 1..k_max"),
    (lambda x: spray(x, k_max=3, n_clusters=5), r"n_clusters must be in 1..k_max \+ 1 = 1..4"),
    (lambda x: spray(x, n_neighbors=0), "n_neighbors must be a positive int"),
    (lambda x: spray(np.where(np.arange(40)[:, None, None, None] == 3, np.nan, x)), "NaN or inf in 1 of 40"),
    (lambda x: spray(x, seed=-1), "seed must be a non-negative int"),
    (lambda x: spray(x, k_max=2.5), "k_max must be an int"),
    (lambda x: downsize(x, 32), "size 32 is larger"),
    (lambda x: knn_affinity(x[:, 0, 0], 40), "too few maps"),
])
def test_errors(call, match):
    x, _ = planted(2, 20, seed=0)
    with pytest.raises(XaiCoreError, match=match):
        call(x)


@pytest.mark.slow
@pytest.mark.hostdep
def test_finds_the_clever_hans_cluster_of_the_watermarked_class(planted, planted_cnn):
    """Lapuschkin et al.'s finding on the planted digits: the class-0 digits (their own strokes, both splits) of
    the CNN that learned the watermark split into the watermarked and the clean ones, by LRP and by
    gradient × input: at 7×7 and 8×8 cells (the watermark is 4 px) with 10 and 5 neighbours (≈ log N, von Luxburg
    2007's advice for N = 133), the kNN graph falls into exactly these two groups (two zero eigenvalues of its
    Laplacian, then a clear gap) and no cluster mixes them.

    Which gap the eigengap heuristic takes depends on the trained weights: over training seeds 0-3 (measured on an
    AVX-512 host) it chose 2 clusters in 25 of 32 (seed, method, cells, neighbours) cases and otherwise split one
    of the two groups further (3-7 clusters, by stroke shape), never mixing them. So each method must find exactly the
    two groups in at least one of the settings, and every setting must keep them apart."""
    from sklearn.metrics import adjusted_rand_score

    import xaicore

    ds = planted.dataset
    keep = {s: (getattr(ds, f"y_{s}") == 0) & ~planted.flag("swapped", s) for s in ("train", "test")}
    x = torch.cat([ds.x_train[keep["train"]], ds.x_test[keep["test"]]])
    flag = torch.cat([planted.flag("watermark", s)[keep[s]] for s in ("train", "test")]).numpy()
    assert 0.25 < flag.mean() < 0.5
    for method in ("lrp.epsilon_plus", "gradient_x_input"):
        relevance = xaicore.explain(planted_cnn, x, torch.zeros(len(x), dtype=torch.long), method=method)
        exact = []
        for size, n_neighbors in ((7, 10), (8, 5), (7, 5), (8, 10)):
            res = spray(relevance, size=size, n_neighbors=n_neighbors)
            ev = res.eigenvalues
            assert abs(ev[0]) < 1e-6 and abs(ev[1]) < 1e-6 and ev[2] > 0.03, (method, size, n_neighbors, ev[:4])
            for c in np.unique(res.labels):  # no cluster mixes watermarked and clean digits
                members = flag[res.labels == c]
                assert members.all() or not members.any(), (method, size, n_neighbors, c)
            exact.append(res.n_clusters == 2 and adjusted_rand_score(flag, res.labels) >= 0.9)
        assert any(exact), (method, exact)
