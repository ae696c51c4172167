"""The blocks a report section is made of: a :class:`Section` (a title, blocks and figures) and a
:class:`Table` (rows and the keys to show), with :func:`cell`, how a value is written in a table."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Table:
    rows: list[dict[str, Any]]
    keys: list[str]


@dataclass
class Section:
    title: str
    blocks: list[str | dict[str, Any] | Table] = field(default_factory=list)  # text, finding, table
    figures: list[str] = field(default_factory=list)  # file names under figures/, shown by the HTML page
    anchor: str = ""

    def __post_init__(self) -> None:
        self.anchor = self.anchor or "".join(c if c.isalnum() else "-" for c in self.title.lower()).strip("-")


def cell(v: Any) -> str:
    """A table cell: floats to 4 significant digits, None empty."""
    return "" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)
