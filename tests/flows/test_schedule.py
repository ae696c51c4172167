"""``xaicore schedule`` (issue 29, point 14): it brings up the project's Prefect server with its scheduler itself,
serves the survey as a deployment, and the scheduled runs really start, run ``dvc repro`` (unchanged stages
skipped) and finish; each run's output is in ``outputs/.scheduled/``. A project copy with a one-stage dvc.yaml
keeps the runs short; nothing is started by hand."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
STAGE = """stages:
  stamp:
    cmd: python -c "import pathlib, time; pathlib.Path('outputs/stamp.txt').write_text(str(time.time()))"
    deps: [input.txt]
    outs: [outputs/stamp.txt]
"""


def test_a_scheduled_survey_run_starts_and_finishes_under_the_projects_own_server(tmp_path):
    for sub in ("flows", "tasks"):
        shutil.copytree(ROOT / sub, tmp_path / sub, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "dvc.yaml").write_text(STAGE)
    (tmp_path / "input.txt").write_text("data")
    (tmp_path / "outputs").mkdir()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env.update(PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", PREFECT_HOME=str(tmp_path / ".prefect"),
               DVC_NO_ANALYTICS="1", PYTHONPATH=str(tmp_path))
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=env, check=True)
    log = tmp_path / "schedule.log"
    with log.open("w") as fh:
        proc = subprocess.Popen([str(bin_dir / "xaicore"), "schedule", "--every", "10"], cwd=tmp_path, env=env,
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    runs = tmp_path / "outputs" / ".scheduled"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            done = sorted(runs.glob("*.log")) if runs.is_dir() else []
            if len(done) >= 2 and "up to date" in done[1].read_text() or \
                    len(done) >= 2 and "skipping" in done[1].read_text():
                break
            time.sleep(2)
        text = log.read_text()
        assert proc.poll() is None, f"xaicore schedule ended early:\n{text[-3000:]}"
        done = sorted(runs.glob("*.log")) if runs.is_dir() else []
        assert len(done) >= 2, f"no second scheduled run in 240 s:\n{text[-3000:]}"
        first, second = done[0].read_text(), done[1].read_text()
        assert first.startswith("$ -m dvc repro") and "Running stage 'stamp'" in first, first
        assert (tmp_path / "outputs" / "stamp.txt").is_file() and (tmp_path / "dvc.lock").is_file()
        assert "Running stage" not in second, second  # unchanged: DVC skipped it
        assert "Prefect server with its scheduler at http://127.0.0.1:" in text
        assert "ephemeral" not in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
    url = log.read_text().split("scheduler at ", 1)[1].split()[0]
    gone = False  # the server goes with the command: flows/server.py stops it (SIGTERM, SIGKILL after 15 s)
    for _ in range(40):
        try:
            urllib.request.urlopen(f"{url}/health", timeout=2)  # noqa: S310 (a localhost URL)
        except OSError:
            gone = True
            break
        time.sleep(1)
    assert gone, f"the Prefect server at {url} outlived xaicore schedule"
