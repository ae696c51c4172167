"""``xaicore compare A B``: the differences per archive variable against the stated tolerances, the methods' rank
agreement per metric, the findings' verdicts side by side, and the exit status.

Tiny archives built by hand; tests/flows/test_compare_runs.py compares the tiny survey's runs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from xaicore.cli import main
from xaicore.compare import (
    RELEVANCE_RTOL,
    TOLERANCES,
    Tolerance,
    compare_datasets,
    compare_runs,
    rank_agreement,
    tolerance_of,
)
from xaicore.errors import XaiCoreError
from xaicore.store import write_dataset

ROOT = Path(__file__).resolve().parents[1]
TOL = Tolerance(1e-3)


def heatmaps(scale: tuple[float, float] = (1.0, 1e4), seed: int = 0) -> xr.Dataset:
    """A heatmaps-like dataset: two explainers of very different magnitude, an integer coordinate."""
    rng = np.random.default_rng(seed)
    rel = rng.standard_normal((2, 2, 3, 4)).astype(np.float32) * np.asarray(scale, np.float32)[None, :, None, None]
    return xr.Dataset({"relevance": (("model", "explainer", "sample", "x"), rel)},
                      coords={"model": ["trained", "cascade:fc2"], "explainer": ["gradient", "lrp.z"],
                              "sample": [10, 11, 12], "x": np.arange(4),
                              "prediction": (("model", "sample"), np.array([[1, 2, 3], [1, 2, 0]]))})


def row(rows: list, name: str):
    return next(r for r in rows if r.variable == name)


def test_identical_datasets_differ_nowhere() -> None:
    rows = compare_datasets("heatmaps.zarr", heatmaps(), heatmaps())
    assert {r.variable for r in rows} == {"relevance", "prediction"}
    assert all(r.ok and r.max_abs == 0 and r.max_rel == 0 and r.beyond == 0 for r in rows)


def test_relative_difference_is_per_slice() -> None:
    """A difference is judged on its (model, explainer) slice's scale: 0.5 is nothing next to lrp.z's 1e4-sized
    heatmaps, and too much for the gradient's of about 1."""
    a = heatmaps()
    big = a.copy(deep=True)
    big["relevance"][0, 1, 0, 0] += 0.5  # trained, lrp.z
    r = row(compare_datasets("heatmaps.zarr", a, big), "relevance")
    scale = float(np.abs(a["relevance"][0, 1]).max())
    assert r.ok and r.beyond == 0
    assert r.max_abs == pytest.approx(0.5, rel=1e-3)
    assert r.max_rel == pytest.approx(0.5 / scale, rel=1e-3)
    small = a.copy(deep=True)
    small["relevance"][0, 0, 0, 0] += 0.5  # trained, gradient
    r = row(compare_datasets("heatmaps.zarr", a, small), "relevance")
    assert not r.ok and r.beyond == 1
    assert r.max_rel == pytest.approx(0.5 / float(np.abs(a["relevance"][0, 0]).max()), rel=1e-3)


def test_within_and_beyond_the_stated_tolerance() -> None:
    a = heatmaps(scale=(1.0, 1.0))
    scale = np.abs(a["relevance"].values).max(axis=(2, 3), keepdims=True)
    inside = a.copy(deep=True)
    inside["relevance"].values[...] += (0.5 * RELEVANCE_RTOL * scale).astype(np.float32)
    r = row(compare_datasets("heatmaps.zarr", a, inside), "relevance")
    assert r.ok and 0.4 * RELEVANCE_RTOL < r.max_rel < 0.6 * RELEVANCE_RTOL
    outside = a.copy(deep=True)
    outside["relevance"].values[...] += (2 * RELEVANCE_RTOL * scale).astype(np.float32)
    r = row(compare_datasets("heatmaps.zarr", a, outside), "relevance")
    assert not r.ok and r.beyond == r.size == 48
    # --tolerance-scale 4 lets it pass
    assert row(compare_datasets("heatmaps.zarr", a, outside, tolerance_scale=4), "relevance").ok


def test_nan_positions_must_match() -> None:
    a = heatmaps()
    a["relevance"][1, 0] = np.nan  # a method not applicable to a model: NaN heatmaps on both sides are equal
    b = a.copy(deep=True)
    r = row(compare_datasets("heatmaps.zarr", a, b), "relevance")
    assert r.ok and r.nan_mismatch == 0 and r.max_abs == 0
    b["relevance"][0, 0, 1, 2] = np.nan
    r = row(compare_datasets("heatmaps.zarr", a, b, tolerance_scale=1e6), "relevance")
    assert not r.ok and r.nan_mismatch == 1 and "NaN" in r.note


