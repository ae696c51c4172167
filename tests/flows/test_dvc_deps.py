"""dvc.yaml's ``deps`` and ``params`` cover what each stage runs and reads, so `dvc repro` never serves an output
that an edit has made stale.

What a stage runs is measured, not declared: the tiny survey runs stage by stage under a trace
(tests/flows/tracing.py) and every project file whose code executed must lie under one of the stage's ``deps``;
every ``params.yaml`` key the stage read must lie under one of its ``params``. The command's own modules
(``python -m flows <stage>``: flows/ and tasks/) are found by following its imports, and xaicore/config.py,
which turns params.yaml into the configuration every stage gets, is required of every stage.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from tests.flows.conftest import STEPS
from tests.flows.tracing import ROOT, StageTrace, covered

pytestmark = pytest.mark.slow

ENTRY_PACKAGES = ("flows", "tasks")
EVERY_STAGE = {"xaicore/config.py"}  # flows/_cli.py: load_config(params) -> the Config the stage runs on


def dvc_stages() -> dict[str, dict]:
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def _module_file(name: str) -> str | None:
    base = ROOT / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(ROOT).as_posix()
    return None


def _imported(path: str) -> set[str]:
    """The flows/tasks modules ``path`` imports, each with the packages above it."""
    names: set[str] = set()
    for node in ast.walk(ast.parse((ROOT / path).read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}  # a submodule, when it is one
    files = set()
    for name in names:
        parts = name.split(".")
        if parts[0] not in ENTRY_PACKAGES:
            continue
        for i in range(1, len(parts) + 1):
            found = _module_file(".".join(parts[:i]))
            if found:
                files.add(found)
    return files


def entry_files(stage: str) -> set[str]:
    """flows/__main__.py imports flows.<stage>; the closure of their imports within flows/ and tasks/."""
    todo, done = ["flows/__init__.py", "flows/__main__.py", f"flows/{stage}.py"], set()
    while todo:
        path = todo.pop()
        if path not in done:
            done.add(path)
            todo.extend(_imported(path) - done)
    return done


def uncovered(stage: str, spec: dict, trace: StageTrace) -> list[str]:
    """One line per file or params key that ``stage`` needs and dvc.yaml does not declare."""
    deps, params = spec.get("deps", []), spec.get("params", [])
    files = trace.files | entry_files(stage) | EVERY_STAGE
    lines = [f"{stage}: code {f} is not under its deps" for f in sorted(files) if not covered(f, deps, "/")]
    lines += [f"{stage}: params key {k} is not under its params" for k in sorted(trace.params)
              if not covered(k, params, ".")]
    return lines


def test_the_traced_stages_are_dvc_yamls_stages(traced_survey):
    _, traces = traced_survey
    assert list(traces) == list(dvc_stages()) == list(STEPS)
    assert all(t.files for t in traces.values())
    assert "xaicore/pipeline/explain_step.py" in traces["explain"].files
    assert "explain.methods" in traces["explain"].params and "roar.repeats" in traces["roar"].params


def test_dvc_deps_and_params_cover_what_each_stage_runs_and_reads(traced_survey):
    _, traces = traced_survey
    stages = dvc_stages()
    missing = [line for stage, trace in traces.items() for line in uncovered(stage, stages[stage], trace)]
    assert not missing, "dvc.yaml misses:\n" + "\n".join(missing)


def test_removing_any_needed_dependency_is_caught(traced_survey):
    """The check can fail: every code dep and params entry that covers something a stage needs is removed in turn,
    and each removal is reported."""
    _, traces = traced_survey
    stages = dvc_stages()
    removals = 0
    for stage, trace in traces.items():
        spec = stages[stage]
        needed_files = trace.files | entry_files(stage) | EVERY_STAGE
        for key, needed, sep in (("deps", needed_files, "/"), ("params", trace.params, ".")):
            for entry in spec.get(key, []):
                if not any(covered(n, [entry], sep) for n in needed):
                    continue  # data, outputs of earlier stages, or code this tiny run did not reach
                others = [e for e in spec[key] if e != entry]
                if all(covered(n, others, sep) for n in needed if covered(n, [entry], sep)):
                    continue  # covered twice (a folder and a file in it): removing one is harmless
                assert uncovered(stage, {**spec, key: others}, trace), f"removing {stage}'s {entry} went unseen"
                removals += 1
    assert removals >= 40


def test_resume_journals_are_keyed_by_what_dvc_hashes():
    """A resumed stage reuses results only under the params and inputs dvc.yaml declares for it (less
    ``score.scheduler``, which says where jobs run, not what they compute): one table, checked against dvc.yaml."""
    from xaicore.outputs import Paths
    from xaicore.pipeline.resume import RESUME_INPUTS, RESUME_PARAMS

    stages, paths = dvc_stages(), Paths(Path("outputs"))
    assert set(RESUME_PARAMS) == set(RESUME_INPUTS) == {"explain", "score", "roar"}
    for stage, keys in RESUME_PARAMS.items():
        assert set(stages[stage]["params"]) - {"score.scheduler"} == set(keys), stage
        inputs = {getattr(paths, name).as_posix() for name in RESUME_INPUTS[stage]}
        assert {d for d in stages[stage]["deps"] if d.startswith("outputs/")} <= inputs, stage
