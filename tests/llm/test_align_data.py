"""Alignment training data: row selection, worker shards, seeded epoch plans, packing efficiency."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from recexp.config import AlignConfig
from recexp.errors import DataError, InvalidValue
from recexp.llm.align_data import collate, epoch_micro_batches, read_train_rows, shard, token_counts
from recexp.llm.encode import Encoded
from recexp.store import Store
from recexp.tasks.rows import ROW_SCHEMA


def row(task: str, form: str, split: str, user: int) -> dict:
    return {"task": task, "form": form, "split": split, "user_id": user, "position": 1,
            "messages": [{"role": "user", "content": f"q{user}"}], "response": "a", "history_ids": [],
            "item_slot_ids": [], "meta": "{}"}


@pytest.fixture
def stage(tmp_path: Path):
    store = Store(str(tmp_path))
    staging = store.begin("r", "build-alignment-data")
    rows = [row(t, f, s, u) for u in range(10) for t in ("t1", "t3") for f in ("intention", "behaviour") for s in ("train", "test")]
    staging.write_table("next_item/part-00000.parquet", pa.Table.from_pylist(rows[:40], schema=ROW_SCHEMA))
    staging.write_table("interest/part-00000.parquet", pa.Table.from_pylist(rows[40:], schema=ROW_SCHEMA))
    staging.write_table("catalog.parquet", pa.table({"item_id": [0]}))
    store.commit(staging, "r", "build-alignment-data", {})
    return store.committed("r", "build-alignment-data")


def test_reads_only_the_wanted_form_split_and_tasks(stage) -> None:
    table = read_train_rows(stage, "intention", ["t3"])
    assert table.num_rows == 10
    assert set(table["task"].to_pylist()) == {"t3"} and set(table["form"].to_pylist()) == {"intention"}
    assert set(table["split"].to_pylist()) == {"train"}


def test_sample_is_seeded_and_sized(stage) -> None:
    a = read_train_rows(stage, "behaviour", ["t1", "t3"], max_rows=7, seed=1)
    b = read_train_rows(stage, "behaviour", ["t1", "t3"], max_rows=7, seed=1)
    assert a.num_rows == 7 and a.equals(b)


def test_task_mix_caps_the_named_tasks_only(stage) -> None:
    table = read_train_rows(stage, "behaviour", ["t1", "t3"], seed=2, task_rows={"t1": 3})
    tasks = table["task"].to_pylist()
    assert tasks.count("t1") == 3 and tasks.count("t3") == 10  # t3 not named: all of its rows
    again = read_train_rows(stage, "behaviour", ["t1", "t3"], seed=2, task_rows={"t1": 3})
    assert table.equals(again)
    both = read_train_rows(stage, "behaviour", ["t1", "t3"], seed=2, task_rows={"t1": 3}, max_rows=5)
    assert both.num_rows == 5 and set(both["user_id"].to_pylist()) <= set(table["user_id"].to_pylist())
    whole = read_train_rows(stage, "behaviour", ["t1", "t3"], task_rows={"t1": 50})  # more than there are
    assert whole["task"].to_pylist().count("t1") == 10


def test_task_mix_names_only_trained_tasks() -> None:
    with pytest.raises(InvalidValue, match="task_rows"):
        AlignConfig(tasks=["t1", "t3"], task_rows={"t2": 5})
    with pytest.raises(InvalidValue, match="task_rows"):
        AlignConfig(tasks=["t1"], task_rows={"t1": 0})


def test_no_matching_rows_is_a_clear_error(stage) -> None:
    with pytest.raises(DataError, match="no train rows of form 'hybrid'"):
        read_train_rows(stage, "hybrid", ["t1"])


def test_shards_partition_the_rows() -> None:
    parts = [shard(11, r, 3).tolist() for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(11)) and parts[1] == [1, 4, 7, 10]


@pytest.mark.parametrize("batching", ["packed", "grouped", "padded"])
def test_epoch_plans_cover_every_example_once_and_depend_only_on_seed_and_epoch(batching: str) -> None:
    lengths = [5, 17, 3, 9, 30, 12, 8, 8, 21, 4]
    plan = epoch_micro_batches(lengths, batching, 2, 32, seed=0, epoch=1)
    flat = [i for micro in plan for r in micro for i in r]
    assert sorted(flat) == list(range(10))
    assert plan == epoch_micro_batches(lengths, batching, 2, 32, seed=0, epoch=1)
    assert plan != epoch_micro_batches(lengths, batching, 2, 32, seed=0, epoch=2)
    assert all(len(micro) <= 2 for micro in plan)
    if batching == "packed":
        assert all(sum(lengths[i] for i in r) <= 32 for micro in plan for r in micro)
    else:
        assert all(len(r) == 1 for micro in plan for r in micro)


def test_packing_cuts_padding() -> None:
    examples = [Encoded([1] * n, [-100] * n) for n in [40, 3, 35, 6, 30, 9, 28, 12, 5, 50]]
    lengths = [len(e) for e in examples]
    padded = epoch_micro_batches(lengths, "padded", 2, 64, seed=0, epoch=0)
    packed = epoch_micro_batches(lengths, "packed", 2, 64, seed=0, epoch=0)
    real_padded, total_padded = token_counts(examples, padded)
    real_packed, total_packed = token_counts(examples, packed)
    assert real_padded == real_packed == sum(lengths)
    assert total_packed < total_padded
    batch = collate(examples, packed[0], pad_id=0, packed=True, max_length=64)
    assert batch.attention_mask.dim() == 4 and batch.input_ids.shape[0] == len(packed[0])
