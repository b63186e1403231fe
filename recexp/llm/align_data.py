"""Alignment training data: train rows from the store, per-worker shards, per-epoch micro-batches.

Pure Python / PyArrow / torch (no Ray): the ``align`` recipe calls these in every worker.

* :func:`read_train_rows`: the train rows of one form and some tasks from the
  ``build-alignment-data`` partitions, optionally a seeded sample.
* :func:`shard`: worker ``rank`` of ``world`` keeps rows ``rank, rank + world, ...``. A fixed
  rule, so a restarted worker gets exactly the rows it had.
* :func:`epoch_micro_batches`: for one epoch, micro-batches as lists of rows, each row a list of
  example indices (one index unless packed), in a seeded order that depends only on
  (seed, epoch): a resumed run replays the same batches.
* :func:`collate`: one micro-batch -> :class:`AlignBatch`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from recexp.errors import DataError
from recexp.llm.batching import length_grouped_batches, pack_plan
from recexp.llm.collate import AlignBatch, pack_rows, pad_batch
from recexp.llm.encode import Encoded
from recexp.store import StageDir

ROW_COLUMNS = ["task", "form", "split", "user_id", "position", "messages", "response", "history_ids", "item_slot_ids"]
MicroBatch = list[list[int]]
"""Rows of one micro-batch; each row lists the example indices laid out in it."""


def part_files(stage: StageDir) -> list[str]:
    """The task partition files ``<family>/part-*.parquet`` of a build-alignment-data stage."""
    return [f for f in stage.files() if "/part-" in f and f.endswith(".parquet")]


def _sample(table: pa.Table, n: int, seed: int) -> pa.Table:
    """A seeded sample of ``n`` rows in their stored order (all rows when ``n`` is 0 or at least
    the row count)."""
    if not 0 < n < table.num_rows:
        return table
    keep = np.sort(np.random.default_rng(seed).choice(table.num_rows, n, replace=False))
    return table.take(pa.array(keep))


def mix_tasks(table: pa.Table, task_rows: Mapping[str, int], seed: int) -> pa.Table:
    """At most ``task_rows[task]`` rows of each named task (seeded sample); other tasks whole.
    The rows keep their stored order within each task, tasks in order of first appearance."""
    if not task_rows:
        return table
    tasks = table.column("task").unique().to_pylist()
    parts = [_sample(table.filter(pc.equal(table.column("task"), task)), task_rows.get(task, 0), seed)
             for task in tasks]
    return pa.concat_tables(parts)


def read_train_rows(
    stage: StageDir, form: str, tasks: Sequence[str], split: str = "train", max_rows: int = 0, seed: int = 0,
    task_rows: Mapping[str, int] | None = None,
) -> pa.Table:
    """Rows of ``form`` / ``split`` whose task is in ``tasks``; the task mix of ``task_rows``
    (:func:`mix_tasks`), then a seeded sample of ``max_rows``."""
    files = part_files(stage)
    if not files:
        raise DataError(f"no task partitions (*/part-*.parquet) under {stage.url()}")
    dataset = pads.dataset([stage.child(f) for f in files], format="parquet", filesystem=stage.arrow_fs())
    wanted = (pads.field("form") == form) & (pads.field("split") == split) & pads.field("task").isin(list(tasks))
    table = dataset.to_table(columns=ROW_COLUMNS, filter=wanted)
    if table.num_rows == 0:
        raise DataError(f"no {split} rows of form {form!r} and tasks {list(tasks)} under {stage.url()}")
    return _sample(mix_tasks(table, task_rows or {}, seed), max_rows, seed)


def shard(n_rows: int, rank: int, world: int) -> np.ndarray:
    """Row indices of worker ``rank``: every ``world``-th row starting at ``rank``."""
    return np.arange(rank, n_rows, world)


def epoch_micro_batches(
    lengths: Sequence[int], batching: str, micro_batch_size: int, max_length: int, seed: int, epoch: int
) -> list[MicroBatch]:
    """Micro-batches of one epoch (see the module doc); ``batching`` packed / grouped / padded."""
    epoch_seed = seed * 1_000_003 + epoch
    if batching == "packed":
        rows = pack_plan(lengths, max_length, seed=epoch_seed)
        return [rows[i : i + micro_batch_size] for i in range(0, len(rows), micro_batch_size)]
    if batching == "grouped":
        batches = length_grouped_batches(lengths, micro_batch_size, seed=epoch_seed)
    elif batching == "padded":
        order = np.random.default_rng(epoch_seed).permutation(len(lengths)).tolist()
        batches = [order[i : i + micro_batch_size] for i in range(0, len(order), micro_batch_size)]
    else:
        raise ValueError(f"unknown batching {batching!r}")
    return [[[i] for i in batch] for batch in batches]


def collate(
    examples: Sequence[Encoded], micro_batch: MicroBatch, pad_id: int, packed: bool, max_length: int,
    per_example: bool = False,
) -> AlignBatch:
    """Tensors of one micro-batch: packed rows (block-diagonal mask) or one example per row;
    ``per_example``: label weights that make each example count once in the loss."""
    if packed:
        return pack_rows([[examples[i] for i in row] for row in micro_batch], pad_id, max_length, per_example)
    return pad_batch([examples[row[0]] for row in micro_batch], pad_id, per_example)


def token_counts(examples: Sequence[Encoded], micro_batches: Sequence[MicroBatch]) -> tuple[int, int]:
    """``(real tokens, tokens incl. padding)`` of ``micro_batches`` (packing efficiency)."""
    real = padded = 0
    for micro in micro_batches:
        lengths = [sum(len(examples[i]) for i in row) for row in micro]
        real += sum(lengths)
        padded += max(lengths) * len(lengths)
    return real, padded
