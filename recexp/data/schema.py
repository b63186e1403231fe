"""Arrow schemas shared by every reader and by the ingest stage.

Readers turn raw source lines into three kinds of tables:

* interactions: one row per (user, item) event, ids still the source's strings;
* items: one row per catalog item with its text metadata;
* rejects: one row per line that could not be used, with the reason and where it came from.

Keeping the raw string ids until the end of ingest lets the k-core filter and the
subsampler work on any source format, and the committed tables keep them as mapping columns.
"""

from __future__ import annotations

import pyarrow as pa

INTERACTIONS = pa.schema(
    [
        ("user", pa.string()),
        ("item", pa.string()),
        # Seconds since epoch, or the position within a sequence for sources without time.
        ("timestamp", pa.int64()),
        ("rating", pa.float32()),
        # Global order of the source line, used to keep the *first* duplicate deterministically.
        ("order", pa.int64()),
    ]
)

ITEMS = pa.schema(
    [
        ("item", pa.string()),
        ("title", pa.string()),
        ("brand", pa.string()),
        ("category", pa.string()),
        ("description", pa.string()),
        # Global order of the source line (as for interactions): the first row of an id wins.
        ("order", pa.int64()),
    ]
)

REJECTS = pa.schema(
    [
        ("source", pa.string()),
        ("line", pa.int64()),
        ("reason", pa.string()),
        # The offending line, decoded with replacement characters and cut to MAX_REJECT_TEXT.
        ("text", pa.string()),
    ]
)

MAX_REJECT_TEXT = 500


def empty(schema: pa.Schema) -> pa.Table:
    """An empty table with ``schema``."""
    return schema.empty_table()
