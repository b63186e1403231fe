"""Recipe: build-alignment-data — the recommender's outputs -> RecExplainer alignment tasks (Ray Data).

    recexp build-alignment-data --config configs/demo.yaml [tasks.forms=[intention,hybrid] ...]
    python -m ray_jobs.build_alignment_data --config ... [key=value ...]   # what `ray job submit` runs

setup:   check the upstream files, sanitise the catalog once (shared through the object store),
         load and validate the templates, start Ray.
phase 1: one Ray task per (task family, partition). Users are partitioned by id range
         (``tasks.users_per_partition``) for ``next_item`` (T1, T2), ``history`` (T6, T7) and
         ``interest`` (T3: loads the frozen encoder once per task and scores the partition's
         histories); items by id range for ``items`` (T4). Each task reads only its rows
         (Parquet filters), writes ``<family>/part-<p>.parquet`` and returns its counts, and
         for ``interest`` its best explanation candidates.
phase 2: the explanation rows of the globally selected pairs (one task per partition holding
         some), and T5 general rows (its own partition; its quota needs the phase-1 counts).
commit:  ``catalog.parquet`` (the sanitised titles every row uses), ``counts.json``.

Every random choice comes from generators seeded by (seed, task, user or item[, position]) and
every file is named by its partition, so output bytes do not depend on the number of workers.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from recexp.cli import run_main
from recexp.errors import DataError
from recexp.runner import StageContext, init_ray, log, run_stage
from recexp.store import StageDir
from recexp.tasks import io
from recexp.tasks.catalog import Catalog, build_catalog, catalog_table
from recexp.tasks.context import BuildContext, BuildParams
from recexp.tasks.counts import merge_counts, table_counts, totals_by_task, train_rows_by_form
from recexp.tasks.general import build_general, general_quota, read_general
from recexp.tasks.history import build_history
from recexp.tasks.interest import InterestPair, build_explain, build_interest, interest_pairs, model_scorer, select_explain
from recexp.tasks.items import build_items
from recexp.tasks.next_item import build_next_item
from recexp.tasks.templates import TemplateSet, load_templates

STAGE = "build-alignment-data"
COMPRESSION = "zstd"


@dataclass(frozen=True)
class Job:
    """What every partition task needs (pickled once per task through ``fn_kwargs``)."""

    ingest: StageDir
    recommender: StageDir
    out: StageDir
    params: BuildParams
    templates: TemplateSet
    catalog: Any
    """The :class:`Catalog`, or an ObjectRef to it (put once, shared by all tasks)."""
    general_path: str
    endpoint_url: str | None

    def context(self) -> BuildContext:
        catalog = ray.get(self.catalog) if isinstance(self.catalog, ray.ObjectRef) else self.catalog
        return BuildContext(self.params, catalog, self.templates)


# ----------------------------------------------------------------------------- one partition


def _interest(job: Job, ctx: BuildContext, lo: int, hi: int) -> tuple[pa.Table | None, dict[str, Any]]:
    """T3 rows of users [lo, hi) and their explanation candidates (encoder loaded once here)."""
    users = io.load_users(job.ingest, job.recommender, lo, hi, thresholds=True)
    model = io.load_encoder(job.recommender, len(ctx.catalog))
    pairs, skipped = interest_pairs(users, ctx, model_scorer(model), model.pad_id)
    params = job.params
    table = build_interest(pairs, users, ctx) if params.wants("t3") else None
    candidates = select_explain(pairs, params.explain_train, params.explain_test) if params.wants("explain") else []
    return table, {"skipped_pairs": skipped, "candidates": [pair.to_dict() for pair in candidates]}


def _explain(job: Job, ctx: BuildContext, lo: int, hi: int, payload: str) -> pa.Table:
    pairs = [InterestPair(**d) for d in json.loads(payload)]
    users = io.load_users(job.ingest, job.recommender, lo, hi)
    return build_explain(pairs, users, ctx)


def _general(job: Job, ctx: BuildContext, payload: str) -> tuple[pa.Table, dict[str, Any]]:
    chats, skipped = read_general(job.general_path, job.endpoint_url)
    quota = general_quota(json.loads(payload), job.params.general_ratio, len(chats))
    return build_general(chats, quota, ctx), {"skipped_lines": skipped, "available": len(chats)}


def build_part(job: Job, family: str, index: int, lo: int, hi: int, payload: str) -> dict[str, Any]:
    """Build and write one partition of one task family; returns its counts and extras."""
    ctx = job.context()
    extra: dict[str, Any] = {}
    if family == "next_item":
        table = build_next_item(io.load_users(job.ingest, job.recommender, lo, hi, topk=True), ctx)
    elif family == "history":
        table = build_history(io.load_users(job.ingest, job.recommender, lo, hi), ctx)
    elif family == "interest":
        table, extra = _interest(job, ctx, lo, hi)
    elif family == "items":
        neighbors = io.first_neighbors(io.read_id_range(job.recommender, io.NEIGHBORS, "item_id", lo, hi))
        table = build_items(range(lo, hi), neighbors, ctx)
    elif family == "explain":
        table = _explain(job, ctx, lo, hi, payload)
    elif family == "general":
        table, extra = _general(job, ctx, payload)
    else:
        raise ValueError(f"unknown task family {family!r}")
    if table is not None:
        job.out.write_table(io.part_path(family, index), table, compression=COMPRESSION)
    return {"counts": table_counts(table) if table is not None else {}, **extra}


def _build_batch(batch: dict[str, np.ndarray], job: Job) -> dict[str, list[Any]]:
    """Ray Data UDF: a batch is one partition descriptor; returns one result row."""
    family, index = str(batch["family"][0]), int(batch["partition"][0])
    result = build_part(job, family, index, int(batch["lo"][0]), int(batch["hi"][0]), str(batch["payload"][0]))
    return {"family": [family], "partition": [index], "result": [json.dumps(result)]}


def run_partitions(descriptors: list[dict[str, Any]], job: Job, concurrency: int | None) -> list[dict[str, Any]]:
    """Run every descriptor as its own Ray task; results sorted by (family, partition)."""
    if not descriptors:
        return []
    ds = ray.data.from_items(descriptors, override_num_blocks=len(descriptors))
    ds = ds.map_batches(
        _build_batch, batch_size=1, batch_format="numpy", fn_kwargs={"job": job}, concurrency=concurrency
    )
    results = [{"family": r["family"], "partition": int(r["partition"]), **json.loads(r["result"])} for r in ds.take_all()]
    return sorted(results, key=lambda r: (r["family"], r["partition"]))


# ----------------------------------------------------------------------------- the plan


def user_families(params: BuildParams) -> list[str]:
    """Phase-1 families over user partitions, given the requested tasks and forms."""
    families = []
    if params.wants("t1", "t2"):
        families.append("next_item")
    if params.wants("t6", "t7") and params.slot_forms:
        families.append("history")
    if params.wants("t3", "explain"):
        families.append("interest")
    return families


def descriptor(family: str, partition: int, lo: int, hi: int, payload: str = "") -> dict[str, Any]:
    """One Ray task's input: a task family, a partition index and its id range ``[lo, hi)``."""
    return {"family": family, "partition": partition, "lo": lo, "hi": hi, "payload": payload}


