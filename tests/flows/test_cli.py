"""The flows' command line: bad input gives one clear line and exit status 2; the survey flow runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.flows.conftest import ROOT, tiny_params


def run_flow(stage: str, params: dict, tmp_path: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m flows <stage>``, as dvc.yaml runs it."""
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params))
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / ".prefect"), "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "flows", stage, "--params", str(p), "--out",
                           str(tmp_path / "outputs")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_unknown_stage_one_clear_line(tmp_path):
    res = run_flow("explian", tiny_params(), tmp_path, timeout=60)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "usage: python -m flows" in lines[0] and "'explian'" in lines[0], res.stderr


PROBE = """
import importlib, sys
import flows.explain  # a stage program: Prefect and the flows imported here
from xaicore.pipeline.cluster import dask_client
for main in sys.argv[1:]:
    sys.modules["__main__"] = importlib.import_module(main)  # as `python -m <main>` leaves it
    with dask_client(1, None) as client:
        print(main, *client.run(lambda: ("prefect" in sys.modules, "flows.stages" in sys.modules)).values())
"""


def test_dask_workers_import_the_stage_program_only_without_the_package_entry():
    """multiprocessing's spawn re-imports a program's main module in every child unless it is a package's
    ``__main__``: started as dvc.yaml starts it (``python -m flows explain``), a stage spares its Dask workers
    the import of Prefect and the flows; ``python -m flows.explain`` does not."""
    res = subprocess.run([sys.executable, "-c", PROBE, "flows.__main__", "flows.explain"], cwd=ROOT,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-2:] == ["flows.__main__ (False, False)", "flows.explain (True, True)"], \
        res.stdout
    for stage in ("explain", "score", "roar"):
        assert f"cmd: python -m flows {stage}\n" in (ROOT / "dvc.yaml").read_text()


@pytest.mark.parametrize("edit, needle", [
    (lambda p: p["explain"].update(methods=["gradient", "no_such_method"]), "unknown method 'no_such_method'"),
    (lambda p: p["model"].update(arch="transformer"), "model.arch"),
    (lambda p: p["score"].update(region=0), "score.region"),
    (lambda p: p["score"].update(regoin=4), "score.regoin is not a known key"),
    (lambda p: p["data"].update(dataset="mnist", root="does/not/exist"), "does/not/exist/ does not exist"),
])
def test_bad_input_one_clear_line(tmp_path, edit, needle):
    params = tiny_params()
    edit(params)
    res = run_flow("data", params, tmp_path, timeout=120)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("xaicore: error:") and needle in lines[0], res.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.slow
def test_survey_flow_end_to_end(tmp_path):
    res = run_flow("survey", tiny_params(), tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = tmp_path / "outputs"
    for name in ("heatmaps.zarr", "scores.zarr", "metrics.json", "metrics.csv", "figures/aopc_curves.png",
                 "figures/cascading_randomization.png", "mlflow.db"):
        assert (out / name).exists(), name
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{out / 'mlflow.db'}")
    runs = mlflow.search_runs(experiment_names=["xaicore-survey"])
    assert len(runs) == 1
    assert runs["params.score.region"].iloc[0] == "7"
    assert runs["metrics.trained/gradient/aopc_morf"].notna().all()
