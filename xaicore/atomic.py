"""Atomic writes: every file and folder xaicore writes appears whole or not at all.

A writer fills ``<name>.partial`` beside the target and renames it over the target only when it is complete,
so a killed run never leaves a file that looks finished (DESIGN.md: no partial artifact that looks complete).
Files are flushed to disk (fsync) before the rename; a rename within one folder is atomic on POSIX.

* :func:`atomic_path` — the general form: a context manager yielding the ``.partial`` path, for writers that
  take a path (``np.savez``, ``torch.save``, a Zarr store, a folder of files);
* :func:`write_bytes`, :func:`write_text` — whole contents at once.

``keep_on_error=True`` keeps the ``.partial`` of a failed write (the heatmap archive resumes from it); by
default it is removed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

PARTIAL = ".partial"


def partial_path(path: str | Path, suffix: str = "") -> Path:
    """``<path>.partial`` (with ``suffix`` after it, for writers that insist on an extension: ``.npz``)."""
    path = Path(path)
    return path.with_name(path.name + PARTIAL + suffix)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fsync(path: Path) -> None:
    if path.is_file():
        with path.open("rb") as f:
            os.fsync(f.fileno())


@contextlib.contextmanager
def atomic_path(path: str | Path, *, suffix: str = "", keep_on_error: bool = False,
                fresh: bool = True) -> Iterator[Path]:
    """Yield ``<path>.partial`` to write into; when the block completes, it replaces ``path`` (a file, or a
    folder: the old one is removed first). ``fresh``: remove a leftover ``.partial`` before the block (False:
    the writer resumes it). On an exception the ``.partial`` is removed unless ``keep_on_error``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path, suffix)
    if fresh:
        _remove(tmp)
    try:
        yield tmp
    except BaseException:
        if not keep_on_error:
            _remove(tmp)
        raise
    commit(tmp, path)


def commit(tmp: str | Path, path: str | Path) -> Path:
    """Rename the complete ``tmp`` (a file or a folder) over ``path``: the last step of every atomic write, for
    writers that build their ``.partial`` across calls (the resumable archive writers) and of :func:`atomic_path`."""
    tmp, path = Path(tmp), Path(path)
    if tmp.is_dir():
        _remove(path)
        tmp.rename(path)
    else:
        _fsync(tmp)
        os.replace(tmp, path)
    return path


def write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return write_bytes(path, text.encode("utf-8"))
