"""The evaluation rows: test rows of ``build-alignment-data`` per task and form, selected the
same way in every form, plus in-context (few-shot) prompts built from train rows.

Tasks evaluated (RecExplainer Table 1; :data:`TASKS`): a name maps to the task id and sub-task
of the rows, the family directory holding them and the *kind* of answer it expects.

Selection: with ``limit``, the ``limit`` rows whose example key (task, user, position, item,
answer) hashes lowest under ``seed`` are kept. The key does not depend on the form, so the
aligned model (intention rows), the base model (behaviour rows) and the baselines answer the
very same examples.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.dataset as pads

from recexp.store import StageDir

Row = dict[str, Any]


@dataclass(frozen=True)
class TaskSpec:
    """Where a task's rows live and what kind of answer they take."""

    task: str
    """``task`` column value (t1..t7)."""
    subtask: str
    """``meta.subtask`` value."""
    family: str
    """Directory of ``build-alignment-data`` holding the rows."""
    kind: str
    """``retrieval`` (5 titles, beam), ``ranking`` (ordered list), ``binary`` (Yes/No logits),
    ``history`` (list of titles), ``item`` (one title)."""


TASKS: dict[str, TaskSpec] = {
    "t1": TaskSpec("t1", "uid2next", "next_item", "retrieval"),
    "t2": TaskSpec("t2", "uidiid2rank", "next_item", "ranking"),
    "t3": TaskSpec("t3", "uidiid2binary", "interest", "binary"),
    "t6": TaskSpec("t6", "uid2hist", "history", "history"),
    "item-recovery": TaskSpec("t4", "iid2title", "items", "item"),
    "t7": TaskSpec("t7", "uid2added", "history", "item"),
}
"""Evaluated task name -> rows and answer kind. ``item-recovery`` is T4 ``iid2title``."""


def meta(row: Mapping[str, Any]) -> dict[str, Any]:
    """The parsed ``meta`` JSON of a row."""
    return json.loads(row["meta"])


def read_rows(data: StageDir, spec: TaskSpec, form: str, split: str, head: int | None = None) -> list[Row]:
    """Rows of one task, form and split (``head``: only the first ones in file order)."""
    if not data.exists(spec.family):
        return []
    dataset = pads.dataset(data.child(spec.family), format="parquet", filesystem=data.arrow_fs())
    where = (pc.field("task") == spec.task) & (pc.field("form") == form) & (pc.field("split") == split)
    where &= pc.match_substring(pc.field("meta"), f'"subtask":"{spec.subtask}"')  # meta is compact JSON
    table = dataset.to_table(filter=where) if head is None else dataset.head(head, filter=where)
    return [row for row in table.to_pylist() if meta(row)["subtask"] == spec.subtask]


def example_key(row: Mapping[str, Any]) -> str:
    """What identifies an example whatever its form: task, user, position, item, answer."""
    item = meta(row).get("item_id", -1)
    return f"{row['task']}|{row['user_id']}|{row['position']}|{item}|{row['response']}"


def select(rows: Sequence[Row], limit: int, seed: int) -> list[Row]:
    """The ``limit`` rows with the smallest seeded key hashes (all when ``limit`` is 0), in
    hash order; the same examples in every form."""
    def rank(row: Row) -> str:
        return hashlib.sha256(f"{seed}|{example_key(row)}".encode()).hexdigest()

    ordered = sorted(rows, key=rank)
    return ordered if limit <= 0 else ordered[:limit]


def with_shots(row: Row, shots: Sequence[Row]) -> Row:
    """``row`` preceded by ``shots`` as earlier user / assistant turns (one system turn kept);
    slot ids concatenated in order of appearance."""
    turns = [m for m in row["messages"] if m["role"] == "system"][:1]
    for shot in shots:
        turns += [m for m in shot["messages"] if m["role"] != "system"]
        turns.append({"role": "assistant", "content": shot["response"]})
    turns += [m for m in row["messages"] if m["role"] != "system"]
    return {
        **row,
        "messages": turns,
        "history_ids": [h for r in (*shots, row) for h in r["history_ids"]],
        "item_slot_ids": [i for r in (*shots, row) for i in r["item_slot_ids"]],
    }


def _other_example(shot: Row, row: Row) -> bool:
    """A shot must not be about the row's user or item (it could give the answer away)."""
    if row["user_id"] >= 0 and shot["user_id"] == row["user_id"]:
        return False
    item = meta(row).get("item_id")
    return item is None or meta(shot).get("item_id") != item


def few_shot_rows(rows: Sequence[Row], pool: Sequence[Row], shots: int, seed: int) -> list[Row]:
    """Each row with ``shots`` examples drawn (seeded, without replacement) from the ``pool``
    rows about other users and items; rows unchanged when the pool is empty."""
    if not pool or shots <= 0:
        return list(rows)
    rng = np.random.default_rng(seed)
    out = []
    for row in rows:
        others = [p for p in pool if _other_example(p, row)] or list(pool)
        picked = rng.choice(len(others), size=min(shots, len(others)), replace=False)
        out.append(with_shots(row, [others[int(i)] for i in picked]))
    return out
