"""Datasets: the embedded digits, the randomized-label control, MNIST IDX files, the .npz round trip."""

from __future__ import annotations

import gzip
import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from xaicore import XaiCoreError
from xaicore.data import (
    DatasetFile,
    load_dataset,
    load_digits28,
    load_mnist,
    load_saved,
    randomized_labels,
    save_dataset,
)


@pytest.fixture(scope="module")
def sk_digits():
    return load_digits()


# --- the embedded digits ---------------------------------------------------------------------------------

def test_digits28_sizes_and_range(digits, sk_digits):
    assert digits.x_train.shape == (1437, 1, 28, 28) and digits.x_test.shape == (360, 1, 28, 28)
    assert digits.x_train.shape[0] + digits.x_test.shape[0] == 1797
    assert digits.x_train.dtype == torch.float32 and digits.y_train.dtype == torch.int64
    for x in (digits.x_train, digits.x_test):
        assert float(x.min()) == 0.0 and 0.99 < float(x.max()) <= 1.0
        assert float(x[..., :4, :].abs().max()) == 0.0 and float(x[..., -4:].abs().max()) == 0.0  # MNIST border
    assert digits.n_classes == 10 and digits.input_shape == (1, 28, 28)
    # labels and indices point back into scikit-learn's data set
    assert torch.equal(digits.y_test, torch.from_numpy(sk_digits.target[digits.idx_test.numpy()]))
    assert bool((digits.idx_test[1:] > digits.idx_test[:-1]).all())  # sorted, no repeats


def test_digits_at_native_resolution_are_the_scikit_learn_images(sk_digits):
    """size=11 gives an 8x8 inner image (round(11*20/28) = 8): the bilinear resize is the identity, so the
    image is sklearn's, /16, padded by 1 (top/left) and 2 (bottom/right)."""
    ds = load_digits28(size=11)
    assert ds.x_test.shape[1:] == (1, 11, 11)
    expected = torch.from_numpy(sk_digits.images[ds.idx_test.numpy()].astype(np.float32) / 16.0)
    torch.testing.assert_close(ds.x_test[:, 0, 1:9, 1:9], expected, rtol=0, atol=1e-7)
    assert float(ds.x_test[:, 0, 0].abs().max()) == 0.0 and float(ds.x_test[:, 0, 9:].abs().max()) == 0.0


def test_digits_split_is_deterministic_and_stratified(digits, sk_digits):
    again = load_digits28(seed=0)
    for name in ("x_train", "y_train", "x_test", "y_test", "idx_test"):
        assert torch.equal(getattr(digits, name), getattr(again, name))
    other = load_digits28(seed=1)
    assert not torch.equal(digits.idx_test, other.idx_test)
    total = Counter(sk_digits.target.tolist())
    test_counts = Counter(digits.y_test.tolist())
    for cls, n in total.items():
        assert abs(test_counts[cls] - 0.2 * n) <= 1, (cls, test_counts[cls], n)
    # train and test partition the data set
    train_count = Counter(digits.y_train.tolist())
    assert {c: train_count[c] + test_counts[c] for c in total} == dict(total)
    half = load_digits28(test_fraction=0.5)
    assert half.x_test.shape[0] in (898, 899)


def test_randomized_labels_is_a_seeded_permutation(digits):
    y = digits.y_train
    y0 = y.clone()
    a = randomized_labels(y, seed=0)
    assert torch.equal(y, y0)  # the input is not touched
    assert a.dtype == y.dtype and a.shape == y.shape
    assert torch.equal(torch.sort(a).values, torch.sort(y).values)  # the same multiset of labels
    assert torch.equal(a, randomized_labels(y, seed=0))
    assert not torch.equal(a, randomized_labels(y, seed=1))
    agree = float((a == y).float().mean())
    assert agree < 0.2  # a permutation of 10 balanced classes keeps about 10% of labels
    # it is exactly the permutation of numpy's generator seeded with (seed, 0xDA7A)
    perm = np.random.default_rng([0, 0xDA7A]).permutation(y.shape[0])
    assert torch.equal(a, y[torch.from_numpy(perm)])


# --- MNIST IDX files -------------------------------------------------------------------------------------

