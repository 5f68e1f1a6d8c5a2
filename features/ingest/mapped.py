"""Mapped tables: any CSV/Parquet extract mapped onto the contract by a TOML file.

For warehouse extracts that no vendor adapter knows. The mapping names the input tables, then
builds each contract table from one or more blocks::

    version = 1

    [sources.accounts]                  # a name for an input table ...
    file = "crm_accounts*.csv"          # ... and the file name(s) it is read from (a glob
                                        # matched against the input files; several = one table)

    [[tables.accounts]]                 # one block; repeat [[tables.X]] to union several
    from = "accounts"                   # the source table (or `rows = [{...}, ...]` inline)
    where = { status = ["live", "trial"] }          # keep rows whose text is one of these
    join = [{ source = "owners", on = "owner_id", columns = ["owner_name"] }]
    distinct = false                    # true: drop repeated output rows (derived tables)

    [tables.accounts.columns]           # contract (or extra) column = rule
    account_id = "id"                                   # a source column, renamed
    created_at = { column = "signup", format = "%d/%m/%Y", timezone = "Europe/Paris" }
    segment = { column = "tier", map = { S = "smb", M = "mid_market" }, default = "smb" }
    mrr = { column = "mrr_cents", scale = 0.01 }
    role = { value = "owner" }                          # a constant
    user_id = { template = "{id}-owner" }               # text built from source columns

Rules: ``column``, ``value`` or ``template`` (exactly one), then optionally ``format``
(``strptime`` codes, ``ISO8601``, or ``unix_s`` / ``unix_ms``) with ``timezone`` for naive
source times (default UTC), ``map`` (source text -> value; an unmapped value quarantines the row as
``unmapped_<column>`` unless ``default`` is set), ``scale`` (multiply a number) and
``default`` (used when the value is missing). Unlisted source columns are not imported; listed
non-contract columns are kept (on ``accounts`` they become static attributes).

A join is a lookup: each row must find exactly one row of the joined source with the same
``on`` value (``source_on`` when the joined source names it differently); rows that find none
are quarantined as ``no_match_<on>``. Rows a ``where`` leaves out are counted as filtered.
"""

from __future__ import annotations

import fnmatch
import json
import tomllib
from collections.abc import Iterable
from pathlib import Path
from string import Formatter
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from features.contract import TABLES
from features.ingest.readers import Origin, expand_paths, is_missing, read_table
from features.ingest.staging import ORIGIN_COLUMNS, Staged

Scalar = str | int | float | bool


class ColumnRule(BaseModel):
    """How one output column is computed from a source row."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    column: str | None = None
    value: Scalar | None = None
    template: str | None = None
    format: str | None = None
    timezone: str = "UTC"
    map: dict[str, Scalar] | None = None
    default: Scalar | None = None
    scale: float | None = None

    @model_validator(mode="after")
    def _one_input(self) -> ColumnRule:
        given = [x for x in (self.column, self.value, self.template) if x is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of column, value, template")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone {self.timezone!r}") from exc
        return self


class JoinRule(BaseModel):
    """Look up columns of another source table by a shared key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str
    on: str
    source_on: str | None = None
    columns: list[str]


class TableRule(BaseModel):
    """One block producing rows of one contract table."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str | None = Field(None, alias="from")
    rows: list[dict[str, Scalar]] | None = None
    where: dict[str, list[Scalar]] = Field(default_factory=dict)
    join: list[JoinRule] = Field(default_factory=list)
    distinct: bool = False
    columns: dict[str, str | ColumnRule] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_origin(self) -> TableRule:
        if (self.from_ is None) == (self.rows is None):
            raise ValueError("give exactly one of `from` (a source) or `rows` (inline rows)")
        if self.from_ is not None and not self.columns:
            raise ValueError("a block reading a source needs [columns]")
        return self


class SourceRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    file: str


class Mapping(BaseModel):
    """A whole mapping file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal[1] = 1
    sources: dict[str, SourceRule] = Field(default_factory=dict)
    tables: dict[str, list[TableRule]]

    @model_validator(mode="after")
    def _known_names(self) -> Mapping:
        unknown = sorted(set(self.tables) - set(TABLES))
        if unknown:
            raise ValueError(f"unknown contract table(s): {', '.join(unknown)}")
        for table, blocks in self.tables.items():
            for block in blocks:
                used = [block.from_, *(j.source for j in block.join)]
                missing = [s for s in used if s is not None and s not in self.sources]
                if missing:
                    raise ValueError(f"tables.{table}: undeclared source(s) {missing}")
        return self


