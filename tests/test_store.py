"""The Zarr archives: chunk-aligned heatmap writes, the complete flag set last, open_archive's refusals."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

from xaicore import XaiCoreError, __version__
from xaicore.store import HEATMAP_SCHEMA, SCORES_SCHEMA, HeatmapArchiveWriter, open_archive, write_dataset

MODELS = ["trained", "cascade:fc2"]
EXPLAINERS = ["gradient", "random"]
N, CHUNK, SHAPE = 5, 2, (1, 4, 3)


@pytest.fixture
def heatmaps() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    m, e = len(MODELS), len(EXPLAINERS)
    return {
        "relevance": rng.normal(size=(m, e, N) + SHAPE).astype(np.float32),
        "conservation_error": rng.random((m, e, N)).astype(np.float32),
        "positive_fraction": rng.random((m, e, N)).astype(np.float32),
        "sample": np.array([3, 17, 20, 41, 99]),
        "label": np.array([1, 2, 3, 4, 5]),
        "target": np.array([1, 2, 3, 4, 6]),
        "prediction": rng.integers(0, 10, (m, N)),
        "score": rng.normal(size=(m, N)).astype(np.float32),
    }


def make_writer(path, h) -> HeatmapArchiveWriter:
    return HeatmapArchiveWriter(path, models=MODELS, explainers=EXPLAINERS, sample=h["sample"], label=h["label"],
                                target=h["target"], prediction=h["prediction"], score=h["score"],
                                image_shape=SHAPE, chunk=CHUNK, attrs={"dataset": "digits", "params": "{}"})


def write_all(writer: HeatmapArchiveWriter, h) -> None:
    for mi in range(len(MODELS)):
        for ei in range(len(EXPLAINERS)):
            for start in range(0, N, CHUNK):
                sl = slice(start, start + CHUNK)
                writer.write_block(mi, ei, start, h["relevance"][mi, ei, sl], h["conservation_error"][mi, ei, sl],
                                   h["positive_fraction"][mi, ei, sl])


def test_heatmap_archive_round_trip(tmp_path, heatmaps):
    path = tmp_path / "heatmaps.zarr"
    writer = make_writer(path, heatmaps)
    write_all(writer, heatmaps)
    assert writer.finalize() == path
    assert path.is_dir() and not (tmp_path / "heatmaps.zarr.partial").exists()
    ds = open_archive(path, schema=HEATMAP_SCHEMA)
    assert ds["relevance"].dims == ("model", "explainer", "sample", "channel", "y", "x")
    assert ds["relevance"].dtype == np.float32
    assert ds["relevance"].chunks is not None  # lazy, dask-backed
    np.testing.assert_array_equal(ds["relevance"].values, heatmaps["relevance"])
    for name in ("conservation_error", "positive_fraction"):
        assert ds[name].dims == ("model", "explainer", "sample")
        np.testing.assert_array_equal(ds[name].values, heatmaps[name])
    assert list(ds["model"].values) == MODELS and list(ds["explainer"].values) == EXPLAINERS
    for name in ("sample", "label", "target", "prediction"):
        np.testing.assert_array_equal(ds[name].values, heatmaps[name])
    np.testing.assert_array_equal(ds["score"].values, heatmaps["score"])
    assert ds["prediction"].dims == ("model", "sample") and ds["label"].dims == ("sample",)
    assert ds.attrs["complete"] is True and ds.attrs["xaicore_schema"] == HEATMAP_SCHEMA
    assert ds.attrs["xaicore_version"] == __version__ and ds.attrs["dataset"] == "digits"
    # the query the archive is designed for: explainer is a dimension, not xarray's `method` keyword
    one = ds["relevance"].sel(model="cascade:fc2", explainer="random", sample=41).values
    np.testing.assert_array_equal(one, heatmaps["relevance"][1, 1, 3])


def test_unaligned_block_and_missing_blocks_are_refused(tmp_path, heatmaps):
    path = tmp_path / "h.zarr"
    writer = make_writer(path, heatmaps)
    with pytest.raises(XaiCoreError, match="block start 1 is not aligned to the archive chunk 2"):
        writer.write_block(0, 0, 1, heatmaps["relevance"][0, 0, 1:3], np.zeros(2), np.zeros(2))
    writer.write_block(0, 0, 0, heatmaps["relevance"][0, 0, :2], np.zeros(2), np.ones(2))
    with pytest.raises(XaiCoreError, match="blocks were never written"):
        writer.finalize()
    assert not path.exists()


def test_unfinished_archive_is_refused(tmp_path, heatmaps):
    path = tmp_path / "heatmaps.zarr"
    writer = make_writer(path, heatmaps)
    write_all(writer, heatmaps)  # ... and the run dies before finalize()
    partial = tmp_path / "heatmaps.zarr.partial"
    assert partial.is_dir() and not path.exists()
    with pytest.raises(XaiCoreError, match=r"does not exist \(an unfinished heatmaps\.zarr\.partial is there"):
        open_archive(path)
    with pytest.raises(XaiCoreError, match="is incomplete: the run that wrote it did not finish"):
        open_archive(partial)


def test_rewriting_replaces_an_old_archive(tmp_path, heatmaps):
    path = tmp_path / "heatmaps.zarr"
    writer = make_writer(path, heatmaps)
    write_all(writer, heatmaps)
    writer.finalize()
    heatmaps["relevance"] = heatmaps["relevance"] * 2
    writer = make_writer(path, heatmaps)
    write_all(writer, heatmaps)
    writer.finalize()
    np.testing.assert_array_equal(open_archive(path)["relevance"].values, heatmaps["relevance"])


def test_foreign_and_unreadable_stores_are_refused(tmp_path):
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"a": ("x", np.arange(3))}).to_zarr(str(foreign), zarr_format=3, consolidated=False)
    with pytest.raises(XaiCoreError, match=r"is not an xaicore archive \(schema attribute: None\)"):
        open_archive(foreign)
    not_zarr = tmp_path / "empty.zarr"
    not_zarr.mkdir()
    (not_zarr / "readme.txt").write_text("hello")
    with pytest.raises(XaiCoreError, match="cannot be read as Zarr"):
        open_archive(not_zarr)
    with pytest.raises(XaiCoreError, match=r"archive .*missing\.zarr does not exist; run the pipeline"):
        open_archive(tmp_path / "missing.zarr")


def test_write_dataset_and_schema_check(tmp_path):
    scores = xr.Dataset(
        {"aopc": (("model", "explainer"), np.array([[1.5, 2.5], [3.5, 4.5]]))},
        coords={"model": np.array(["trained", "random_labels"]), "explainer": np.array(["gradient", "random"])},
    )
    path = write_dataset(scores, tmp_path / "scores.zarr", schema=SCORES_SCHEMA)
    ds = open_archive(path, schema=SCORES_SCHEMA)
    np.testing.assert_array_equal(ds["aopc"].values, [[1.5, 2.5], [3.5, 4.5]])
    assert list(ds["model"].values) == ["trained", "random_labels"]
    assert float(ds["aopc"].sel(model="random_labels", explainer="gradient")) == 3.5
    assert "xaicore_schema" not in scores.attrs  # the caller's dataset is not modified
    with pytest.raises(XaiCoreError, match=r"is not an xaicore archive of xaicore\.heatmaps/1 "
                                           r"\(schema attribute: 'xaicore\.scores/1'\)"):
        open_archive(path, schema=HEATMAP_SCHEMA)
