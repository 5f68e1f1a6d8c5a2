"""The result of one import: what was read, written, deduplicated and set aside, per table.

For every contract table the counts balance::

    read == written + deduplicated + filtered + sum(quarantined.values())

where ``read`` counts candidate rows (a Segment ``track`` call is one candidate event row; an
account inferred from activity is one candidate account row). ``nulled`` counts values removed
from rows that were still written (an unparseable optional column such as ``employees``).
Records that fail before they belong to any table (bad JSON) are counted under ``input``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from rich.table import Table


class TableCounts(BaseModel):
    """Counts for one table (or for the ``input`` records as a whole)."""

    model_config = ConfigDict(extra="forbid")

    read: int = 0
    written: int = Field(0, description="rows of this import now in the file")
    deduplicated: int = Field(0, description="rows folded into another row with the same key")
    filtered: int = Field(0, description="source rows a mapping's `where` left out on purpose")
    quarantined: dict[str, int] = Field(default_factory=dict, description="reason -> rows")
    nulled: dict[str, int] = Field(default_factory=dict, description="reason -> values removed")
    replaced: int = Field(0, description="rows already in the dataset that this import replaced")
    total: int = Field(0, description="rows in the table file after the import")

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())


class ImportSummary(BaseModel):
    """What `run_import` did, for the CLI to print and tests to assert on."""

    model_config = ConfigDict(extra="forbid")

    source: str
    out_dir: Path
    merged: bool
    records_read: dict[str, int] = Field(default_factory=dict, description="file -> records")
    input: TableCounts = Field(default_factory=TableCounts)
    skipped: dict[str, int] = Field(
        default_factory=dict, description="records this source does not use, by kind"
    )
    tables: dict[str, TableCounts] = Field(default_factory=dict)
    files_written: list[Path] = Field(default_factory=list)
    quarantine_file: Path | None = None

    @staticmethod
    def _reasons(c: TableCounts) -> str:
        reasons = [f"{r}: {n}" for r, n in sorted(c.quarantined.items())]
        reasons += [f"{r}: {n} (value nulled)" for r, n in sorted(c.nulled.items())]
        return f"{c.quarantined_total}" + (f" ({', '.join(reasons)})" if reasons else "")

    def quarantine_counts(self) -> dict[tuple[str, str], int]:
        """(table, reason) -> rows set aside, like the loader's report."""
        counts = {("input", r): n for r, n in self.input.quarantined.items()}
        for table, c in self.tables.items():
            counts.update({(table, r): n for r, n in c.quarantined.items()})
        return counts

    def to_table(self) -> Table:
        """A Rich table: one line per table, reasons spelled out."""
        table = Table(title=f"import from {self.source} -> {self.out_dir}", show_lines=False)
        for name in (
            "table",
            "read",
            "written",
            "dedup",
            "filtered",
            "quarantined",
            "replaced",
            "total",
        ):
            table.add_column(name, justify="left" if name in ("table", "quarantined") else "right")
        if self.input.read:
            table.add_row(
                "input records", str(self.input.read), "", "", "", self._reasons(self.input), "", ""
            )
        for name, c in sorted(self.tables.items()):
            table.add_row(
                name,
                str(c.read),
                str(c.written),
                str(c.deduplicated),
                str(c.filtered),
                self._reasons(c),
                str(c.replaced),
                str(c.total),
            )
        if self.skipped:
            caption = ", ".join(f"{k}: {n}" for k, n in sorted(self.skipped.items()))
            table.caption = f"records not used by this source: {caption}"
        return table