class MappingError(ValueError):
    """The mapping file is invalid or does not fit the input files."""


def load_mapping(path: Path) -> Mapping:
    """Read and validate a TOML mapping file."""
    try:
        return Mapping.model_validate(tomllib.loads(Path(path).read_text()))
    except (OSError, tomllib.TOMLDecodeError, ValidationError) as exc:
        raise MappingError(f"mapping {path}: {exc}") from exc


def convert_mapped(paths: Iterable[Path], mapping_path: Path) -> Staged:
    """Input tables -> candidate contract rows, as the mapping says."""
    mapping = load_mapping(mapping_path)
    files = expand_paths(paths)
    staged = Staged()
    frames: dict[str, pd.DataFrame] = {}

    def source(name: str) -> pd.DataFrame:
        if name not in frames:
            frames[name] = _read_source(name, mapping.sources[name].file, files, staged)
        return frames[name]

    for table, blocks in mapping.tables.items():
        for number, block in enumerate(blocks, start=1):
            where = f"{mapping_path} tables.{table}[{number}]"
            if block.rows is not None:
                frame = _inline(block.rows, mapping_path)
            else:
                assert block.from_ is not None
                frame = source(block.from_)
                if block.where:
                    keep = pd.Series(True, index=frame.index)
                    for column, allowed in block.where.items():
                        _require(frame, column, where)
                        keep &= frame[column].map(_text).isin([_text(a) for a in allowed])
                    staged.filtered[table] += int((~keep).sum())
                    frame = frame.loc[keep]
                for rule in block.join:
                    frame = _join(frame, rule, source(rule.source), staged, table, where)
            _stage(frame, block, table, staged, where)
    return staged


def _read_source(name: str, pattern: str, files: list[Path], staged: Staged) -> pd.DataFrame:
    matched = [f for f in files if fnmatch.fnmatch(f.name, pattern)]
    if not matched:
        raise MappingError(f"source {name!r}: no input file matches {pattern!r}")
    parts = []
    for path in matched:
        frame = read_table(path).astype(object)
        frame = frame.where(frame.notna(), None)
        first = 2 if path.suffix.lower() == ".csv" else 1
        raw = [json.dumps(r, default=str) for r in frame.to_dict(orient="records")]
        frame["_file"] = str(path)
        frame["_line"] = range(first, first + len(frame))
        frame["_raw"] = raw
        staged.records_read[str(path)] += len(frame)
        parts.append(frame)
    return pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]


def _inline(rows: list[dict[str, Scalar]], mapping_path: Path) -> pd.DataFrame:
    frame = pd.DataFrame(rows, dtype=object)
    frame["_file"] = str(mapping_path)
    frame["_line"] = None
    frame["_raw"] = [json.dumps(r) for r in rows]
    return frame


def _join(
    frame: pd.DataFrame, rule: JoinRule, other: pd.DataFrame, staged: Staged, table: str, where: str
) -> pd.DataFrame:
    other_on = rule.source_on or rule.on
    _require(frame, rule.on, where)
    for column in (other_on, *rule.columns):
        _require(other, column, f"{where} join {rule.source}")
    lookup = other[[other_on, *rule.columns]]
    if lookup[other_on].duplicated().any():
        raise MappingError(f"{where}: join key {other_on!r} is not unique in {rule.source!r}")
    lookup = lookup.rename(columns={other_on: "_join_key"}).set_index("_join_key")
    keys = frame[rule.on].map(_text)
    found = keys.isin(lookup.index.map(_text))
    for i in frame.index[~found]:
        staged.quarantine(table, f"no_match_{rule.on}", _origin(frame, i))
    frame = frame.loc[found].copy()
    lookup.index = lookup.index.map(_text)
    for column in rule.columns:
        frame[column] = keys[found].map(lookup[column]).to_numpy()
    return frame


