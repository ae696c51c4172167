"""One run per output folder (xaicore.pipeline.lock): a second one refuses naming the holder; a killed holder
leaves no stale lock."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from xaicore.errors import XaiCoreError
from xaicore.pipeline.lock import outputs_lock

HOLD = """
import fcntl, os, sys, time
fd = os.open(os.path.join(sys.argv[1], ".xaicore.lock"), os.O_RDWR | os.O_CREAT, 0o644)
fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.ftruncate(fd, 0)
os.pwrite(fd, f"explain flow, pid {os.getpid()}, since 2026-11-30 08:00:00".encode(), 0)
print("held", flush=True)
time.sleep(120)
"""  # another run's hold, as outputs_lock takes it (flock and the holder's line), without importing xaicore


def holder(root) -> subprocess.Popen:
    os.makedirs(root, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_refuses_naming_the_holder_and_a_killed_holder_leaves_no_lock(tmp_path):
    proc = holder(tmp_path / "outputs")
    try:
        with pytest.raises(XaiCoreError, match=rf"outputs is in use by another xaicore run \(explain flow, pid "
                                               rf"{proc.pid}, since .*\); wait for it"):
            with outputs_lock(tmp_path / "outputs", "survey flow"):
                pass
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with outputs_lock(tmp_path / "outputs", "survey flow"):  # the kernel released the killed run's lock
        assert "survey flow, pid" in (tmp_path / "outputs" / ".xaicore.lock").read_text()


def test_the_holder_may_reenter_and_releases_on_exit(tmp_path):
    with outputs_lock(tmp_path, "survey flow"):
        with outputs_lock(tmp_path, "explain flow"):  # the survey flow runs its stages under its own lock
            pass
    proc = holder(tmp_path)  # released: another process takes it
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
