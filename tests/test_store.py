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


def make_writer_with(path, h, journal) -> HeatmapArchiveWriter:
    return HeatmapArchiveWriter(path, models=MODELS, explainers=EXPLAINERS, sample=h["sample"], label=h["label"],
                                target=h["target"], prediction=h["prediction"], score=h["score"],
                                image_shape=SHAPE, chunk=CHUNK, attrs={"dataset": "digits", "params": "{}"},
                                journal=journal)


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


def test_a_sample_budget_leaves_a_models_later_samples_nan_and_unwritten(tmp_path, heatmaps):
    """``explained``: the second model explains only its first 3 samples (mid-chunk); the rest read as NaN, take
    no chunk file, and the archive still finalizes; a budget's block left unwritten is still refused."""
    h = heatmaps
    kw = dict(models=MODELS, explainers=EXPLAINERS, sample=h["sample"], label=h["label"], target=h["target"],
              prediction=h["prediction"], score=h["score"], image_shape=SHAPE, chunk=CHUNK,
              attrs={"dataset": "digits", "params": "{}"})
    with pytest.raises(XaiCoreError, match="explained must give 0..5 samples for each of 2 models"):
        HeatmapArchiveWriter(tmp_path / "bad.zarr", explained=[5, 6], **kw)
    path = tmp_path / "h.zarr"
    writer = HeatmapArchiveWriter(path, explained=[5, 3], **kw)
    for mi, n in enumerate((5, 3)):
        for ei in range(len(EXPLAINERS)):
            for start in range(0, n, CHUNK):
                if (mi, ei, start) == (1, 1, 2):
                    continue
                sl = slice(start, min(start + CHUNK, n))
                writer.write_block(mi, ei, start, h["relevance"][mi, ei, sl], h["conservation_error"][mi, ei, sl],
                                   h["positive_fraction"][mi, ei, sl])
    with pytest.raises(XaiCoreError, match="never written"):
        writer.finalize()
    writer.write_block(1, 1, 2, h["relevance"][1, 1, 2:3], h["conservation_error"][1, 1, 2:3],
                       h["positive_fraction"][1, 1, 2:3])
    writer.finalize()
    ds = open_archive(path, verify=True)
    assert ds["n_explained"].values.tolist() == [5, 3] and ds["n_explained"].dims == ("model",)
    rel = ds["relevance"].values
    np.testing.assert_array_equal(rel[0], h["relevance"][0])
    np.testing.assert_array_equal(rel[1, :, :3], h["relevance"][1, :, :3])
    assert np.isnan(rel[1, :, 3:]).all() and np.isnan(ds["conservation_error"].values[1, :, 3:]).all()
    assert not list((path / "relevance").glob("c/1/*/2/*/*/*"))  # model 1's last chunk: never written
    assert len(list((path / "relevance").glob("c/0/*/2/*/*/*"))) == 2


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


def finished(tmp_path, h):
    path = tmp_path / "heatmaps.zarr"
    writer = make_writer(path, h)
    write_all(writer, h)
    return writer.finalize()


def chunk_files(path):
    return sorted(p for p in (path / "relevance").rglob("*") if p.is_file() and p.name != "zarr.json")


def test_the_manifest_is_invisible_to_xarray(tmp_path, heatmaps, recwarn):
    path = finished(tmp_path, heatmaps)
    ds = xr.open_zarr(str(path), consolidated=False)
    assert "xaicore_manifest" not in ds.variables and not recwarn.list


def test_a_deleted_chunk_is_refused_not_read_as_fill(tmp_path, heatmaps):
    path = finished(tmp_path, heatmaps)
    victim = chunk_files(path)[1]
    victim.unlink()
    rel = victim.relative_to(path).as_posix()
    with pytest.raises(XaiCoreError, match=rf"file {rel} is missing; the archive is corrupt; rerun the stage that "
                                           rf"writes heatmaps\.zarr"):
        open_archive(path)