def test_coordinates_and_discrete_values_must_be_equal() -> None:
    a = heatmaps()
    b = a.assign_coords(explainer=["gradient", "lrp.epsilon"])
    rows = compare_datasets("heatmaps.zarr", a, b)
    coord = row(rows, "<explainer>")
    assert not coord.ok and "'lrp.z' in A, 'lrp.epsilon' in B" in coord.note
    assert not row(rows, "relevance").ok and "not compared" in row(rows, "relevance").note
    assert row(rows, "prediction").ok  # over (model, sample): compared
    c = a.assign_coords(prediction=(("model", "sample"), np.array([[1, 2, 3], [1, 2, 9]])))
    r = row(compare_datasets("heatmaps.zarr", a, c), "prediction")
    assert not r.ok and r.discrete and r.beyond == 1 and r.max_abs == 9 and r.note == "1 of 6 entries differ"
    d = a.isel(sample=[0, 1])
    assert not row(compare_datasets("heatmaps.zarr", a, d), "<sample>").ok


def test_tolerance_table_covers_every_archive_variable() -> None:
    assert tolerance_of("heatmaps.zarr/relevance").rtol == RELEVANCE_RTOL
    assert tolerance_of("planted_heatmaps.zarr/relevance").rtol == RELEVANCE_RTOL
    assert tolerance_of("roar.zarr/roar_accuracy").atol == 0.02
    assert tolerance_of("tabular/features.zarr/faithfulness").atol == 1e-3
    assert tolerance_of("models/trained.pt/weights").rtol == 0.1
    assert tolerance_of("something.zarr/new") == TOLERANCES["*"]
    assert all(t.why for t in TOLERANCES.values())


def aopc(values: list[float], names: list[str] | None = None) -> xr.DataArray:
    names = names or [f"m{i}" for i in range(len(values))]
    return xr.DataArray(np.array(values)[:, None], dims=("explainer", "order"),
                        coords={"explainer": names, "order": ["morf"]})


def test_kendall_tau_and_near_ties() -> None:
    [same] = rank_agreement("scores.zarr", "aopc", aopc([1, 2, 3, 4]), aopc([1, 2, 3, 4]), TOL)
    assert same.tau == 1.0 and not same.rank_change and same.ok and same.where == "order=morf"
    # 2.0 and 2.001 are a near-tie (within 1e-3 of each): their swap is reported, not a failure
    [near] = rank_agreement("scores.zarr", "aopc", aopc([1, 2, 2.001, 4]), aopc([1, 2.001, 2, 4]), TOL)
    assert near.rank_change and near.ok and near.swaps == (("m1", "m2"),)
    assert near.tau == pytest.approx(4 / 6)  # 5 concordant pairs, 1 discordant of 6: (5 - 1) / 6
    [far] = rank_agreement("scores.zarr", "aopc", aopc([1, 2, 3, 4]), aopc([4, 2, 3, 1]), TOL)
    assert not far.ok and far.tau == pytest.approx(-4 / 6) and len(far.swaps) == 5  # 1 concordant, 5 not
    # a method scored on one side only (NaN on the other) is left out of the ranking
    [part] = rank_agreement("scores.zarr", "aopc", aopc([1, 2, np.nan]), aopc([1, 2, 3]), TOL)
    assert part.n_methods == 2 and part.tau == 1.0


def write_run(root: Path, ds: xr.Dataset, findings: list[dict]) -> Path:
    write_dataset(ds, root / "heatmaps.zarr", schema="xaicore.heatmaps/1")
    (root / "metrics.json").write_text(json.dumps({"findings": findings}))
    return root


FINDINGS = [{"claim": "Guided Backprop stays similar", "holds": True, "verdict": "holds"},
            {"claim": "LRP above the gradient", "holds": None, "verdict": "undetermined"}]


