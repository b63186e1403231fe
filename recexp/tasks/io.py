"""Reading the upstream stages and writing partition files (no Ray; local or object storage).

Upstream contract (committed stages of the same run, or ``inputs.<stage>``):

* ``ingest/``: ``sequences.parquet`` (``user_id``, ``item_ids``), ``items.parquet``;
* ``train-recommender/``: ``encoder/`` (``recexp.recommender.load``), ``topk.parquet``
  (``user_id, position, item_ids, scores``), ``thresholds.parquet``
  (``user_id, position, interested, not_interested``), ``item_neighbors.parquet``
  (``item_id, neighbor_ids, scores``).

Partitions are id ranges ``[lo, hi)``; a partition reads only its rows with a Parquet filter
on the id column (row groups outside the range are skipped when the file is sorted by it).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recexp.errors import DataError
from recexp.store import StageDir
from recexp.tasks.users import UserRecord, user_records

SEQUENCES = "sequences.parquet"
ITEMS = "items.parquet"
ENCODER = "encoder"
TOPK = "topk.parquet"
THRESHOLDS = "thresholds.parquet"
NEIGHBORS = "item_neighbors.parquet"


def partitions(count: int, size: int) -> list[tuple[int, int, int]]:
    """``(index, lo, hi)`` covering ids ``0..count-1`` in ranges of ``size``."""
    return [(p, lo, min(lo + size, count)) for p, lo in enumerate(range(0, count, size))]


def part_path(family: str, index: int) -> str:
    """File of one partition of a task family: named by the partition, never by a worker."""
    return f"{family}/part-{index:05d}.parquet"


def recommender_files(tasks: list[str] | tuple[str, ...]) -> list[str]:
    """The train-recommender files the requested tasks read."""
    needs = {TOPK: ("t1", "t2"), THRESHOLDS: ("t3", "explain"), NEIGHBORS: ("t4",), f"{ENCODER}/config.json": ()}
    return [name for name, users in needs.items() if not users or set(users) & set(tasks)]


def require_files(directory: StageDir, stage: str, names: list[str]) -> None:
    """A clear error naming the first missing upstream file."""
    for name in names:
        if not directory.exists(name):
            raise DataError(f"upstream stage '{stage}' has no {name} at {directory.url(name)}")


def read_id_range(
    directory: StageDir, rel: str, column: str, lo: int, hi: int, columns: list[str] | None = None
) -> pa.Table:
    """Rows of a Parquet file with ``lo <= column < hi``."""
    filters = [(column, ">=", lo), (column, "<", hi)]
    return pq.read_table(directory.child(rel), columns=columns, filters=filters, filesystem=directory.arrow_fs())


def id_count(directory: StageDir, rel: str, column: str) -> int:
    """``max(column) + 1`` (ids are dense), 0 for an empty file."""
    ids = pq.read_table(directory.child(rel), columns=[column], filesystem=directory.arrow_fs())[column]
    return 0 if len(ids) == 0 else int(pc.max(ids).as_py()) + 1


def load_users(
    ingest: StageDir, recommender: StageDir, lo: int, hi: int, topk: bool = False, thresholds: bool = False
) -> list[UserRecord]:
    """The users ``[lo, hi)`` with the recommender outputs asked for."""
    sequences = read_id_range(ingest, SEQUENCES, "user_id", lo, hi, ["user_id", "item_ids"])
    ranked = read_id_range(recommender, TOPK, "user_id", lo, hi) if topk else None
    cut = read_id_range(recommender, THRESHOLDS, "user_id", lo, hi) if thresholds else None
    return user_records(sequences, ranked, cut)


def first_neighbors(table: pa.Table) -> dict[int, int]:
    """``{item: its most similar item}`` from ``item_neighbors`` rows (empty lists skipped)."""
    firsts = pc.list_element(table["neighbor_ids"].combine_chunks(), 0) if table.num_rows else pa.array([], pa.int32())
    return {int(i): int(n) for i, n in zip(table["item_id"].to_pylist(), firsts.to_pylist()) if n is not None}


def encoder_config(recommender: StageDir) -> dict[str, Any]:
    """The exported recommender's ``config.json`` (model type, its config, ``n_items``)."""
    try:
        return recommender.read_json(f"{ENCODER}/config.json")
    except FileNotFoundError:
        raise DataError(f"no exported encoder at {recommender.url(ENCODER)}") from None


def load_encoder(recommender: StageDir, n_items: int) -> Any:
    """The frozen recommender (eval mode), copied to a temporary local directory if remote."""
    from recexp import recommender as rec

    source = recommender.child(ENCODER)
    if not recommender.protocol_prefix:
        return rec.load(source, expected_n_items=n_items)
    with tempfile.TemporaryDirectory(prefix="recexp-encoder-") as local:
        for path in recommender.fs.find(source):
            target = os.path.join(local, os.path.relpath(path, source))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            recommender.fs.get_file(path, target)
        return rec.load(local, expected_n_items=n_items)
