"""The flows' command line: bad input gives one clear line and exit status 2; the survey flow chains the stages."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest
import yaml

from tests.flows.conftest import ROOT, run_flow, tiny_params


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


BAD_INPUT = [
    (lambda p: p["explain"].update(methods=["gradient", "no_such_method"]), "unknown method 'no_such_method'"),
    (lambda p: p["model"].update(arch="transformer"), "model.arch"),
    (lambda p: p["score"].update(region=0), "score.region"),
    (lambda p: p["score"].update(regoin=4), "score.regoin is not a known key"),
    (lambda p: p["data"].update(dataset="mnist", root="does/not/exist"), "does/not/exist/ does not exist"),
]


def test_bad_input_one_clear_line(tmp_path):
    """As a user runs it, in its own process: one line on stderr (no import noise), exit status 2, no outputs."""
    params = tiny_params()
    BAD_INPUT[0][0](params)
    res = run_flow("data", params, tmp_path, timeout=120)
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("xaicore: error:") and BAD_INPUT[0][1] in lines[0], res.stderr
    assert not (tmp_path / "outputs").exists()


def cli_in_process(params: dict | None, tmp_path, capsys, monkeypatch) -> tuple[int, list[str]]:
    """flows._cli.main as ``python -m flows data`` calls it, in this process: (exit status, stderr lines). Loaded
    from its file: under pytest the name ``flows`` is this test package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("project_flows_cli", ROOT / "flows" / "_cli.py")
    cli = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cli)
    main = cli.main

    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump(params or tiny_params()))
    monkeypatch.setattr(sys, "argv", ["python -m flows data", "--params", str(p), "--out", str(tmp_path / "outputs")])
    monkeypatch.setattr("signal.signal", lambda *args: None)  # main's SIGTERM handler is for its own process
    ran = []
    with pytest.raises(SystemExit) as info:
        main(_Flow(ran), "the data stage")
    assert not ran  # refused before the flow runs
    return info.value.code, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


class _Flow:
    name = "data"

    def __init__(self, ran: list) -> None:
        self.ran = ran

    def __call__(self, **kwargs) -> None:
        self.ran.append(kwargs)


@pytest.mark.parametrize("edit, needle", BAD_INPUT[1:])
def test_bad_input_one_clear_line_in_process(tmp_path, capsys, monkeypatch, edit, needle):
    params = tiny_params()
    edit(params)
    code, lines = cli_in_process(params, tmp_path, capsys, monkeypatch)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("xaicore: error:") and needle in lines[0], lines
    assert not (tmp_path / "outputs").exists()


def test_a_second_run_on_the_same_outputs_refuses_in_one_line(tmp_path, capsys, monkeypatch):
    from tests.test_lock import holder

    proc = holder(tmp_path / "outputs")
    try:
        code, lines = cli_in_process(None, tmp_path, capsys, monkeypatch)
    finally:
        proc.kill()
        proc.wait()
    assert code == 2
    assert len(lines) == 1 and "is in use by another xaicore run (explain flow" in lines[0], lines
    assert not (tmp_path / "outputs" / "data").exists()


def _task_calls(tree: ast.AST) -> list[str]:
    """The ``tasks.<name>(...)`` calls of a flow function, in order (``load_params`` aside)."""
    return [n.func.attr for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
            and isinstance(n.func.value, ast.Name) and n.func.value.id == "tasks" and n.func.attr != "load_params"]


def test_the_survey_flow_chains_dvc_yamls_stage_flows_in_order():
    """``python -m flows survey`` (the scheduled run) calls the same tasks, in the same order, as `dvc repro`'s
    stage flows in dvc.yaml's order: each stage flow runs in tests/flows/test_own_model.py."""
    stage_flows = {}
    for node in ast.parse((ROOT / "flows/stages.py").read_text()).body:
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if isinstance(dec, ast.Call) and getattr(dec.func, "id", "") == "stage_flow":
                    stage_flows[dec.args[0].value] = _task_calls(node)
    stages = list(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    assert set(stages) <= set(stage_flows), set(stages) - set(stage_flows)
    survey = next(n for n in ast.parse((ROOT / "flows/survey.py").read_text()).body
                  if isinstance(n, ast.FunctionDef) and n.name == "survey_flow")
    assert _task_calls(survey) == [call for stage in stages for call in stage_flows[stage]]


def test_every_task_a_flow_calls_is_exported_by_tasks():
    """A task defined in tasks/survey.py but not exported by the package fails only when its stage runs."""
    import tasks

    called = {call for path in (ROOT / "flows").glob("*.py")
              for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.FunctionDef)
              for call in _task_calls(node)}
    assert called and called <= set(tasks.__all__), called - set(tasks.__all__)
    assert all(callable(getattr(tasks, name)) for name in called)
