"""The item catalog as the prompts see it: every title and metadata value sanitised once.

Built on the driver from ``ingest/items.parquet`` and shared with every task, so each title is
cleaned exactly once and every row (prompt or response) uses the same text. The cleaned
catalog is also committed (``catalog.parquet``) so that evaluation can map generated titles
back to item ids with the very strings the model was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from recexp.errors import DataError
from recexp.tasks.sanitize import sanitize_field, sanitize_title

META_FIELDS: dict[str, int] = {"brand": 100, "category": 300, "description": 1000}
"""Item metadata fields used by T4 and the most characters kept of each."""

CATALOG_SCHEMA = pa.schema(
    [("item_id", pa.int32()), ("title", pa.string())] + [(name, pa.string()) for name in META_FIELDS]
)


@dataclass(frozen=True)
class Catalog:
    """Sanitised titles and metadata, indexed by dense item id."""

    titles: tuple[str, ...]
    quoted: tuple[str, ...]
    """``"title"``: how a title appears inside a prompt (quotes delimit it from the template)."""
    meta: dict[str, tuple[str | None, ...]]
    """``{field: values}`` for each of :data:`META_FIELDS`; None where the item has none."""

    def __len__(self) -> int:
        return len(self.titles)


def _column(items: pa.Table, name: str) -> list[str | None]:
    """A string column as a list, all None when the table lacks it."""
    if name not in items.column_names:
        return [None] * items.num_rows
    return items[name].cast(pa.string()).to_pylist()


def build_catalog(items: pa.Table) -> Catalog:
    """Sanitise ``items`` (``item_id`` dense ``0..n-1``, ``title``, optional metadata columns)."""
    ids = items["item_id"].to_numpy()
    order = np.argsort(ids, kind="stable")
    if not np.array_equal(ids[order], np.arange(len(ids))):
        raise DataError("items.parquet: item_id must be dense 0..n-1 without duplicates")
    items = items.take(pa.array(order))
    titles = tuple(sanitize_title(t, i) for i, t in enumerate(_column(items, "title")))
    meta = {
        name: tuple(sanitize_field(v, limit) for v in _column(items, name)) for name, limit in META_FIELDS.items()
    }
    return Catalog(titles, tuple(f'"{t}"' for t in titles), meta)


def catalog_table(catalog: Catalog) -> pa.Table:
    """The sanitised catalog as a table (committed as ``catalog.parquet``)."""
    columns = {"item_id": pa.array(np.arange(len(catalog), dtype=np.int32)), "title": pa.array(catalog.titles)}
    columns.update({name: pa.array(values, pa.string()) for name, values in catalog.meta.items()})
    return pa.table(columns, schema=CATALOG_SCHEMA)
