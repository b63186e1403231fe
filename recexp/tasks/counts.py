"""Row counts: per table, summed over partitions, and what the protocol predicts.

Keys are flat strings ``<task>/<split>/<form>`` (e.g. ``t1/train/behaviour``), sorted; only
combinations with rows appear. ``counts.json`` of the stage is exactly :func:`merge_counts`
of every written table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa

from recexp.tasks.context import BuildParams


def count_key(task: str, split: str, form: str) -> str:
    return f"{task}/{split}/{form}"


def table_counts(table: pa.Table) -> dict[str, int]:
    """Rows of ``table`` per ``<task>/<split>/<form>``."""
    if not table.num_rows:
        return {}
    grouped = table.group_by(["task", "split", "form"]).aggregate([([], "count_all")])
    keys = zip(grouped["task"].to_pylist(), grouped["split"].to_pylist(), grouped["form"].to_pylist())
    return dict(sorted((count_key(*k), n) for k, n in zip(keys, grouped["count_all"].to_pylist())))


def merge_counts(parts: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Sum of several count dicts, keys sorted."""
    total: Counter[str] = Counter()
    for part in parts:
        total.update(part)
    return dict(sorted(total.items()))


def train_rows_by_form(counts: Mapping[str, int], forms: Iterable[str], exclude: tuple[str, ...] = ("t5",)) -> dict[str, int]:
    """Train rows of each form, over every task but ``exclude`` (the base of the T5 quota)."""
    totals = {form: 0 for form in forms}
    for key, n in counts.items():
        task, split, form = key.split("/")
        if split == "train" and task not in exclude and form in totals:
            totals[form] += n
    return totals


def totals_by_task(counts: Mapping[str, int]) -> dict[str, int]:
    """Rows per task over splits and forms (for summaries)."""
    total: Counter[str] = Counter()
    for key, n in counts.items():
        total[key.split("/")[0]] += n
    return dict(sorted(total.items()))


def protocol_counts(lengths: np.ndarray, params: BuildParams) -> dict[str, int]:
    """Per form, what the protocol gives for user sequences of ``lengths`` (U users, N items):
    T1/T2/T7 train N - 2U and test U, T3 train 2U, T6 train N - U and test U. T3 test,
    T4, T5 and explain depend on seeded draws and data and are not predicted here."""
    users, interactions = len(lengths), int(np.sum(lengths))
    per_task = {
        ("t1", "train"): interactions - 2 * users, ("t1", "test"): users,
        ("t2", "train"): interactions - 2 * users, ("t2", "test"): users,
        ("t3", "train"): 2 * users,
        ("t6", "train"): interactions - users, ("t6", "test"): users,
        ("t7", "train"): interactions - 2 * users, ("t7", "test"): users,
    }
    out = {}
    for (task, split), n in per_task.items():
        if task in params.tasks:
            forms = params.slot_forms if task in ("t6", "t7") else params.forms
            out.update({count_key(task, split, form): n for form in forms})
    return dict(sorted(out.items()))
