"""Chronological user sequences, the leave-one-out split and data-set statistics.

The committed ``sequences`` table holds one row per user with the full chronological item list.
The split is a rule, not a copy of the data: train = all but the last two items,
valid target = the second last (history: the items before it), test target = the last
(applied by ``recexp.recommender.batches``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recexp.data.filters import Interactions, dense_codes

SEQUENCES = pa.schema(
    [
        ("user_id", pa.int32()),
        ("item_ids", pa.list_(pa.int32())),
        ("timestamps", pa.list_(pa.int64())),
        ("user", pa.string()),
    ]
)
"""One row per user: dense id, chronological dense item ids and times, original user id."""


def build_tables(x: Interactions, user_names: pa.Array, items: pa.Table) -> tuple[pa.Table, pa.Table]:
    """``(sequences, items)`` with dense ids; ``x`` must be sorted chronologically.

    ``user_names[code]`` is the original id of user code ``code``; ``items`` row ``code`` is item
    code ``code``. Only users and items still present in ``x`` are kept, renumbered densely in
    the order of their codes (first appearance in the source for users, metadata order for items).
    """
    user_codes, user_id = dense_codes(x.user)
    item_codes, item_id = dense_codes(x.item)
    starts = np.flatnonzero(np.r_[True, np.diff(user_id) != 0])  # x is grouped by user
    offsets = pa.array(np.r_[starts, len(x)].astype(np.int32))
    sequences = pa.table(
        {
            "user_id": pa.array(np.arange(len(starts), dtype=np.int32)),
            "item_ids": pa.ListArray.from_arrays(offsets, pa.array(item_id)),
            "timestamps": pa.ListArray.from_arrays(offsets, pa.array(x.timestamp)),
            "user": user_names.take(pa.array(user_codes)),
        },
        schema=SEQUENCES,
    )
    kept_items = items.take(pa.array(item_codes))
    kept_items = kept_items.add_column(0, "item_id", pa.array(np.arange(len(item_codes), dtype=np.int32)))
    return sequences, kept_items


def statistics(sequences: pa.Table, num_items: int) -> dict[str, Any]:
    """Sizes, sparsity and a sequence-length histogram (``{length: number of users}``)."""
    lengths = pc.list_value_length(sequences["item_ids"]).to_numpy()
    num_users, num_interactions = len(lengths), int(lengths.sum())
    histogram = np.bincount(lengths) if num_users else np.zeros(0, dtype=np.int64)
    return {
        "num_users": num_users,
        "num_items": num_items,
        "num_interactions": num_interactions,
        "sparsity": 1.0 - num_interactions / max(1, num_users * num_items),
        "sequence_length": {
            "min": int(lengths.min()) if num_users else 0,
            "max": int(lengths.max()) if num_users else 0,
            "mean": float(lengths.mean()) if num_users else 0.0,
            "histogram": {str(n): int(c) for n, c in enumerate(histogram) if c},
        },
        "split": "leave-one-out: train = all but the last two items, valid = second last, test = last",
    }


def catalog_fingerprint(items: pa.Table) -> str:
    """sha256 of the original item ids in dense-id order: models trained on one catalog refuse
    another (a different set or order of items would silently scramble every score)."""
    import hashlib

    ordered = items.sort_by("item_id")["item"].to_pylist()
    return hashlib.sha256("\n".join(ordered).encode()).hexdigest()
