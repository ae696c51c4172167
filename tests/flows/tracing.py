"""What one stage runs: the project files whose code executes, and the ``params.yaml`` keys it reads.

The DVC-coverage test compares these with the stage's ``deps`` and ``params`` in dvc.yaml. Code is seen by a
global trace function (one call per Python frame, no line events), on the calling thread and on threads started
while tracing. Params are seen by recording every field read on the configuration's frozen dataclasses,
addressed by their dotted path from the root (``explain.method_params``).

Two blind spots, both stated: a module whose code runs only at import time (the test process has imported
everything before the stage starts) and a configuration section copied with ``dataclasses.replace`` are not
seen. Neither happens in the pipeline steps today.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PROJECT_DIRS = ("xaicore", "flows", "tasks")


@dataclasses.dataclass
class StageTrace:
    files: set[str] = dataclasses.field(default_factory=set)  # project files, posix paths relative to ROOT
    params: set[str] = dataclasses.field(default_factory=set)  # dotted params.yaml keys


def _sections(cfg: Any) -> dict[int, tuple[str, Any]]:
    """id(section) -> (its dotted prefix, "" for the root; the section), for every dataclass in ``cfg``."""
    where: dict[int, tuple[str, Any]] = {}

    def walk(obj: Any, prefix: str) -> None:
        where[id(obj)] = (prefix, obj)
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            if dataclasses.is_dataclass(value) and not isinstance(value, type):
                walk(value, f"{prefix}{f.name}.")

    walk(cfg, "")
    return where


@contextmanager
def trace_stage(cfg: Any) -> Iterator[StageTrace]:
    """Record what runs inside the ``with`` block; ``cfg`` is the configuration the stage is given."""
    rec = StageTrace()
    where = _sections(cfg)
    classes = {type(obj): type(obj).__dict__.get("__getattribute__") for _, obj in where.values()}

    def recording(cls: type) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}

        def __getattribute__(self: Any, name: str) -> Any:  # noqa: N807 - the slot being replaced
            value = object.__getattribute__(self, name)
            if name in names:
                section = where.get(id(self))
                if section is not None and id(value) not in where:
                    rec.params.add(section[0] + name)
            return value

        return __getattribute__

    root = str(ROOT) + "/"
    prefixes = tuple(root + d + "/" for d in PROJECT_DIRS)
    files: set[str] = set()

    def tracer(frame: Any, event: str, arg: Any) -> None:
        name = frame.f_code.co_filename
        if name.startswith(prefixes):
            files.add(name)

    for cls in classes:
        cls.__getattribute__ = recording(cls)  # type: ignore[method-assign]
    threading.settrace(tracer)
    sys.settrace(tracer)
    try:
        yield rec
    finally:
        sys.settrace(None)
        threading.settrace(None)  # type: ignore[arg-type]
        for cls, original in classes.items():
            if original is None:
                del cls.__getattribute__
            else:
                cls.__getattribute__ = original  # type: ignore[method-assign]
        rec.files |= {name[len(root):] for name in files}


def covered(item: str, declared: list[str], sep: str) -> bool:
    """``item`` is one of ``declared`` or lies under one (a folder for files, a section for params)."""
    return any(item == d or item.startswith(d.rstrip(sep) + sep) for d in declared)
