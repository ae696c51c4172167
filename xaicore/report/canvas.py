"""Where every report figure is drawn and saved: matplotlib without a display (Agg), and :func:`save`, which
writes a figure atomically with no timestamp or version in it, so the same figure is the same bytes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xaicore.atomic import atomic_path  # noqa: E402

__all__ = ["plt", "save"]

_META = {"Software": "xaicore"}  # no timestamps or versions: figures are reproducible bytes


def save(fig: plt.Figure, path: Path) -> Path:
    """Lay out ``fig``, write it to ``path`` (its suffix names the format) atomically, and close it."""
    fig.tight_layout()
    with atomic_path(path, suffix=path.suffix) as tmp:  # the suffix tells savefig the format
        fig.savefig(tmp, dpi=100, metadata=_META)
    plt.close(fig)
    return path
