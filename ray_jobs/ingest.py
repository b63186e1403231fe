"""Recipe: ingest — raw files -> ``items``, ``sequences``, ``stats.json``, ``rejects/`` (Ray Data).

    recexp ingest --config configs/datasets/ml-100k.yaml [key=value ...]
    python -m ray_jobs.ingest --config ... [key=value ...]        # what `ray job submit` runs

setup: list the input files (a missing path fails here, in one line) and start Ray.
run:   Ray Data streams every file through its parser in parallel (one task per file, bounded
       blocks). Items are read first so that workers turn item ids into integer codes; the
       driver keeps only compact integer arrays (+ the user id strings) and rejects. Then:
       reject check -> drop untitled items -> dedup -> k-core -> subsample -> min length.
commit: Parquet tables and stats, published atomically by the runner.
"""

from __future__ import annotations

import sys
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet
import ray

from recexp.cli import run_main
from recexp.config import RunConfig
from recexp.data import filters, schema
from recexp.data.formats import FORMATS, Format
from recexp.data.sequences import build_tables, statistics
from recexp.data.source import FileSpec, list_files, read_file_blocks, read_parquet_blocks, split_parsed
from recexp.errors import DataError
from recexp.runner import StageContext, init_ray, log, run_stage

STAGE = "ingest"


@dataclass
class Inputs:
    item_files: list[str]
    interaction_files: list[str]


def find_inputs(cfg: RunConfig, path: str) -> Inputs:
    """Item and interaction files under ``path`` (item patterns win when a file matches both)."""
    fmt = FORMATS[cfg.data.format]
    endpoint = cfg.store.endpoint_url
    items = list_files(path, cfg.data.items or fmt.items, endpoint)
    interactions = [f for f in list_files(path, cfg.data.interactions or fmt.interactions, endpoint) if f not in items]
    if not interactions:
        raise DataError(f"no interaction files under {path} (only item files: {items})")
    return Inputs(items, interactions)


# ----------------------------------------------------------------------------- Ray Data reading


def _parse_files(batch: dict[str, np.ndarray], fmt: Format, kind: str, cfg: RunConfig, item_ids: Any) -> Iterator[pa.Table]:
    """Ray Data UDF: each input row is a file; yields parsed blocks (good rows + rejects)."""
    block = cfg.ingest.lines_per_block
    pa.set_memory_pool(pa.system_memory_pool())  # see run(): memory freed goes back to the OS
    if isinstance(item_ids, ray.ObjectRef):  # shared once through the object store, not per task
        item_ids = ray.get(item_ids)
    for index, uri in zip(batch["index"], batch["uri"]):
        spec, reader = FileSpec(int(index), str(uri)), fmt.reader(str(uri), kind)
        if reader.arrow_parser is not None:
            blocks = read_parquet_blocks(spec, reader.arrow_parser, cfg.data, block, cfg.store.endpoint_url)
        else:
            blocks = read_file_blocks(spec, reader.line_parser, cfg.data, block, reader.has_header, cfg.store.endpoint_url)
        for table in blocks:
            yield _encode_items(table, item_ids) if item_ids is not None else table


def _encode_items(table: pa.Table, item_ids: pa.Array) -> pa.Table:
    """Replace the item id strings by their row in the items table (null: unknown or untitled)."""
    codes = pc.index_in(table["item"], value_set=item_ids).cast(pa.int32())
    return table.set_column(table.schema.get_field_index("item"), "item", codes)


IN_FLIGHT_BYTES = 64 << 20
"""Object store memory that parsed blocks waiting for the driver may use: with it, memory stays
flat as the input grows instead of buffering whatever the workers parse ahead of the driver."""


def read_parsed(files: Sequence[str], kind: str, cfg: RunConfig, item_ids: pa.Array | None = None) -> ray.data.Dataset:
    """A dataset of parsed blocks over ``files`` (one read task per file)."""
    limits = ray.data.DataContext.get_current().execution_options.resource_limits
    ray.data.DataContext.get_current().execution_options.resource_limits = limits.copy(object_store_memory=IN_FLIGHT_BYTES)
    specs = [{"index": i, "uri": uri} for i, uri in enumerate(files)]
    ds = ray.data.from_items(specs, override_num_blocks=len(specs))
    kwargs = {"fmt": FORMATS[cfg.data.format], "kind": kind, "cfg": cfg, "item_ids": item_ids}
    # max_calls=1: a parse worker exits after its file, returning its heap instead of idling on it.
    return ds.map_batches(_parse_files, batch_size=1, batch_format="numpy", fn_kwargs=kwargs, max_calls=1)


@dataclass
class Collected:
    """Interactions gathered on the driver as compact arrays, plus every reject.

    User ids stay strings only in per-block dictionaries (each user appears in few blocks);
    rows carry an int32 position into the concatenation of those dictionaries.
    """

    user_dicts: list[pa.Array]
    user_pos: np.ndarray | None
    item: np.ndarray | None
    timestamp: np.ndarray | None
    order: np.ndarray | None
    rejects: pa.Table
    lines: int


