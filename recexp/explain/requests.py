"""What the ``explain`` stage is asked to explain: one request row per (user, item).

Two sources, both giving :data:`REQUEST_SCHEMA` rows sorted by ``(user_id, rank, item_id)``:

* :func:`topk_requests`: each user's top-``k`` items from ``train-recommender``'s
  ``topk.parquet`` (:func:`read_last_topk`) at the user's last exported position ``t`` (the ranking given
  ``item_ids[:t]``, history excluded); ``history`` is that prefix, ``rank`` 1..k, ``rec_score``
  the recommender's score;
* :func:`pair_requests`: explicit ``(user_id, item_id)`` pairs from a Parquet or CSV file;
  ``history`` is the user's whole sequence (``position`` = its length), and ``rank`` /
  ``rec_score`` are left for the workers to compute (``-1`` / NaN here, see
  :func:`recexp.explain.batch.score_requests`). Repeated pairs are kept once.

Bad input is one :class:`~recexp.errors.DataError` naming the file and the row (line for CSV).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recexp.errors import DataError
from recexp.store import StageDir, open_fs

REQUEST_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("item_id", pa.int32()),
        ("rank", pa.int32()),
        ("rec_score", pa.float32()),
        ("position", pa.int32()),
        ("history", pa.list_(pa.int32())),
    ]
)
"""``rank`` 1-based in the recommender's list (-1: not known yet); ``position`` = ``len(history)``."""

KEY = ["user_id", "item_id"]


def _columns() -> dict[str, list]:
    """Empty request columns to :func:`_append` to."""
    return {name: [] for name in REQUEST_SCHEMA.names}


def _append(columns: dict[str, list], *values: object) -> None:
    """One request, values in :data:`REQUEST_SCHEMA` order."""
    for name, value in zip(REQUEST_SCHEMA.names, values):
        columns[name].append(value)


def _sorted(table: pa.Table) -> pa.Table:
    keys = [("user_id", "ascending"), ("rank", "ascending"), ("item_id", "ascending")]
    return table.take(pc.sort_indices(table, sort_keys=keys)).combine_chunks()


def _sequences(sequences: pa.Table) -> dict[int, np.ndarray]:
    """``{user_id: chronological item ids}``."""
    lists = sequences["item_ids"].to_pylist()
    return {int(u): np.asarray(s, dtype=np.int32) for u, s in zip(sequences["user_id"].to_pylist(), lists)}


def last_positions(topk: pa.Table, users: Sequence[int] | None = None) -> pa.Table:
    """The ``topk`` row of each user's largest position (only ``users`` when given)."""
    if users:
        topk = topk.filter(pc.is_in(topk["user_id"], pa.array(list(users), topk.schema.field("user_id").type)))
    order = pc.sort_indices(topk, sort_keys=[("user_id", "ascending"), ("position", "descending")])
    topk = topk.take(order)
    user_ids = topk["user_id"].to_numpy()
    first = np.flatnonzero(np.r_[True, user_ids[1:] != user_ids[:-1]]) if len(user_ids) else np.array([], int)
    return topk.take(pa.array(first))


def read_last_topk(directory: StageDir, rel: str, k: int, users: Sequence[int] | None = None) -> pa.Table:
    """The rows of each user's largest position in the ``topk`` Parquet file(s) at ``rel``, lists
    cut to ``k``; streamed, so only those rows are ever held (the file has every position)."""
    data = pads.dataset(directory.child(rel), filesystem=directory.arrow_fs(), format="parquet")
    where = pads.field("user_id").isin(list(users)) if users else None
    index = data.to_table(columns=["user_id", "position"], filter=where)
    if not index.num_rows:
        return pa.table({"user_id": pa.array([], pa.int32()), "position": pa.array([], pa.int32()),
                         "item_ids": pa.array([], pa.list_(pa.int32())), "scores": pa.array([], pa.list_(pa.float32()))})
    user_ids, positions = index["user_id"].to_numpy(), index["position"].to_numpy()
    last = np.full(int(user_ids.max()) + 1, -1, dtype=np.int64)
    np.maximum.at(last, user_ids, positions)  # (max user + 1,) largest position per user
    kept = []
    for batch in data.to_batches(columns=["user_id", "position", "item_ids", "scores"], filter=where):
        mask = batch["position"].to_numpy() == last[batch["user_id"].to_numpy()]
        batch = batch.filter(pa.array(mask))
        kept.append(pa.table({"user_id": batch["user_id"], "position": batch["position"],
                              "item_ids": pc.list_slice(batch["item_ids"], 0, k),
                              "scores": pc.list_slice(batch["scores"], 0, k)}))
    return pa.concat_tables(kept)


