"""One run per output folder: a second survey run (a stage, the survey flow, a scheduled run) on the same
``outputs/`` refuses at once, naming the run that holds it, instead of writing beside it.

The lock is ``flock`` on ``<out>/.xaicore.lock``: the kernel releases it when its process ends, however it ends
(SIGKILL included), so a killed run never leaves a stale lock. ``dvc repro`` has its own lock on the
repository; this one also covers ``python -m flows <stage>`` started by hand or by a schedule.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from xaicore.errors import XaiCoreError

LOCK_NAME = ".xaicore.lock"
_held: dict[Path, int] = {}  # lock path -> depth, so a survey flow may run its stages under its own lock


@contextmanager
def outputs_lock(root: str | Path, what: str) -> Iterator[None]:
    """Hold ``root`` for the duration of the block; raises :class:`XaiCoreError` when another process holds it."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = (root / LOCK_NAME).resolve()
    if _held.get(path):
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise XaiCoreError(f"{root} is in use by another xaicore run ({holder}); wait for it to finish or give "
                           "this run another output folder (--out)") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{what}, pid {os.getpid()}, since {time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
    _held[path] = 1
    try:
        yield
    finally:
        del _held[path]
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