def _concat(chunks: list[np.ndarray], dtype: type) -> np.ndarray:
    """Concatenate and release the chunks (so the driver never holds both copies for long)."""
    out = np.concatenate(chunks) if chunks else np.zeros(0, dtype)
    chunks.clear()
    return out


def collect_interactions(ds: ray.data.Dataset, uris: Sequence[str]) -> Collected:
    """Stream parsed blocks to the driver, keeping only what filtering needs."""
    dicts, positions, items, times, orders, rejects = [], [], [], [], [], []
    offset = 0
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        good, bad = split_parsed(block, uris)
        encoded = good["user"].combine_chunks().dictionary_encode()
        dicts.append(encoded.dictionary)
        positions.append(encoded.indices.to_numpy() + np.int32(offset))
        offset += len(encoded.dictionary)
        # Copies: a zero-copy view would pin the whole block (strings, text) in the object store.
        items.append(good["item"].fill_null(-1).to_numpy().copy())
        times.append(good["timestamp"].to_numpy().copy())
        orders.append(good["order"].to_numpy().copy())
        rejects.append(bad)
    lines = sum(len(o) for o in orders) + sum(r.num_rows for r in rejects)
    return Collected(
        user_dicts=dicts,
        user_pos=_concat(positions, np.int32),
        item=_concat(items, np.int32),
        timestamp=_concat(times, np.int64),
        order=_concat(orders, np.int64),
        rejects=pa.concat_tables(rejects) if rejects else schema.empty(schema.REJECTS),
        lines=lines,
    )


def collect_items(ds: ray.data.Dataset, uris: Sequence[str]) -> tuple[pa.Table, pa.Table]:
    """``(items in source order, rejects)``; items keep their first metadata row per id."""
    parts = [split_parsed(block, uris) for block in ds.iter_batches(batch_size=None, batch_format="pyarrow")]
    items = pa.concat_tables([p[0] for p in parts]) if parts else schema.empty(schema.ITEMS)
    rejects = pa.concat_tables([p[1] for p in parts]) if parts else schema.empty(schema.REJECTS)
    items = items.take(pc.sort_indices(items, [("order", "ascending")]))
    _, first = np.unique(items["item"].to_numpy(zero_copy_only=False), return_index=True)
    return items.take(pa.array(np.sort(first))).drop_columns(["order"]), rejects


# ----------------------------------------------------------------------------- filtering


def user_codes(got: Collected) -> tuple[np.ndarray, pa.Array]:
    """Integer user codes numbered by first appearance in the source, and their original ids."""
    encoded = pc.dictionary_encode(pa.concat_arrays(got.user_dicts)) if got.user_dicts else pc.dictionary_encode(pa.array([], pa.string()))
    got.user_dicts = []
    codes = encoded.indices.to_numpy()[got.user_pos]  # (N,) arbitrary global code per row
    got.user_pos = None
    first = np.full(len(encoded.dictionary), np.iinfo(np.int64).max)
    np.minimum.at(first, codes, got.order)  # earliest source line of each user
    by_first = np.argsort(first, kind="stable")
    rank = np.empty(len(first), np.int32)
    rank[by_first] = np.arange(len(first), dtype=np.int32)
    return rank[codes], encoded.dictionary.take(pa.array(by_first))


def check_rejects(rejects: pa.Table, lines: int, limit: float) -> dict[str, int]:
    """Reject counts by reason; raises when the rejected fraction exceeds ``limit``."""
    reasons = Counter(r.split(":")[0] for r in rejects["reason"].to_pylist())
    if rejects.num_rows:
        log(f"rejected {rejects.num_rows} of {lines} lines: " + ", ".join(f"{k} x{v}" for k, v in reasons.most_common()))
    if lines and rejects.num_rows / lines > limit:
        first = rejects.slice(0, 3).to_pylist()
        examples = "; ".join(f"{r['source']}:{r['line']}: {r['reason']}" for r in first)
        raise DataError(
            f"{rejects.num_rows} of {lines} input lines rejected ({rejects.num_rows / lines:.2%} > "
            f"ingest.max_reject_fraction={limit:.2%}); nothing committed. First: {examples}"
        )
    return dict(reasons)


def to_interactions(got: Collected) -> tuple[filters.Interactions, pa.Array, dict[str, int]]:
    """Integer interactions with a known, titled item, sorted chronologically and de-duplicated.

    Takes ownership of ``got``'s arrays and releases each one as soon as its replacement exists,
    so that peak memory is the data plus one column, not two copies of everything.
    """
    codes, names = user_codes(got)
    columns = {"user": codes, "item": got.item, "timestamp": got.timestamp, "order": got.order}
    got.item = got.timestamp = got.order = None
    total = len(codes)
    known = columns["item"] >= 0
    if not known.all():
        for key in columns:
            columns[key] = columns[key][known]
    del known
    index = np.lexsort((columns["order"], columns["timestamp"], columns["user"]))
    for key in columns:
        columns[key] = columns[key][index]
    del index
    x = filters.Interactions(**columns)
    del columns
    n = len(x)
    x = filters.deduplicate(x)
    return x, names, {"unknown": total - n, "removed_duplicates": n - len(x)}


