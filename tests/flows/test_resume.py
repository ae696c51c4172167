"""Kill and resume: the explain and score stages, killed with SIGKILL at a chunk boundary and in the middle of a
chunk, continue from the chunks their journal verified, and the archive equals an uninterrupted run's byte for
byte. A run of another configuration never takes them over.

The stages run on a five-method survey (a gradient method, Grad-CAM, which the MLP zoo model cannot take, and
three perturbation methods with extras) on the tiny survey's data and models, so that the kill points are many
and each run is short.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.flows.conftest import ROOT, tiny_params
from tests.flows.test_pipeline import tree_digest
from xaicore.config import config_from_dict
from xaicore.pipeline import Paths, generate_heatmaps, score_heatmaps
from xaicore.store.journal import RESUME_DIR

pytestmark = [pytest.mark.slow, pytest.mark.hostdep]

RUN = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
from xaicore.config import load_config
from xaicore.pipeline import Paths, generate_heatmaps, score_heatmaps
step = {"explain": generate_heatmaps, "score": score_heatmaps}[sys.argv[1]]
step(load_config(sys.argv[2]), Paths(Path(sys.argv[3])), progress=False)
"""


def small_params() -> dict:
    raw = tiny_params()
    raw["explain"]["methods"] = ["gradient", "gradcam", "occlusion", "lime", "pda"]
    raw["score"]["perturbations"] = ["uniform", "blur"]  # a numba and a torch kernel: enough to resume
    raw["sanity"]["measures"] = ["spearman", "ssim"]
    raw["invariance"]["enabled"] = False
    return raw


@pytest.fixture(scope="module")
def reference(tiny_survey, tmp_path_factory) -> tuple[Path, Path]:
    """An uninterrupted explain and score of the small survey, in process: (outputs folder, params file)."""
    root = tmp_path_factory.mktemp("resume-ref") / "outputs"
    for sub in ("data", "models", "controls", "fitted"):
        shutil.copytree(tiny_survey.root / sub, root / sub)
    shutil.copy(tiny_survey.autoencoder, root / tiny_survey.autoencoder.name)
    params = root.parent / "params.yaml"
    params.write_text(yaml.safe_dump(small_params()))
    cfg = config_from_dict(small_params())
    generate_heatmaps(cfg, Paths(root), progress=False)
    score_heatmaps(cfg, Paths(root), progress=False)
    return root, params


def fresh_copy(reference: tuple[Path, Path], tmp_path: Path, stage: str) -> Path:
    root = tmp_path / "outputs"
    ignore = shutil.ignore_patterns("heatmaps.zarr", "scores.zarr") if stage == "explain" else \
        shutil.ignore_patterns("scores.zarr")
    shutil.copytree(reference[0], root, ignore=ignore)
    return root


def run(stage: str, params: Path, root: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", RUN, stage, str(params), str(root)], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def kill_after(stage: str, params: Path, root: Path, entries: int, delay: float) -> int:
    """Start the stage, SIGKILL it ``delay`` s after its journal holds ``entries`` results; the entries then."""
    journal = root / RESUME_DIR / stage
    proc = run(stage, params, root)
    while proc.poll() is None:
        if journal.is_dir() and len(list(journal.glob("*.npz"))) >= entries:
            time.sleep(delay)
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the stage finished before the kill point"
    return len(list(journal.glob("*.npz")))


ARCHIVE = {"explain": "heatmaps.zarr", "score": "scores.zarr"}
SPANS = {"explain": (3, 60), "score": (1, 6)}  # kill points, in journal entries (of about 110 and 16)


@pytest.mark.parametrize("stage", ["explain", "score"])
def test_a_killed_stage_resumes_to_the_same_bytes(reference, tmp_path, stage):
    """Killed at a random chunk boundary (just after an entry), resumed and killed again in the middle of a
    chunk, resumed to the end: the archive equals the uninterrupted run's."""
    rng = random.Random(stage)
    root = fresh_copy(reference, tmp_path, stage)
    first = rng.randint(*SPANS[stage])
    kept = kill_after(stage, reference[1], root, first, 0.0)
    assert kept >= first and not (root / ARCHIVE[stage]).exists()
    second = kept + rng.randint(1, 4)
    assert kill_after(stage, reference[1], root, second, rng.uniform(0.01, 0.2)) >= second
    proc = run(stage, reference[1], root)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert "resuming" in err and "kept" in err, err[-2000:]
    assert tree_digest(root / ARCHIVE[stage]) == tree_digest(reference[0] / ARCHIVE[stage])
    assert not (root / RESUME_DIR).exists()  # the journal goes with the finished archive


def test_another_configuration_does_not_take_over_a_journal(reference, tmp_path):
    root = fresh_copy(reference, tmp_path, "explain")
    kill_after("explain", reference[1], root, 10, 0.0)
    other = small_params()
    other["explain"]["method_params"]["occlusion"]["stride"] = 7  # another configuration, same folder
    cfg = config_from_dict(other)
    generate_heatmaps(cfg, Paths(root), progress=False)
    again = root.parent / "again" / "outputs"
    for sub in ("data", "models", "controls", "fitted"):
        shutil.copytree(root / sub, again / sub)
    shutil.copy(root / "autoencoder.pt", again / "autoencoder.pt")
    generate_heatmaps(dataclasses.replace(cfg), Paths(again), progress=False)
    assert tree_digest(root / "heatmaps.zarr") == tree_digest(again / "heatmaps.zarr")


def test_a_killed_roar_stage_keeps_its_retrained_models(tiny_survey, tiny_cfg, tmp_path, monkeypatch):
    """ROAR's journal holds each retrained model's accuracy: after an interruption the finished retrainings are
    not run again, and the accuracies equal the uninterrupted (tiny survey's) ones."""
    import numpy as np

    import xaicore.pipeline.roar_step as step
    from xaicore.pipeline import run_roar
    from xaicore.store import open_archive

    paths = Paths(tmp_path / "outputs")
    for sub in ("data", "models", "controls"):
        shutil.copytree(tiny_survey.root / sub, paths.root / sub)
    cfg = dataclasses.replace(tiny_cfg, roar=dataclasses.replace(tiny_cfg.roar, methods=("random",), repeats=1))
    real, calls = step.roar_retrain, []

    def dying(*args, **kwargs):
        calls.append(args[2:5])
        if len(calls) == 3:
            raise KeyboardInterrupt  # as a kill: the third retraining never finishes
        return real(*args, **kwargs)

    monkeypatch.setattr(step, "roar_retrain", dying)
    with pytest.raises(KeyboardInterrupt):
        run_roar(cfg, paths, progress=False)
    assert len(list((paths.root / RESUME_DIR / "roar").glob("*.npz"))) == 2
    calls.clear()
    monkeypatch.setattr(step, "roar_retrain", lambda *a, **k: calls.append(a[2:5]) or real(*a, **k))
    run_roar(cfg, paths, progress=False)
    assert len(calls) == 1  # only the retraining the interruption lost
    for var in ("roar_accuracy", "roar_accuracy_by_fill"):
        ours = open_archive(paths.roar)[var].values
        theirs = open_archive(tiny_survey.roar)[var].sel(explainer=["random"], repeat=[0]).values
        np.testing.assert_array_equal(ours, theirs)
    assert not (paths.root / RESUME_DIR).exists()
