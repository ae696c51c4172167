"""Resume at chunk granularity: a stage records each finished job's result in a journal, and a rerun after a kill
takes the recorded results instead of computing them again.

A journal is a folder (``outputs/.xaicore-resume/<stage>/``) of one ``.npz`` per finished job, next to a ``KEY``
file. The key is a hash of everything the results depend on: the stage's params, its input files, and the
xaicore source (:func:`run_key`). A journal whose key differs from the run's is wiped, so results computed
under another configuration or other code are never reused. Each entry is written to a temporary name, synced
and renamed, so a kill leaves either the whole entry or none; an entry that cannot be read is dropped and its
job runs again. The stage deletes its journal once its archive is complete.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from xaicore.atomic import write_bytes

RESUME_DIR = ".xaicore-resume"
_KEY = "KEY"


@cache
def source_digest() -> str:
    """SHA-256 of xaicore's own source files (their paths and contents)."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.py")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def _digest_file(h: Any, path: Path, root: Path) -> None:
    h.update(path.relative_to(root).as_posix().encode())
    with path.open("rb") as f:
        h.update(hashlib.file_digest(f, "sha256").digest())


def run_key(stage: str, params: Any, inputs: Iterable[Path]) -> str:
    """The hash a journal is keyed by: ``stage``, ``params`` (JSON-able), the contents of the ``inputs`` (files,
    or folders hashed file by file) and :func:`source_digest`."""
    h = hashlib.sha256()
    h.update(json.dumps({"stage": stage, "params": params, "source": source_digest()}, sort_keys=True,
                        default=str).encode())
    for item in inputs:
        item = Path(item)
        manifest = item / "xaicore_manifest" / "zarr.json"
        if manifest.is_file():  # a finished archive: its manifest holds every file's hash
            _digest_file(h, manifest, item.parent)
        elif item.is_dir():
            for p in sorted(q for q in item.rglob("*") if q.is_file()):
                _digest_file(h, p, item.parent)
        elif item.is_file():
            _digest_file(h, item, item.parent)
        else:
            h.update(f"absent:{item.name}".encode())
    return h.hexdigest()


class Journal:
    """The finished jobs of one stage's run; see the module docstring."""

    def __init__(self, root: str | Path, key: str) -> None:
        self.root = Path(root)
        key_file = self.root / _KEY
        if key_file.is_file() and key_file.read_text() == key:
            self.resumed = any(self.root.glob("*.npz"))
        else:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root.mkdir(parents=True)
            write_bytes(key_file, key.encode())
            self.resumed = False

    def _path(self, name: str) -> Path:
        return self.root / f"{name}.npz"

    def get(self, name: str) -> dict[str, np.ndarray] | None:
        """The recorded arrays of job ``name``, or None when it has none (or an unreadable one, now dropped)."""
        path = self._path(name)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            path.unlink(missing_ok=True)
            return None

    def put(self, name: str, arrays: dict[str, Any]) -> None:
        """Record job ``name``'s result (arrays or numbers; no objects), atomically."""
        import io

        values = {k: np.asarray(v) for k, v in arrays.items()}
        objects = [k for k, v in values.items() if v.dtype.kind == "O"]
        if objects:
            raise TypeError(f"journal entries hold arrays of numbers or text, not objects: {objects}")
        buf = io.BytesIO()
        np.savez(buf, **values)
        write_bytes(self._path(name), buf.getvalue())

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.root.glob("*.npz"))

    def remove(self) -> None:
        """Delete the journal: the stage's archive is complete."""
        shutil.rmtree(self.root, ignore_errors=True)
        try:
            self.root.parent.rmdir()  # the resume folder, when no other stage has a journal in it
        except OSError:
            pass

