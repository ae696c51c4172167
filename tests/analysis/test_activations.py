"""The activations archive: equal to a manual forward, chunked, lazily read by Network Dissection with the same
result as in memory, guarded like the heatmaps (incomplete or foreign stores refused), the models unchanged."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xaicore.analysis import dissect, open_activations, write_activations
from xaicore.errors import XaiCoreError


def manual(model, x):
    with torch.no_grad():
        c1 = model.conv1(x)
        c2 = model.conv2(model.pool1(model.relu1(c1)))
        f1 = model.fc1(model.flatten(model.pool2(model.relu2(c2))))
    return {"conv1": c1, "conv2": c2, "fc1": f1}


def test_equals_a_manual_forward_and_reads_lazily(helpers, tmp_path, digit_batch):
    x = torch.cat([digit_batch[0]] * 3)[:20]
    models = {"a": helpers.seeded_model("cnn", seed=0), "b": helpers.seeded_model("cnn", seed=1)}
    models["a"].train()
    before = helpers.model_state(models["a"])
    path = write_activations(models, x, ["conv2", "fc1", "conv1"], tmp_path / "act.zarr", sample=np.arange(20) + 100,
                             chunk=7, forward_batch=3, attrs={"data": "digits"})
    ds = open_activations(path)
    assert ds.attrs["complete"] and json.loads(ds.attrs["layers"]) == ["conv2", "fc1", "conv1"]
    assert ds["conv2"].dims == ("model", "sample", "conv2:unit", "conv2:y", "conv2:x")
    assert ds["fc1"].dims == ("model", "sample", "fc1:unit") and ds["conv2"].chunks[1] == (7, 7, 6)
    assert ds["sample"].values.tolist() == list(range(100, 120))
    assert models["a"].training
    helpers.assert_states_equal(before, helpers.model_state(models["a"]))
    helpers.assert_no_hooks(models["a"])
    for i, name in enumerate(models):
        ref = manual(models[name].eval(), x)
        for layer in ("conv1", "conv2", "fc1"):
            np.testing.assert_allclose(ds[layer].isel(model=i).values, ref[layer].numpy(), rtol=1e-5, atol=1e-6)
    masks = torch.rand(20, 3, 28, 28) > 0.7
    lazy = dissect(ds["conv2"].sel(model="b"), masks, chunk=6)
    eager = dissect(ds["conv2"].sel(model="b").values, masks)
    assert np.array_equal(lazy.iou, eager.iou) and np.array_equal(lazy.thresholds, eager.thresholds)


def test_incomplete_foreign_and_bad_input(helpers, tmp_path, digit_batch):
    model = helpers.seeded_model("cnn", seed=0)
    x = digit_batch[0]
    with pytest.raises(XaiCoreError, match="unknown layer 'conv7'"):
        write_activations({"m": model}, x, ["conv7"], tmp_path / "bad.zarr")
    assert not (tmp_path / "bad.zarr").exists()
    with pytest.raises(XaiCoreError, match="sample must give one index per input"):
        write_activations({"m": model}, x, ["conv1"], tmp_path / "bad.zarr", sample=np.arange(3))
    mlp = helpers.seeded_model("mlp", seed=0)
    with pytest.raises(XaiCoreError, match="unknown layer 'conv1'"):
        write_activations({"m": model, "mlp": mlp}, x, ["conv1"], tmp_path / "mixed.zarr")
    assert not (tmp_path / "mixed.zarr").exists()  # a failed run leaves nothing that looks finished
    with pytest.raises(XaiCoreError, match="does not exist"):
        open_activations(tmp_path / "mixed.zarr")
    path = write_activations({"m": model}, x, ["conv1"], tmp_path / "ok.zarr")
    import zarr

    zarr.open_group(str(path), mode="r+").attrs["complete"] = False
    with pytest.raises(XaiCoreError, match="incomplete"):
        open_activations(path)
    import xarray as xr

    from xaicore.store import SCORES_SCHEMA, write_dataset

    other = write_dataset(xr.Dataset({"v": ("a", np.zeros(2))}), tmp_path / "scores.zarr", schema=SCORES_SCHEMA)
    with pytest.raises(XaiCoreError, match="not an xaicore archive of xaicore.activations/1"):
        open_activations(other)