def filter_interactions(x: filters.Interactions, cfg: RunConfig) -> tuple[filters.Interactions, dict[str, int]]:
    """k-core, subsample, minimum length; returns the survivors and a count per step."""
    ic, counts = cfg.ingest, {}
    steps = [
        ("k_core", lambda x: filters.k_core(x, ic.k_core)),
        ("subsample", lambda x: filters.subsample(x, ic.subsample_items, ic.subsample_users, ic.k_core, ic.seed)),
        ("short_sequences", lambda x: filters.drop_short(x, ic.min_sequence_length)),
    ]
    for name, step in steps:
        before = len(x)
        x = step(x)
        counts[f"removed_{name}"] = before - len(x)
    return x, counts


# ----------------------------------------------------------------------------- the stage


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg
    path = cfg.data.path
    if cfg.data.format == "synthetic":
        path = generate_source(ctx)
    inputs = find_inputs(cfg, path)
    # Arrow's default allocator keeps freed pages for reuse; the system allocator hands large
    # blocks back, so the driver's footprint follows what it holds, not what it once held.
    pa.set_memory_pool(pa.system_memory_pool())
    init_ray(cfg.ray)
    with ctx.phase("read_items"):
        items, item_rejects = collect_items(read_parsed(inputs.item_files, "items", cfg), inputs.item_files)
        titled = items.filter(pc.invert(pc.equal(pc.utf8_trim_whitespace(items["title"].fill_null("")), "")))
        n_item_rows, item_ids = items.num_rows, ray.put(titled["item"])
        del items
        # The metadata waits on local disk while the interactions stream in: only ids stay in memory.
        spill = tempfile.NamedTemporaryFile(suffix=".parquet")
        pa.parquet.write_table(titled, spill.name)
        del titled
    with ctx.phase("read_interactions"):
        ds = read_parsed(inputs.interaction_files, "interactions", cfg, item_ids)
        got = collect_interactions(ds, inputs.interaction_files)
    rejects = pa.concat_tables([item_rejects, got.rejects])
    reasons = check_rejects(rejects, got.lines + n_item_rows + item_rejects.num_rows, cfg.ingest.max_reject_fraction)
    with ctx.phase("filter"):
        x, names, counts = to_interactions(got)
        stats_input = {"interaction_rows": len(x) + counts["removed_duplicates"] + counts["unknown"],
                       "interactions_with_unknown_or_untitled_item": counts.pop("unknown")}
        x, steps = filter_interactions(x, cfg)
        counts |= steps
        if not len(x):
            raise DataError("no interactions left after filtering (check ingest.k_core and the item titles)")
        titled = pa.parquet.read_table(spill.name)
        spill.close()
        sequences, kept_items = build_tables(x, names, titled)
    with ctx.phase("write"):
        ctx.out.write_table("items.parquet", kept_items)
        ctx.out.write_table("sequences.parquet", sequences)
        ctx.out.write_table("rejects/rejects.parquet", rejects)
        stats = statistics(sequences, kept_items.num_rows)
        stats["input"] = {
            "item_files": len(inputs.item_files),
            "interaction_files": len(inputs.interaction_files),
            "item_rows": n_item_rows,
            "items_without_title": n_item_rows - titled.num_rows,
            **stats_input,
            "rejected_lines": rejects.num_rows,
            "reject_reasons": reasons,
            **counts,
        }
        ctx.out.write_json("stats.json", stats)
    print_summary(stats)
    return {k: stats[k] for k in ("num_users", "num_items", "num_interactions", "sparsity")}


def generate_source(ctx: StageContext) -> str:
    """Write the generated Amazon-2018 files into this stage's output (``source/``)."""
    from recexp.data import synthetic

    with ctx.phase("generate"):
        d = ctx.cfg.data
        synthetic.generate(ctx.out.child("source"), d.synthetic_interactions, d.synthetic_seed, filesystem=ctx.out.fs)
    return ctx.out.url("source")


def print_summary(stats: dict[str, Any]) -> None:
    inp = stats["input"]
    log(
        f"ingest: {stats['num_users']} users, {stats['num_items']} items, {stats['num_interactions']} interactions "
        f"(sparsity {stats['sparsity']:.4%}, mean length {stats['sequence_length']['mean']:.2f}); "
        f"rejected {inp['rejected_lines']} lines, dropped {inp['items_without_title']} untitled items, "
        f"{inp['removed_duplicates']} duplicates, {inp['removed_k_core']} by k-core, "
        f"{inp['removed_subsample']} by subsampling, {inp['removed_short_sequences']} in short sequences"
    )


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(STAGE, lambda cfg: run_stage(STAGE, cfg, run), argv)


if __name__ == "__main__":
    sys.exit(main())