def phase1_descriptors(params: BuildParams, n_users: int, n_items: int, size: int) -> list[dict[str, Any]]:
    """User partitions of each user family, then item partitions (same size) for T4."""
    descriptors = [descriptor(f, *part) for f in user_families(params) for part in io.partitions(n_users, size)]
    if params.wants("t4"):
        descriptors += [descriptor("items", *part) for part in io.partitions(n_items, size)]
    return descriptors


def explain_descriptors(params: BuildParams, phase1: list[dict[str, Any]], size: int) -> list[dict[str, Any]]:
    """The globally selected explanation pairs, grouped by the user partition they belong to."""
    pairs = [InterestPair(**d) for r in phase1 if r["family"] == "interest" for d in r["candidates"]]
    by_partition: dict[int, list[dict[str, Any]]] = {}
    for pair in select_explain(pairs, params.explain_train, params.explain_test):
        by_partition.setdefault(pair.user_id // size, []).append(pair.to_dict())
    return [descriptor("explain", p, p * size, (p + 1) * size, json.dumps(group)) for p, group in sorted(by_partition.items())]


def phase2_descriptors(job: Job, phase1: list[dict[str, Any]], counts: dict[str, int], size: int) -> list[dict[str, Any]]:
    """Explanation partitions, and the T5 partition (its quota needs the phase-1 train counts)."""
    descriptors = explain_descriptors(job.params, phase1, size) if job.params.wants("explain") else []
    if job.params.wants("t5") and job.general_path:
        descriptors.append(descriptor("general", 0, 0, 0, json.dumps(train_rows_by_form(counts, job.params.forms))))
    return descriptors


# ----------------------------------------------------------------------------- the stage


def prepare(ctx: StageContext) -> tuple[Job, Catalog, int]:
    """Check inputs, sanitise the catalog, load templates; returns (job, catalog, users)."""
    cfg, params_cfg = ctx.cfg, ctx.cfg.tasks
    ingest, recommender = ctx.input("ingest"), ctx.input("train-recommender")
    io.require_files(ingest, "ingest", [io.SEQUENCES, io.ITEMS])
    io.require_files(recommender, "train-recommender", io.recommender_files(params_cfg.tasks))
    catalog = build_catalog(ingest.read_table(io.ITEMS))
    encoder = io.encoder_config(recommender)
    if encoder["n_items"] != len(catalog):
        raise DataError(f"the encoder has {encoder['n_items']} items, items.parquet has {len(catalog)}")
    params = BuildParams.from_config(params_cfg, max_len=int(encoder["config"]["max_len"]))
    templates = load_templates(params_cfg.templates, cfg.store.endpoint_url)
    n_users = io.id_count(ingest, io.SEQUENCES, "user_id")
    general = params_cfg.general_instructions
    return Job(ingest, recommender, ctx.out, params, templates, catalog, general, cfg.store.endpoint_url), catalog, n_users


def build(ctx: StageContext, concurrency: int | None = None) -> dict[str, Any]:
    """The stage; ``concurrency`` caps parallel tasks (None: as many as Ray's CPUs allow)."""
    with ctx.phase("prepare"):
        job, catalog, n_users = prepare(ctx)
    with ctx.phase("ray_start"):
        init_ray(ctx.cfg.ray)
        job = dataclasses.replace(job, catalog=ray.put(catalog))
    size = ctx.cfg.tasks.users_per_partition
    with ctx.phase("phase1"):
        phase1 = run_partitions(phase1_descriptors(job.params, n_users, len(catalog), size), job, concurrency)
        counts1 = merge_counts(r["counts"] for r in phase1)
    with ctx.phase("phase2"):
        phase2 = run_partitions(phase2_descriptors(job, phase1, counts1, size), job, concurrency)
    counts = merge_counts(r["counts"] for r in phase1 + phase2)
    with ctx.phase("write"):
        ctx.out.write_table("catalog.parquet", catalog_table(catalog), compression=COMPRESSION)
        ctx.out.write_json("counts.json", counts)
    summary = summarize(counts, phase1 + phase2, n_users, len(catalog))
    print_summary(summary, counts)
    return summary


def summarize(counts: dict[str, int], results: list[dict[str, Any]], n_users: int, n_items: int) -> dict[str, Any]:
    return {
        "rows": sum(counts.values()),
        "rows_by_task": totals_by_task(counts),
        "users": n_users,
        "items": n_items,
        "partitions": len(results),
        "t3_skipped_positions": sum(r.get("skipped_pairs", 0) for r in results),
        "general_skipped_lines": sum(r.get("skipped_lines", 0) for r in results),
    }


def print_summary(summary: dict[str, Any], counts: dict[str, int]) -> None:
    log(
        f"build-alignment-data: {summary['rows']} rows from {summary['users']} users and {summary['items']} items "
        f"in {summary['partitions']} partitions; T3 positions skipped (empty set): {summary['t3_skipped_positions']}"
    )
    for key, n in counts.items():
        log(f"  {key:<28}{n:>10}")


def run(ctx: StageContext) -> dict[str, Any]:
    return build(ctx)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(STAGE, lambda cfg: run_stage(STAGE, cfg, run), argv)


if __name__ == "__main__":
    sys.exit(main())
