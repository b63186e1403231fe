"""Which files and parsers each ``data.format`` uses.

A format names default globs for its interaction and item files and the parser for each file,
chosen by the file's name (Parquet files go through Arrow parsers, everything else is lines).
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from recexp.data import amazon, recbole, tabular
from recexp.data.source import ArrowParser, LineParser


@dataclass(frozen=True)
class FileReader:
    """How to read one file: a line parser (with or without header) or an Arrow parser."""

    line_parser: LineParser | None = None
    has_header: bool = False
    arrow_parser: ArrowParser | None = None


@dataclass(frozen=True)
class Format:
    interactions: tuple[str, ...]
    """Default globs of interaction files."""
    items: tuple[str, ...]
    """Default globs of item files (matched first: a file matching both is an item file)."""
    interaction_reader: FileReader
    item_reader: FileReader
    parquet_interaction_reader: FileReader | None = None
    parquet_item_reader: FileReader | None = None

    def reader(self, uri: str, kind: str) -> FileReader:
        """The reader for file ``uri`` of ``kind`` (``interactions`` or ``items``)."""
        if fnmatch.fnmatch(uri.lower(), "*.parquet"):
            reader = self.parquet_interaction_reader if kind == "interactions" else self.parquet_item_reader
            if reader is None:
                raise ValueError(f"{uri}: Parquet input is only supported with data.format=tabular")
            return reader
        return self.interaction_reader if kind == "interactions" else self.item_reader


FORMATS: dict[str, Format] = {
    "amazon2018": Format(
        interactions=("*.json", "*.json.gz", "*.jsonl", "*.jsonl.gz"),
        items=("meta*",),
        interaction_reader=FileReader(amazon.parse_amazon2018_reviews),
        item_reader=FileReader(amazon.parse_amazon2018_meta),
    ),
    "amazon2023": Format(
        interactions=("*.jsonl", "*.jsonl.gz", "*.json", "*.json.gz"),
        items=("meta*",),
        interaction_reader=FileReader(amazon.parse_amazon2023_reviews),
        item_reader=FileReader(amazon.parse_amazon2023_meta),
    ),
    "recbole": Format(
        interactions=("*.inter",),
        items=("*.item",),
        interaction_reader=FileReader(recbole.parse_recbole_inter, has_header=True),
        item_reader=FileReader(recbole.parse_recbole_item, has_header=True),
    ),
    "tabular": Format(
        interactions=("*.csv", "*.csv.gz", "*.parquet"),
        items=("items*",),
        interaction_reader=FileReader(tabular.parse_csv_interactions, has_header=True),
        item_reader=FileReader(tabular.parse_csv_items, has_header=True),
        parquet_interaction_reader=FileReader(arrow_parser=tabular.from_arrow_interactions),
        parquet_item_reader=FileReader(arrow_parser=tabular.from_arrow_items),
    ),
}
FORMATS["synthetic"] = FORMATS["amazon2018"]  # generated files are Amazon 2018 JSON lines
