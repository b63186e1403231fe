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
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
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


def read_parsed(files: Sequence[str], kind: str, cfg: RunConfig, item_ids: pa.Array | None = None) -> ray.data.Dataset:
    """A dataset of parsed blocks over ``files`` (one read task per file)."""
    specs = [{"index": i, "uri": uri} for i, uri in enumerate(files)]
    ds = ray.data.from_items(specs, override_num_blocks=len(specs))
    kwargs = {"fmt": FORMATS[cfg.data.format], "kind": kind, "cfg": cfg, "item_ids": item_ids}
    return ds.map_batches(_parse_files, batch_size=1, batch_format="numpy", fn_kwargs=kwargs)


@dataclass
class Collected:
    """Interactions gathered on the driver as compact arrays, plus every reject."""

    users: pa.ChunkedArray
    item: np.ndarray
    timestamp: np.ndarray
    order: np.ndarray
    rejects: pa.Table
    lines: int


def collect_interactions(ds: ray.data.Dataset, uris: Sequence[str]) -> Collected:
    """Stream parsed blocks to the driver, keeping only what filtering needs."""
    users, items, times, orders, rejects = [], [], [], [], []
    for block in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        good, bad = split_parsed(block, uris)
        users.append(good["user"].combine_chunks())
        items.append(good["item"].fill_null(-1).to_numpy())
        times.append(good["timestamp"].to_numpy())
        orders.append(good["order"].to_numpy())
        rejects.append(bad)
    empty_i64 = np.zeros(0, np.int64)
    return Collected(
        users=pa.chunked_array(users, pa.string()),
        item=np.concatenate(items) if items else np.zeros(0, np.int32),
        timestamp=np.concatenate(times) if times else empty_i64,
        order=np.concatenate(orders) if orders else empty_i64,
        rejects=pa.concat_tables(rejects) if rejects else schema.empty(schema.REJECTS),
        lines=sum(len(o) for o in orders) + sum(r.num_rows for r in rejects),
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


def user_codes(users: pa.ChunkedArray, order: np.ndarray) -> tuple[np.ndarray, pa.Array]:
    """Integer user codes numbered by first appearance in the source, and their original ids."""
    encoded = users.dictionary_encode().combine_chunks()
    codes = encoded.indices.to_numpy()
    by_order = np.argsort(order, kind="stable")
    distinct, first_pos = np.unique(codes[by_order], return_index=True)
    rank = np.empty(len(distinct), np.int32)
    rank[distinct[np.argsort(first_pos)]] = np.arange(len(distinct), dtype=np.int32)
    return rank[codes], encoded.dictionary.take(pa.array(np.argsort(rank)))


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


def filter_interactions(x: filters.Interactions, cfg: RunConfig) -> tuple[filters.Interactions, dict[str, int]]:
    """Dedup, k-core, subsample, minimum length; returns the survivors and a count per step."""
    ic, counts = cfg.ingest, {}
    x = filters.sort_chronologically(x)
    steps = [
        ("duplicates", lambda x: filters.deduplicate(x)),
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
    init_ray(cfg.ray)
    with ctx.phase("read_items"):
        items, item_rejects = collect_items(read_parsed(inputs.item_files, "items", cfg), inputs.item_files)
        titled = items.filter(pc.invert(pc.equal(pc.utf8_trim_whitespace(items["title"].fill_null("")), "")))
    with ctx.phase("read_interactions"):
        ds = read_parsed(inputs.interaction_files, "interactions", cfg, ray.put(titled["item"]))
        got = collect_interactions(ds, inputs.interaction_files)
    rejects = pa.concat_tables([item_rejects, got.rejects])
    reasons = check_rejects(rejects, got.lines + items.num_rows + item_rejects.num_rows, cfg.ingest.max_reject_fraction)
    with ctx.phase("filter"):
        known = got.item >= 0
        codes, names = user_codes(got.users.filter(pa.array(known)), got.order[known])
        x = filters.Interactions(codes, got.item[known].astype(np.int32), got.timestamp[known], got.order[known])
        x, counts = filter_interactions(x, cfg)
        if not len(x):
            raise DataError("no interactions left after filtering (check ingest.k_core and the item titles)")
        sequences, kept_items = build_tables(x, names, titled)
    with ctx.phase("write"):
        ctx.out.write_table("items.parquet", kept_items)
        ctx.out.write_table("sequences.parquet", sequences)
        ctx.out.write_table("rejects/rejects.parquet", rejects)
        stats = statistics(sequences, kept_items.num_rows)
        stats["input"] = {
            "item_files": len(inputs.item_files),
            "interaction_files": len(inputs.interaction_files),
            "item_rows": items.num_rows,
            "items_without_title": items.num_rows - titled.num_rows,
            "interaction_rows": int(got.item.size),
            "interactions_with_unknown_or_untitled_item": int((~known).sum()),
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