def idx_bytes(arr: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    return header + arr.astype(np.uint8).tobytes()


def write_mnist(root: Path, *, gz: bool, n_train: int = 5, n_test: int = 3, side: int = 28) -> dict:
    rng = np.random.default_rng(0)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    root.mkdir(parents=True, exist_ok=True)
    for stem, arr in arrays.items():
        if gz:
            (root / f"{stem}.gz").write_bytes(gzip.compress(idx_bytes(arr)))
        else:
            (root / stem).write_bytes(idx_bytes(arr))
    return arrays


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_reads_idx_files(tmp_path, gz):
    arrays = write_mnist(tmp_path / "mnist", gz=gz)
    ds = load_mnist(tmp_path / "mnist")
    assert ds.name == "mnist"
    assert ds.x_train.shape == (5, 1, 28, 28) and ds.x_test.shape == (3, 1, 28, 28)
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    np.testing.assert_array_equal(ds.x_train[:, 0].numpy(), arrays["train-images-idx3-ubyte"] / np.float32(255))
    np.testing.assert_array_equal(ds.x_test[:, 0].numpy(), arrays["t10k-images-idx3-ubyte"] / np.float32(255))
    np.testing.assert_array_equal(ds.y_train.numpy(), arrays["train-labels-idx1-ubyte"])
    np.testing.assert_array_equal(ds.y_test.numpy(), arrays["t10k-labels-idx1-ubyte"])
    assert ds.idx_test.tolist() == [0, 1, 2]
    assert float(ds.x_train.max()) <= 1.0 and float(ds.x_train.min()) >= 0.0
    via_name = load_dataset("mnist", root=tmp_path / "mnist")
    assert torch.equal(via_name.x_train, ds.x_train)


def test_load_mnist_missing_directory_and_file(tmp_path):
    with pytest.raises(XaiCoreError, match=r"data\.dataset is mnist but .*nowhere/ does not exist"):
        load_mnist(tmp_path / "nowhere")
    write_mnist(tmp_path / "m", gz=False)
    (tmp_path / "m" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(XaiCoreError, match=r"MNIST file t10k-labels-idx1-ubyte\[\.gz\] is missing"):
        load_mnist(tmp_path / "m")


@pytest.mark.parametrize("gz", [False, True])
def test_load_mnist_truncated_file(tmp_path, gz):
    arrays = write_mnist(tmp_path / "m", gz=gz)
    stem = "train-images-idx3-ubyte"
    raw = idx_bytes(arrays[stem])[:-100]
    if gz:
        (tmp_path / "m" / f"{stem}.gz").write_bytes(gzip.compress(raw))
    else:
        (tmp_path / "m" / stem).write_bytes(raw)
    with pytest.raises(XaiCoreError, match=r"train-images-idx3-ubyte.* is truncated: header says \(5, 28, 28\)"):
        load_mnist(tmp_path / "m")


def test_load_mnist_cut_gzip_stream(tmp_path):
    """A download cut short leaves a .gz whose stream ends early: one clear error, not an EOFError."""
    write_mnist(tmp_path / "m", gz=True)
    path = tmp_path / "m" / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(XaiCoreError, match="train-images-idx3-ubyte.gz"):
        load_mnist(tmp_path / "m")


def test_load_mnist_bad_magic_and_mismatched_counts(tmp_path):
    write_mnist(tmp_path / "m", gz=False)
    path = tmp_path / "m" / "t10k-images-idx3-ubyte"
    raw = bytearray(path.read_bytes())
    raw[2] = 0x0D  # float32 data type, not unsigned bytes
    path.write_bytes(bytes(raw))
    with pytest.raises(XaiCoreError, match=r"t10k-images-idx3-ubyte is not an IDX file .*bad magic number"):
        load_mnist(tmp_path / "m")
    path.write_bytes(b"PK\x03\x04 this is a zip file")
    with pytest.raises(XaiCoreError, match="bad magic number"):
        load_mnist(tmp_path / "m")
    write_mnist(tmp_path / "n", gz=False)
    (tmp_path / "n" / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(4, dtype=np.uint8)))
    with pytest.raises(XaiCoreError, match="MNIST train images and labels differ in count"):
        load_mnist(tmp_path / "n")


# --- on-disk dataset -------------------------------------------------------------------------------------

def test_save_and_load_dataset_round_trip(tmp_path, digits):
    shuffled = randomized_labels(digits.y_train, seed=0)
    path = tmp_path / "sub" / "digits.npz"
    save_dataset(digits, path, y_random=shuffled.numpy())
    assert path.is_file() and not any(p.name.endswith(".partial.npz") for p in path.parent.iterdir())
    ds, extra = load_saved(path)
    assert ds.name == "digits" and ds.n_classes == 10
    for name in ("x_train", "y_train", "x_test", "y_test", "idx_test"):
        a, b = getattr(ds, name), getattr(digits, name)
        assert a.dtype == b.dtype and torch.equal(a, b), name
    assert set(extra) == {"y_random"} and torch.equal(extra["y_random"], shuffled)


@pytest.mark.parametrize("reader", [load_saved, DatasetFile])
def test_a_missing_or_corrupt_dataset_file_is_named(tmp_path, reader):
    with pytest.raises(XaiCoreError, match="nope.npz is missing; run the data stage first"):
        reader(tmp_path / "nope.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip archive")
    with pytest.raises(XaiCoreError, match="bad.npz is corrupt"):
        reader(bad)


def test_dataset_file_reads_slices_and_the_training_mean_without_loading_the_file(tmp_path, digits):
    """The explain and score stages read images a chunk at a time (memory flat in the data set's size)."""
    path = tmp_path / "digits.npz"
    save_dataset(digits, path, y_train_random=randomized_labels(digits.y_train, 0).numpy())
    f = DatasetFile(path)
    n = digits.x_test.shape[0]
    assert f.n_test == n and f.input_shape == tuple(digits.x_test.shape[1:]) and f.name == "digits"
    assert torch.equal(f.y_test, digits.y_test) and torch.equal(f.idx_test, digits.idx_test)
    for a, b in ((0, 5), (17, 250), (n - 3, n + 10), (n, n)):
        assert torch.equal(f.test_images(a, b), digits.x_test[a:b]), (a, b)
    pos = np.array([40, 3, 3, 99])
    assert torch.equal(f.test_images_at(pos), digits.x_test[pos])
    expected = digits.x_train.to(torch.float64).mean(0, keepdim=True).float()
    for block in (7, 4096):  # any block size: float64 sums agree to far below float32's resolution
        assert torch.equal(f.train_mean(block), expected)


def test_dataset_file_refuses_a_compressed_file(tmp_path, digits):
    squeezed = tmp_path / "compressed.npz"
    np.savez_compressed(squeezed, name=np.array("d"), y_test=digits.y_test.numpy(), idx_test=digits.idx_test.numpy(),
                        x_train=digits.x_train.numpy(), x_test=digits.x_test.numpy())
    with pytest.raises(XaiCoreError, match="compressed.npz is corrupt: x_train is compressed"):
        DatasetFile(squeezed)


def test_load_dataset_by_name(digits):
    assert torch.equal(load_dataset("digits").idx_test, digits.idx_test)
    with pytest.raises(XaiCoreError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


def test_the_mnist_sized_set_is_deformed_digits_read_as_mnist(tmp_path, digits):
    """xaicore.data.synthetic: seeded, read by data.dataset=mnist, labels balanced, each image close to a digit of
    its label's class (the deformation keeps the class: its nearest embedded mean is its label's for most)."""
    from xaicore.data.synthetic import main, write_mnist_like

    write_mnist_like(tmp_path / "a", n_train=600, n_test=200, seed=3)
    main([str(tmp_path / "b"), "--train", "600", "--test", "200", "--seed", "3"])
    for name in ("train-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    ds = load_dataset("mnist", root=str(tmp_path / "a"))
    assert ds.x_train.shape == (600, 1, 28, 28) and ds.x_test.shape == (200, 1, 28, 28)
    assert 40 <= np.bincount(ds.y_train.numpy(), minlength=10).min()
    means = torch.stack([digits.x_train[digits.y_train == c].mean(0).flatten() for c in range(10)])
    nearest = torch.cdist(ds.x_test.flatten(1), means).argmin(1)
    assert (nearest == ds.y_test).float().mean() > 0.5  # a nearest-class-mean classifier: chance is 0.1
    write_mnist_like(tmp_path / "c", n_train=600, n_test=200, seed=4)
    assert (tmp_path / "c" / "train-images-idx3-ubyte").read_bytes() != \
        (tmp_path / "a" / "train-images-idx3-ubyte").read_bytes()