def _stage(frame: pd.DataFrame, block: TableRule, table: str, staged: Staged, where: str) -> None:
    if block.rows is not None and not block.columns:
        out = frame.copy()
    else:
        out = pd.DataFrame(index=frame.index)
        reason = pd.Series(None, index=frame.index, dtype=object)
        for column, rule in block.columns.items():
            spec = ColumnRule(column=rule) if isinstance(rule, str) else rule
            out[column], unmapped = _compute(frame, spec, where)
            reason = reason.where(reason.notna() | ~unmapped, f"unmapped_{column}")
        for i in frame.index[reason.notna()]:
            staged.quarantine(table, reason[i], _origin(frame, i))
        out = out.loc[reason.isna()]
        for col in ORIGIN_COLUMNS:
            out[col] = frame.loc[out.index, col]
    if block.distinct:
        data = [c for c in out.columns if c not in ORIGIN_COLUMNS]
        before = len(out)
        out = out.drop_duplicates(subset=data)
        staged.deduplicated[table] += before - len(out)
    staged.add_frame(table, out.reset_index(drop=True))


def _compute(frame: pd.DataFrame, rule: ColumnRule, where: str) -> tuple[pd.Series, pd.Series]:
    """The column's values, and which rows had a value its ``map`` does not know."""
    index = frame.index
    bad = pd.Series(False, index=index)
    if rule.value is not None:
        values = pd.Series([rule.value] * len(index), index=index, dtype=object)
    elif rule.template is not None:
        values = _template(frame, rule.template, where)
    else:
        assert rule.column is not None
        _require(frame, rule.column, where)
        values = frame[rule.column].astype(object)
    present = values.map(lambda v: _text(v) is not None)
    if rule.map is not None:
        table = {str(k): v for k, v in rule.map.items()}
        texts = values.map(_text)
        known = texts.isin(list(table))
        bad = present & ~known & (rule.default is None)
        values = texts.map(lambda t: table.get(t) if t is not None else None).astype(object)
    if rule.scale is not None:
        numbers = pd.to_numeric(values, errors="coerce")
        values = values.where(~numbers.notna(), numbers * rule.scale).astype(object)
    if rule.format is not None:
        values = _times(values, rule.format, rule.timezone)
    if rule.default is not None:
        values = values.where(values.map(lambda v: _text(v) is not None), rule.default)
    return values.astype(object), bad


def _times(values: pd.Series, fmt: str, timezone: str) -> pd.Series:
    """Source times read with ``fmt`` and made naive UTC; unreadable ones stay as they were
    (the contract check then quarantines them as unparseable)."""
    text = values.map(_text)
    if fmt in ("unix_s", "unix_ms"):
        parsed = pd.to_datetime(
            pd.to_numeric(text, errors="coerce"), unit="s" if fmt == "unix_s" else "ms", utc=True
        )
    else:
        parsed = pd.to_datetime(text, format=fmt, errors="coerce")
        if parsed.dt.tz is None:
            parsed = parsed.dt.tz_localize(timezone, ambiguous="NaT", nonexistent="NaT")
    naive = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return pd.Series(
        [n.to_pydatetime() if not pd.isna(n) else v for n, v in zip(naive, values, strict=True)],
        index=values.index,
        dtype=object,
    )


def _template(frame: pd.DataFrame, template: str, where: str) -> pd.Series:
    result = pd.Series([""] * len(frame), index=frame.index, dtype=object)
    missing = pd.Series(False, index=frame.index)
    for literal, field, _, _ in Formatter().parse(template):
        result = result + literal
        if field:
            _require(frame, field, where)
            texts = frame[field].map(_text)
            missing |= texts.isna()
            result = result + texts.fillna("")
    return result.where(~missing, None)


def _require(frame: pd.DataFrame, column: str, where: str) -> None:
    if column not in frame.columns:
        raise MappingError(f"{where}: source has no column {column!r}")


def _text(value: Any) -> str | None:
    """A cell as text for `where`, `map` and templates (True -> "True", 2.0 -> "2")."""
    if is_missing(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


def _origin(frame: pd.DataFrame, i: Any) -> Origin:
    line = frame.at[i, "_line"]
    return Origin(
        str(frame.at[i, "_file"]), None if line is None else int(line), str(frame.at[i, "_raw"])
    )