def test_a_truncated_chunk_is_refused(tmp_path, heatmaps):
    path = finished(tmp_path, heatmaps)
    victim = chunk_files(path)[0]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])
    with pytest.raises(XaiCoreError, match=rf"has {len(data) // 2} bytes, {len(data)} when written"):
        open_archive(path)


def test_a_changed_chunk_of_the_same_size_is_refused_when_verified(tmp_path, heatmaps):
    path = finished(tmp_path, heatmaps)
    victim = chunk_files(path)[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    open_archive(path)  # sizes only: a stat per chunk
    with pytest.raises(XaiCoreError, match="changed since it was written"):
        open_archive(path, verify=True)  # what the score and aggregate stages do


def test_plain_xarray_opens_an_archive_with_its_consolidated_metadata(tmp_path, heatmaps, recwarn):
    path = finished(tmp_path, heatmaps)
    ds = xr.open_zarr(str(path))  # consolidated metadata, read by default: no warning, no listing of the store
    assert ds.attrs["complete"] is True and "relevance" in ds and not recwarn.list
    assert ds["relevance"].encoding["compressors"][-1].__class__.__name__ == "Crc32cCodec"
    plain = xr.open_zarr(str(path), chunks=None)  # README's queries in plain xarray: lazy, without dask
    ours = open_archive(path)
    rel = plain.relevance.isel(model=0, explainer=0)
    # numpy's and dask's reductions sum in different orders: equal up to float32 rounding
    xr.testing.assert_allclose(rel.groupby("label").mean(), ours.relevance.isel(model=0, explainer=0).groupby(
        "label").mean().compute(), rtol=1e-6, atol=1e-6)
    wrong = plain.isel(model=0).where(lambda d: d.prediction != d.label, drop=True)
    assert wrong.sizes["sample"] == int((ours.prediction[0] != ours.label).sum())


def test_eight_bytes_overwritten_in_a_chunk_are_refused_by_every_reader(tmp_path, heatmaps):
    """Issue 29, point 7: the crc32c codec of every chunk makes any Zarr 3 reader refuse it, plain xarray too."""
    path = finished(tmp_path, heatmaps)
    victim = max(chunk_files(path), key=lambda p: p.stat().st_size)
    data = bytearray(victim.read_bytes())
    mid = len(data) // 2
    data[mid:mid + 8] = bytes(b ^ 0x5A for b in data[mid:mid + 8])
    victim.write_bytes(bytes(data))
    with pytest.raises(Exception, match="checksum"):
        xr.open_zarr(str(path))["relevance"].load()
    with pytest.raises(Exception, match="checksum"):
        open_archive(path)["relevance"].load()  # lazily opened (sizes agree), refused when the chunk is read
    with pytest.raises(XaiCoreError, match="changed since it was written"):
        open_archive(path, verify=True)


@pytest.mark.parametrize("edit", [
    lambda meta: meta.replace('"complete": true', '"complete": false'),
    lambda meta: meta.replace('"digits"', '"mnist!"'),  # same size, other content
])
def test_changed_metadata_is_refused(tmp_path, heatmaps, edit):
    path = finished(tmp_path, heatmaps)
    meta = path / "zarr.json"
    text = meta.read_text()
    assert edit(text) != text
    meta.write_text(edit(text))
    with pytest.raises(XaiCoreError, match=r"(file zarr\.json changed since it was written|has \d+ bytes)"):
        open_archive(path)


def test_an_added_file_and_a_lost_manifest_are_refused(tmp_path, heatmaps):
    path = finished(tmp_path, heatmaps)
    extra = chunk_files(path)[0].with_name("99")
    extra.write_bytes(b"\0" * 8)
    with pytest.raises(XaiCoreError, match=r"file relevance/c/.*99 was not written with it"):
        open_archive(path)
    extra.unlink()
    (path / "xaicore_manifest" / "zarr.json").unlink()
    with pytest.raises(XaiCoreError, match=r"has no manifest \(xaicore_manifest\)"):
        open_archive(path)


# --- resume: the journal and the writer -------------------------------------------------------------------------

def _digest(path):
    import hashlib

    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def test_a_resumed_archive_equals_an_uninterrupted_one(tmp_path, heatmaps):
    from xaicore.store.journal import Journal

    (tmp_path / "a").mkdir()
    whole = finished(tmp_path / "a", heatmaps)
    blocks = [(mi, ei, start) for mi in range(len(MODELS)) for ei in range(len(EXPLAINERS))
              for start in range(0, N, CHUNK)]
    path = tmp_path / "b" / "heatmaps.zarr"

    def block(writer, mi, ei, start):
        sl = slice(start, start + CHUNK)
        writer.write_block(mi, ei, start, heatmaps["relevance"][mi, ei, sl], heatmaps["conservation_error"][mi, ei, sl],
                           heatmaps["positive_fraction"][mi, ei, sl])

    first = make_writer_with(path, heatmaps, Journal(tmp_path / "j", "key-1"))
    for b in blocks[:5]:
        block(first, *b)
    # a kill: the writer is gone; a chunk written after its last entry is half on disk
    first._rel[1, 1, 4:5] = np.full((1, *SHAPE), 7.0, dtype=np.float32)
    again = make_writer_with(path, heatmaps, Journal(tmp_path / "j", "key-1"))
    assert again.resumed_blocks == set(blocks[:5]) and again.written.sum() == 5 * CHUNK - 1  # the last block: 1
    for b in blocks:
        if b not in again.resumed_blocks:
            block(again, *b)
    assert again.finalize() == path
    assert _digest(path) == _digest(whole)


def test_a_journal_of_another_key_or_a_changed_chunk_is_not_reused(tmp_path, heatmaps):
    from xaicore.store.journal import Journal

    path = tmp_path / "heatmaps.zarr"
    first = make_writer_with(path, heatmaps, Journal(tmp_path / "j", "key-1"))
    for start in range(0, N, CHUNK):
        sl = slice(start, start + CHUNK)
        first.write_block(0, 0, start, heatmaps["relevance"][0, 0, sl], heatmaps["conservation_error"][0, 0, sl],
                          heatmaps["positive_fraction"][0, 0, sl])
    first.mark_not_applicable(1, 1, "no conv layer")
    victim = path.with_name("heatmaps.zarr.partial") / "relevance" / "c" / "0" / "0" / "1" / "0" / "0" / "0"
    victim.write_bytes(victim.read_bytes()[:-1])
    again = make_writer_with(path, heatmaps, Journal(tmp_path / "j", "key-1"))
    assert again.resumed_blocks == {(0, 0, 0), (0, 0, 4)} and again.resumed_not_applicable == {(1, 1)}
    assert again.not_applicable == {"cascade:fc2": {"random": "no conv layer"}}
    other = make_writer_with(path, heatmaps, Journal(tmp_path / "j", "key-2"))  # params or inputs changed
    assert not other.resumed_blocks and not other.written.any()


def test_journal_entries_are_whole_or_absent(tmp_path):
    from xaicore.store.journal import Journal

    j = Journal(tmp_path / "j", "k")
    j.put("cell-0", {"accuracy": 0.5, "curve": np.arange(3.0), "reason": np.str_("text")})
    assert j.get("cell-0")["accuracy"] == 0.5 and str(j.get("cell-0")["reason"]) == "text"
    (tmp_path / "j" / "cell-1.npz").write_bytes(b"PK\x03\x04 half a zip")  # a kill mid-write of a non-atomic writer
    assert j.get("cell-1") is None and not (tmp_path / "j" / "cell-1.npz").exists()
    with pytest.raises(TypeError, match="not objects"):
        j.put("cell-2", {"x": np.array([{}], dtype=object)})
    assert Journal(tmp_path / "j", "k").resumed and Journal(tmp_path / "j", "k2").names() == []
