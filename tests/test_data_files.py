"""A researcher's own images: ImageFolder and .npz, read exactly, split deterministically, bad files named."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from xaicore.data.files import load_imagefolder, load_npz, read_image
from xaicore.errors import XaiCoreError


def folder(root, classes=("cat", "dog", "fox"), n=5, size=(48, 40), mode="RGB"):
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c).mkdir(parents=True)
        for i in range(n):
            shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
            Image.fromarray((rng.random(shape) * 255).astype(np.uint8), mode).save(root / c / f"{i:02d}.png")
    return root


def test_an_image_folder_is_read_as_pixels_with_sorted_classes_and_a_stratified_split(tmp_path):
    root = folder(tmp_path / "imgs")
    ds = load_imagefolder(root, size=32, resize=32, test_fraction=0.4, seed=3)
    assert ds.input_shape == (3, 32, 32) and ds.n_classes == 3
    assert ds.x_train.shape[0] + ds.x_test.shape[0] == 15
    assert np.bincount(ds.y_test.numpy()).tolist() == [2, 2, 2]  # round(0.4 * 5) of each class
    files = sorted(root.glob("*/*.png"))  # the sample id is the position in (class, file) order
    i = int(ds.idx_test[0])
    np.testing.assert_array_equal(ds.x_test[0].numpy(), read_image(files[i], size=32, resize=32, channels=3))
    assert int(ds.y_test[0]) == ["cat", "dog", "fox"].index(files[i].parent.name)
    # shorter side (40) scaled to 32, centre cropped: exactly PIL's bilinear resize of the file
    ref = np.asarray(Image.open(files[i]).resize((38, 32), Image.Resampling.BILINEAR).crop((3, 0, 35, 32)),
                     np.float32) / 255.0
    np.testing.assert_array_equal(ds.x_test[0].numpy(), ref.transpose(2, 0, 1))
    again = load_imagefolder(root, size=32, resize=32, test_fraction=0.4, seed=3)
    assert np.array_equal(again.idx_test, ds.idx_test) and np.array_equal(again.x_train, ds.x_train)
    grey = load_imagefolder(root, size=32, resize=32, channels=1)
    assert grey.input_shape == (1, 32, 32)


def test_train_and_test_subfolders_are_the_splits(tmp_path):
    folder(tmp_path / "d" / "train", n=4, size=(16, 16))
    folder(tmp_path / "d" / "test", n=2, size=(16, 16))
    ds = load_imagefolder(tmp_path / "d", size=16)
    assert ds.x_train.shape == (12, 3, 16, 16) and ds.x_test.shape == (6, 3, 16, 16)
    assert ds.y_test.tolist() == [0, 0, 1, 1, 2, 2] and ds.idx_test.tolist() == list(range(12, 18))


def test_bad_image_folders_name_the_file(tmp_path):
    root = folder(tmp_path / "a", size=(16, 16))
    (root / "dog" / "03.png").write_bytes(b"not a png")
    with pytest.raises(XaiCoreError, match=r"image .*dog/03.png cannot be read"):
        load_imagefolder(root, size=16)
    root = folder(tmp_path / "b", size=(16, 16))
    Image.new("RGB", (20, 16)).save(root / "fox" / "01.png")
    with pytest.raises(XaiCoreError, match=r"image .*fox/01.png is 20x16, the data set's images are 16x16 "
                                           r"\(data.size\); set data.resize"):
        load_imagefolder(root, size=16)
    root = folder(tmp_path / "c", size=(16, 16))
    (root / "empty").mkdir()
    (root / "empty" / "notes.txt").write_text("no images here")
    with pytest.raises(XaiCoreError, match=r"class folder .*empty holds no image"):
        load_imagefolder(root, size=16)
    with pytest.raises(XaiCoreError, match=r"image folder .*nowhere not found \(data.root\)"):
        load_imagefolder(tmp_path / "nowhere", size=16)
    few = folder(tmp_path / "e", n=1, size=(16, 16))  # one image per class: no class can be in both splits
    with pytest.raises(XaiCoreError, match=r"cannot split 3 samples of 3 classes by test_fraction 0.2"):
        load_imagefolder(few, size=16)
    one = folder(tmp_path / "d", classes=("only",), size=(16, 16))
    with pytest.raises(XaiCoreError, match="1 class subfolder"):
        load_imagefolder(one, size=16)


def test_npz_arrays_in_any_layout(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.random((20, 8, 8, 3)) * 255).astype(np.uint8)  # channels last, uint8
    y = np.repeat(np.arange(4), 5)
    np.savez(tmp_path / "a.npz", x=x, y=y)
    ds = load_npz(tmp_path / "a.npz", test_fraction=0.2)
    assert ds.input_shape == (3, 8, 8) and ds.n_classes == 4 and ds.x_test.shape[0] == 4
    i = int(ds.idx_test[0])
    np.testing.assert_array_equal(ds.x_test[0].numpy(), x[i].transpose(2, 0, 1).astype(np.float32) / 255.0)
    xs = rng.random((6, 1, 8, 8)).astype(np.float32)
    np.savez(tmp_path / "b.npz", x_train=xs[:4], y_train=[0, 1, 0, 1], x_test=xs[4:], y_test=[1, 0])
    ds = load_npz(tmp_path / "b.npz")
    assert np.array_equal(ds.x_test.numpy(), xs[4:]) and ds.y_test.tolist() == [1, 0]


@pytest.mark.parametrize("arrays, says", [
    ({"x": np.zeros((4, 2, 8, 8)), "y": np.zeros(4, int)}, "x has 2 channels"),
    ({"x": np.zeros((4, 8)), "y": np.zeros(4, int)}, "x has shape (4, 8)"),
    ({"x": np.zeros((4, 8, 8)), "y": np.zeros(4)}, "y must be (4,) non-negative integer class indices"),
    ({"x": np.full((4, 8, 8), np.nan), "y": np.zeros(4, int)}, "x holds NaN or inf"),
    ({"images": np.zeros((4, 8, 8))}, "expected x and y"),
    ({"x": np.array([object()] * 4), "y": np.zeros(4, int)}, "cannot be read as .npz without pickle"),
])
def test_bad_npz_files_are_named(tmp_path, arrays, says):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(XaiCoreError, match="bad.npz") as err:
        load_npz(tmp_path / "bad.npz")
    assert says in str(err.value)


def test_params_for_own_images_are_checked_before_the_run(tmp_path):
    from xaicore.config import config_from_dict
    from xaicore.pipeline import preflight

    with pytest.raises(XaiCoreError, match=r"data.resize.*smaller than data.size 32"):
        config_from_dict({"data": {"dataset": "imagefolder", "root": "x", "size": 32, "resize": 16}})
    with pytest.raises(XaiCoreError, match=r"data.channels.*expected 1 \(grey\), 3 \(RGB\) or null"):
        config_from_dict({"data": {"dataset": "imagefolder", "root": "x", "channels": 2}})
    with pytest.raises(XaiCoreError, match=r"data.resize.*applies to data.dataset imagefolder, not digits"):
        config_from_dict({"data": {"dataset": "digits", "resize": 40}})
    with pytest.raises(XaiCoreError, match=r"data.root .*nowhere is not a folder"):
        preflight(config_from_dict({"data": {"dataset": "imagefolder", "root": str(tmp_path / "nowhere")}}))
    with pytest.raises(XaiCoreError, match=r"data.root .*none.npz is not a file"):
        preflight(config_from_dict({"data": {"dataset": "npz", "root": str(tmp_path / "none.npz")}}))
    root = folder(tmp_path / "imgs", size=(36, 40))
    cfg = config_from_dict({"data": {"dataset": "imagefolder", "root": str(root), "size": 32, "resize": 32}})
    preflight(cfg)
    from xaicore.data import load_dataset

    ds = load_dataset("imagefolder", root=root, size=32, resize=32)
    assert ds.input_shape == (3, 32, 32)