def test_runs_archives_findings_and_exit_status(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_run(tmp_path / "a", heatmaps(), FINDINGS)
    b = write_run(tmp_path / "b", heatmaps(), FINDINGS)
    result = compare_runs(a, b)
    assert result.reproduced and [f.ok for f in result.findings] == [True, True]
    assert main(["compare", str(a), str(b)]) == 0
    assert "REPRODUCED" in capsys.readouterr().out
    flipped = [{**FINDINGS[0], "holds": False, "verdict": "does not hold"}, FINDINGS[1]]
    c = write_run(tmp_path / "c", heatmaps(), flipped)
    result = compare_runs(a, c)
    assert not result.reproduced
    assert [(f.verdict_a, f.verdict_b, f.ok) for f in result.findings] == [
        ("holds", "does not hold", False), ("undetermined", "undetermined", True)]
    assert main(["compare", str(a), str(c)]) == 1
    out = capsys.readouterr().out
    assert "CHANGED" in out and "finding 'Guided Backprop stays similar': holds -> does not hold" in out
    # an archive on one side only
    write_dataset(heatmaps(), b / "scores.zarr", schema="xaicore.scores/1")
    result = compare_runs(a, b)
    assert not result.reproduced and result.failures == ["scores.zarr/*: archive only in B"]


def test_a_corrupt_archive_is_one_clear_error(tmp_path: Path) -> None:
    a = write_run(tmp_path / "a", heatmaps(), FINDINGS)
    b = write_run(tmp_path / "b", heatmaps(), FINDINGS)
    chunk = next(p for p in (b / "heatmaps.zarr" / "relevance").rglob("*") if p.is_file() and p.name != "zarr.json")
    chunk.unlink()
    with pytest.raises(XaiCoreError, match=r"cannot compare .*heatmaps.zarr.*corrupt"):
        compare_runs(a, b)


def test_cli_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    a = write_run(tmp_path / "a", heatmaps(), FINDINGS)
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as exc:
        main(["compare", "no-such-revision-xyz", str(a)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip() == (
        f"xaicore compare: error: no-such-revision-xyz is neither an outputs folder nor a git revision of {ROOT}")
    with pytest.raises(SystemExit) as exc:
        main(["compare", str(a), str(a), "--tolerance-scale", "0"])
    assert exc.value.code == 2 and "--tolerance-scale must be positive" in capsys.readouterr().err


def test_compare_imports_no_orchestration() -> None:
    import subprocess
    import sys

    code = ("import sys, xaicore.compare; bad = [m for m in ('prefect', 'dvc', 'mlflow') if m in sys.modules]; "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.stdout.strip() == "[]", out.stderr
    assert dataclasses.is_dataclass(TOLERANCES["*"])


def test_runs_from_weights_trained_apart_are_judged_on_accuracies_and_verdicts(tmp_path: Path) -> None:
    """Each machine trained its own models: training amplifies last bits, so the heatmaps differ far beyond any
    rounding tolerance and are reported only; the accuracies (within 2 % of the samples) and the verdicts
    judge the reproduction."""
    import torch

    def run(root: Path, ds: xr.Dataset, weight: float, accuracy: float, findings: list[dict]) -> Path:
        write_run(root, ds, findings)
        (root / "models").mkdir()
        torch.save({"fc.weight": torch.full((2, 2), weight)}, root / "models" / "trained.pt")
        (root / "models" / "index.json").write_text(json.dumps(
            {"trained": {"file": "trained.pt", "test_accuracy": accuracy, "final_loss": 0.1}}))
        return root

    a = run(tmp_path / "a", heatmaps(seed=0), 1.0, 0.95, FINDINGS)
    same = compare_runs(a, run(tmp_path / "same", heatmaps(seed=0), 1.0, 0.95, FINDINGS))
    assert same.reproduced and not same.retrained
    apart = compare_runs(a, run(tmp_path / "b", heatmaps(seed=1), 1.03, 0.94, FINDINGS))
    assert apart.retrained and apart.reproduced
    rel = row(apart.variables, "relevance")
    assert not rel.ok and not rel.judged and rel.max_rel > 0.5  # reported: other heatmaps altogether
    assert "REPRODUCED (weights trained apart)" in apart.format() and "info" in apart.format()
    worse = compare_runs(a, run(tmp_path / "c", heatmaps(seed=1), 1.03, 0.90, FINDINGS))
    assert worse.retrained and not worse.reproduced
    assert worse.failures == ["models/index.json/trained/test_accuracy: beyond tolerance"]
    flipped = [{**FINDINGS[0], "holds": False, "verdict": "does not hold"}, FINDINGS[1]]
    assert not compare_runs(a, run(tmp_path / "d", heatmaps(seed=1), 1.03, 0.95, flipped)).reproduced
