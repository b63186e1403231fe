"""One user's inputs to the builders: the chronological sequence and the recommender's outputs.

Builders take :class:`UserRecord` objects and never read files, so the Ray recipe (one
partition of users from Parquet) and the single-process baseline (pandas) feed them alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recexp.errors import DataError


@dataclass
class UserRecord:
    """A user's sequence and, per position ``t``, the recommender's ranking and thresholds."""

    user_id: int
    item_ids: np.ndarray
    """Chronological dense item ids (int64)."""
    topk: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    """``{t: (ids, scores)}``: ranking given ``item_ids[:t]``, best first, history excluded."""
    thresholds: dict[int, tuple[float, float]] = field(default_factory=dict)
    """``{t: (interested, not_interested)}`` for ``t`` in ``{n-2, n-1}``."""

    @property
    def n(self) -> int:
        return len(self.item_ids)

    def ranking(self, t: int) -> tuple[np.ndarray, np.ndarray]:
        """The recommender's ``(ids, scores)`` at position ``t``; a clear error if missing."""
        try:
            return self.topk[t]
        except KeyError:
            raise DataError(f"topk.parquet has no row for user {self.user_id} at position {t}") from None

    def threshold(self, t: int) -> tuple[float, float]:
        """``(interested, not_interested)`` at position ``t``; a clear error if missing."""
        try:
            return self.thresholds[t]
        except KeyError:
            raise DataError(f"thresholds.parquet has no row for user {self.user_id} at position {t}") from None


def split_positions(last: int) -> list[tuple[int, str]]:
    """``(t, split)`` for ``t = 1..last``: train before ``last``, test at ``last`` (none if last < 1)."""
    if last < 1:
        return []
    return [(t, "train") for t in range(1, last)] + [(last, "test")]


def _list_rows(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """``(flat values, offsets)`` of a list column, for cheap per-row slicing."""
    array = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if array.null_count:
        raise DataError("list column with null rows")
    offsets = array.offsets.to_numpy()
    values = array.values.to_numpy(zero_copy_only=False)
    return values[offsets[0] : offsets[-1]], offsets - offsets[0]


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.take(pc.sort_indices(table, [(k, "ascending") for k in keys]))


def _attach_topk(users: dict[int, UserRecord], topk: pa.Table) -> None:
    ids, offsets = _list_rows(topk["item_ids"])
    scores, score_offsets = _list_rows(topk["scores"])
    if not np.array_equal(offsets, score_offsets):
        raise DataError("topk.parquet: item_ids and scores lists differ in length")
    for row, (user, t) in enumerate(zip(topk["user_id"].to_pylist(), topk["position"].to_pylist())):
        if user in users:
            lo, hi = offsets[row], offsets[row + 1]
            users[user].topk[t] = (ids[lo:hi].astype(np.int64), scores[lo:hi])


def _attach_thresholds(users: dict[int, UserRecord], thresholds: pa.Table) -> None:
    columns = [thresholds[name].to_pylist() for name in ("user_id", "position", "interested", "not_interested")]
    for user, t, high, low in zip(*columns):
        if user in users:
            users[user].thresholds[t] = (float(high), float(low))


def user_records(
    sequences: pa.Table, topk: pa.Table | None = None, thresholds: pa.Table | None = None
) -> list[UserRecord]:
    """Records of every user in ``sequences``, sorted by user id, with their topk/threshold rows."""
    sequences = _sorted(sequences, ["user_id"])
    values, offsets = _list_rows(sequences["item_ids"])
    users = {
        int(u): UserRecord(int(u), values[offsets[i] : offsets[i + 1]].astype(np.int64))
        for i, u in enumerate(sequences["user_id"].to_pylist())
    }
    if topk is not None:
        _attach_topk(users, _sorted(topk, ["user_id", "position"]))
    if thresholds is not None:
        _attach_thresholds(users, thresholds)
    return list(users.values())