def topk_requests(sequences: pa.Table, topk: pa.Table, k: int, users: Sequence[int] | None = None) -> pa.Table:
    """Each user's top-``k`` at their last exported position (see the module doc)."""
    last = last_positions(topk, users)
    missing = sorted(set(users or []) - set(last["user_id"].to_pylist()))
    if missing:
        raise DataError(f"explain.users: no top-k list for user {missing[0]} in topk.parquet ({len(missing)} missing)")
    seqs = _sequences(sequences)
    columns = _columns()
    for row in last.to_pylist():
        user, t = int(row["user_id"]), int(row["position"])
        if user not in seqs:
            raise DataError(f"topk.parquet has user {user}, who has no sequence in sequences.parquet")
        for rank, (item, score) in enumerate(zip(row["item_ids"][:k], row["scores"][:k]), start=1):
            _append(columns, user, item, rank, score, t, seqs[user][:t].tolist())
    return _sorted(pa.table(columns, schema=REQUEST_SCHEMA))


def read_pairs(path: str, endpoint_url: str | None = None) -> pa.Table:
    """``user_id``, ``item_id`` (int64) of a ``.csv`` or Parquet file (local or any fsspec URL)."""
    fs, fs_path = open_fs(path, endpoint_url)
    if not fs.exists(fs_path):
        raise DataError(f"explain.pairs: file not found: {path}")
    try:
        with fs.open(fs_path, "rb") as f:
            table = pacsv.read_csv(f) if fs_path.endswith(".csv") else pq.read_table(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"explain.pairs: cannot read {path}: {exc}") from None
    missing = [c for c in KEY if c not in table.column_names]
    if missing:
        raise DataError(f"explain.pairs: {path} has no column {missing[0]!r} (columns: {table.column_names})")
    return pa.table({name: _int_column(table, name, path) for name in KEY})


def _row_name(path: str, row: int) -> str:
    """``line N`` for CSV (header is line 1), ``row N`` (0-based) for Parquet."""
    return f"line {row + 2}" if path.endswith(".csv") else f"row {row}"


def _int_column(table: pa.Table, name: str, path: str) -> pa.Array:
    """An integer column; the first null or non-integer value is named with its row."""
    column = table[name].combine_chunks()
    if column.null_count:
        row = int(np.flatnonzero(~column.is_valid().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"explain.pairs: {path} {_row_name(path, row)}: {name} is empty")
    if pa.types.is_integer(column.type):
        return column.cast(pa.int64())
    for row, value in enumerate(column.to_pylist()):
        if not isinstance(value, int) and not (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
            raise DataError(f"explain.pairs: {path} {_row_name(path, row)}: {name} {value!r} is not an integer id")
    return pa.array([int(v) for v in column.to_pylist()], pa.int64())


def pair_requests(sequences: pa.Table, pairs: pa.Table, n_items: int, path: str) -> tuple[pa.Table, int]:
    """Requests for explicit pairs (see the module doc) and how many repeated pairs were dropped."""
    seqs = _sequences(sequences)
    seen: set[tuple[int, int]] = set()
    columns = _columns()
    for row, (user, item) in enumerate(zip(pairs["user_id"].to_pylist(), pairs["item_id"].to_pylist())):
        if user not in seqs:
            raise DataError(f"explain.pairs: {path} {_row_name(path, row)}: unknown user_id {user}")
        if not 0 <= item < n_items:
            raise DataError(f"explain.pairs: {path} {_row_name(path, row)}: item_id {item} not in 0..{n_items - 1}")
        if (user, item) in seen:
            continue
        seen.add((user, item))
        history = seqs[user]
        _append(columns, user, item, -1, float("nan"), len(history), history.tolist())
    return _sorted(pa.table(columns, schema=REQUEST_SCHEMA)), pairs.num_rows - len(seen)
