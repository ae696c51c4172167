"""The base of every state a method fits on training data (PatternNet's signal estimators, PDA's patch Gaussian,
CEM's autoencoder): saved atomically as tensors, numbers and strings only, loaded with ``weights_only=True``.

A state is a dataclass; :meth:`FittedState.save` writes its fields (or what :meth:`~FittedState.to_blob`
returns) through :func:`xaicore._weights.save_tensors`, :meth:`FittedState.load` reads them back through
:func:`xaicore._weights.load_tensors`, and a file that is not such a state is one error naming the stage that
rewrites it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from xaicore._weights import load_tensors, save_tensors
from xaicore.errors import XaiCoreError

S = TypeVar("S", bound="FittedState")


class FittedState:
    """Mixin of a fitted-state dataclass: ``WHAT`` names the file's role, ``RERUN`` the stage that writes it."""

    WHAT: ClassVar[str] = "fitted state"
    RERUN: ClassVar[str] = "the fit stage (python -m flows fit)"

    def to_blob(self) -> dict[str, Any]:
        """What is saved: the dataclass fields by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_blob(cls: type[S], blob: Any) -> S:
        """The state from what :meth:`to_blob` saved."""
        return cls(**blob)

    def save(self, path: str | Path) -> Path:
        """Write the state to ``path`` atomically (a ``.partial`` renamed when complete)."""
        return save_tensors(self.to_blob(), path)

    @classmethod
    def load(cls: type[S], path: str | Path) -> S:
        """Read a state :meth:`save` wrote (``weights_only=True``); anything else is one clear error."""
        blob = load_tensors(path, cls.WHAT, cls.RERUN)
        try:
            return cls.from_blob(blob)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise XaiCoreError(f"{path} is not a {cls.WHAT} ({type(e).__name__}: {e}); rerun {cls.RERUN}") \
                from None
