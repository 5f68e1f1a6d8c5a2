"""Import vendor exports into a dataset folder that follows the input data contract.

``run_import("segment", [export_dir], out_dir)`` reads the export, converts it into contract
tables (`features.contract.TABLES`), and writes ``<table>.parquet`` files into ``out_dir``
(merging with the tables already there when ``merge=True``). Records that cannot be used go to
``<out_dir>/_quarantine/import_<source>.parquet`` with the reason; the returned
`ImportSummary` counts rows read, written, deduplicated and quarantined per table.

One module per source (``segment``, ``amplitude``, ``mixpanel``, ``posthog``, ``stripe``,
``mapped``) turns records into candidate rows (`staging.Staged`); `writer` checks them against
the contract, deduplicates, merges and writes. Each module's docstring documents its mapping.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from features.ingest.amplitude import convert_amplitude
from features.ingest.mapped import MappingError, convert_mapped
from features.ingest.mixpanel import convert_mixpanel
from features.ingest.options import ImportOptions
from features.ingest.posthog import convert_posthog
from features.ingest.segment import convert_segment
from features.ingest.staging import Staged
from features.ingest.stripe import StripeInputError, convert_stripe
from features.ingest.summary import ImportSummary, TableCounts
from features.ingest.writer import IngestError, write_import

__all__ = [
    "SOURCES",
    "ImportOptions",
    "ImportSummary",
    "IngestError",
    "TableCounts",
    "run_import",
]

_ADAPTERS: dict[str, Callable[[Iterable[Path], ImportOptions], Staged]] = {
    "segment": convert_segment,
    "amplitude": convert_amplitude,
    "mixpanel": convert_mixpanel,
    "posthog": convert_posthog,
    "stripe": convert_stripe,
}
SOURCES: tuple[str, ...] = (*_ADAPTERS, "mapped")


def run_import(
    source: str,
    paths: list[Path],
    out_dir: Path,
    *,
    mapping: Path | None = None,
    merge: bool = False,
    options: ImportOptions | None = None,
) -> ImportSummary:
    """Convert the export at ``paths`` from ``source`` into contract tables in ``out_dir``.

    Raises `IngestError` (naming the file, and the column or row where there is one) when the
    import cannot run: unknown source, missing input or mapping, an existing folder without
    ``merge``, or an existing table that cannot be merged. Nothing is written in that case.
    """
    if source not in SOURCES:
        raise IngestError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if not paths:
        raise IngestError("no input files given")
    options = options or ImportOptions()
    try:
        if source == "mapped":
            if mapping is None:
                raise IngestError("source 'mapped' needs a mapping file (--mapping)")
            staged = convert_mapped(paths, mapping)
        else:
            if mapping is not None:
                raise IngestError(f"--mapping applies to source 'mapped', not {source!r}")
            staged = _ADAPTERS[source](paths, options)
    except (FileNotFoundError, MappingError, StripeInputError) as exc:
        raise IngestError(str(exc)) from exc
    return write_import(staged, Path(out_dir), source=source, merge=merge)
