"""``flows/server.py``: the one Prefect server that ``make survey`` runs ``dvc repro`` against."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "flows" / "server.py"

PROBE = """
import os, sys, urllib.request
url = os.environ["PREFECT_API_URL"]
with urllib.request.urlopen(url + "/health", timeout=5) as r:
    assert r.status == 200
print(url)
sys.exit(3)
"""


def test_runs_the_command_against_a_server_it_stops_afterwards(tmp_path):
    """The command sees PREFECT_API_URL of a live server; its exit status is passed on; the server is gone
    when the wrapper returns."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    out = subprocess.run([sys.executable, str(SERVER), sys.executable, "-c", PROBE], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 3, out.stderr
    url = out.stdout.strip().splitlines()[-1]
    assert url.startswith("http://127.0.0.1:") and url.endswith("/api")
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{url}/health", timeout=2)
    assert (tmp_path / "prefect" / "server.log").is_file()


def test_an_existing_server_is_used_as_it_is(tmp_path):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_API_URL": "http://127.0.0.1:9/api"}
    out = subprocess.run([sys.executable, str(SERVER), sys.executable, "-c",
                          "import os; print(os.environ['PREFECT_API_URL'])"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "http://127.0.0.1:9/api"
    assert not (tmp_path / "prefect").exists()


def test_no_command_is_a_usage_error():
    out = subprocess.run([sys.executable, str(SERVER)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "dvc repro" in out.stdout
