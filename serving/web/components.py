"""The plain objects the template macros draw: tables, tiles, charts and key-value lists.

Python decides what a cell says (its formatter) and whether it is a number (right-aligned);
the templates decide only the markup. Every text here is plain text: the environment escapes it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from serving.web.format import MISSING, fmt_metric, fmt_num, is_missing

Formatter = Callable[[Any], str]


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, and whether it holds a number (right-aligned)."""

    text: str
    numeric: bool = False


@dataclass(frozen=True)
class Table:
    """A table to draw; no rows draws a "No rows." note instead. `collapsed` folds it away
    behind a `<details>` toggle labelled with the caption."""

    columns: list[str] = field(default_factory=list)
    rows: list[list[Cell]] = field(default_factory=list)
    caption: str | None = None
    collapsed: bool = False


@dataclass(frozen=True)
class Tile:
    """A headline number: a label, the value, and an optional note under it."""

    label: str
    value: str
    note: str = ""


@dataclass(frozen=True)
class Chart:
    """An image (a data URI) with its alt text; no URI draws "No data for: <alt>." instead."""

    uri: str | None
    alt: str


@dataclass(frozen=True)
class Section:
    """One section of a page: its anchor id, its title (heading and navigation link), the
    template that draws its body (under `templates/`) and the data that template reads as
    `section.data`. A page is a list of these, so a new section is one template and one entry."""

    id: str
    title: str
    template: str
    data: Any = None


def _cell(value: Any, fmt: Formatter | None) -> Cell:
    if fmt is not None:
        text = fmt(value)
    elif isinstance(value, pd.Timestamp):
        text = str(value.date())
    elif isinstance(value, (float, np.floating)):
        text = fmt_num(float(value), 2)
    else:
        text = MISSING if is_missing(value) else str(value)
    return Cell(text, isinstance(value, (int, float, np.integer, np.floating)))


def table(
    frame: pd.DataFrame | None,
    formats: Mapping[str, Formatter] | None = None,
    *,
    caption: str | None = None,
    collapsed: bool = False,
) -> Table:
    """`frame` as a `Table`, each column through its formatter in `formats` (dates show the
    day, other floats two decimals, missing values an en dash)."""
    if frame is None or frame.empty:
        return Table(caption=caption, collapsed=collapsed)
    formats = formats or {}
    columns = list(frame.columns)
    rows = [
        [_cell(value, formats.get(col)) for col, value in zip(columns, values, strict=True)]
        for values in zip(*(frame[c].tolist() for c in columns), strict=True)
    ]
    return Table([str(c) for c in columns], rows, caption, collapsed)


def key_values(mapping: Mapping[Any, Any]) -> dict[str, str | dict[str, str]]:
    """A mapping (one level of nesting allowed) with its keys and values as text, for the
    `key_values` macro: a nested mapping becomes a group under its key."""
    return {
        str(key): (
            {str(k): fmt_metric(v) for k, v in value.items()}
            if isinstance(value, Mapping)
            else fmt_metric(value)
        )
        for key, value in mapping.items()
    }
