"""Recipe: explain — batch explanations of recommendations with the aligned LLM (Ray Data).

    recexp explain --config configs/demo.yaml [explain.k=10 explain.users=[1,2] explain.pairs=pairs.csv ...]
    python -m ray_jobs.explain --config ... [key=value ...]   # what `ray job submit` runs

setup:   the requests: every user (or ``explain.users``) x their top-``k`` items at their last
         exported position (``train-recommender/topk.parquet``), or the ``(user_id, item_id)``
         pairs of ``explain.pairs``; the sanitised catalog (``build-alignment-data``); the
         aligned model's id (``adapter_id``: a hash of the ``align`` stage's ``model/`` files).
reuse:   rows of ``explain.reuse_runs`` with the same (user, item, adapter) and the same
         ``prompt_hash`` (the prompt this run would build: template, follow-up question, form,
         history) are copied, not regenerated (unless ``force=true``).
phase:   the other requests, cut into partitions of ``explain.partition_size``, go through a
         Ray Data actor pool (``explain.actors`` workers, each loading the model once, with
         ``num_gpus`` per worker when the cluster has GPUs); a worker explains one partition
         (:class:`recexp.explain.batch.Explainer`) and writes it atomically under
         ``runs/<run>/.partials/explain/<plan>/`` (:mod:`recexp.explain.partials`), outside the
         staging directory, so a killed run keeps its finished partitions and a re-run does only
         the missing ones.
commit:  ``explanations/part-<p>.parquet`` (generated) and ``explanations/reused.parquet``,
         checked to hold exactly one row per requested (user, item); committed atomically by
         the runner; then the partial files are removed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray

from recexp.cli import run_main
from recexp.config import ExplainConfig, RunConfig
from recexp.errors import DataError, StoreError
from recexp.explain.batch import OUTPUT_SCHEMA, ExplainSettings, request_hashes
from recexp.explain.partials import Partials, part_name, plan_id
from recexp.explain.requests import pair_requests, read_last_topk, read_pairs, topk_requests
from recexp.runner import StageContext, init_ray, log, run_stage
from recexp.store import StageDir, Store
from recexp.tasks import io
from recexp.tasks.catalog import Catalog, build_catalog
from recexp.tasks.templates import load_templates

STAGE = "explain"
OUT_DIR = "explanations"
REUSED_FILE = f"{OUT_DIR}/reused.parquet"
KILL_ENV = "RECEXP_EXPLAIN_KILL_AFTER"
"""``<n>``: the driver kills itself (SIGKILL) once ``n`` partitions are written (kill-and-resume tests)."""


@dataclass(frozen=True)
class Job:
    """What every worker needs (pickled once into each actor)."""

    model_uri: str
    endpoint_url: str | None
    settings: ExplainSettings
    templates_path: str
    catalog: Any
    """ObjectRef of the :class:`~recexp.tasks.catalog.Catalog`."""
    requests: Any
    """ObjectRef of the pending requests table (partitions are slices of it)."""
    partials: Partials
    cpus: int
    dtype: str


# ----------------------------------------------------------------------------- workers


class ExplainWorker:
    """Ray Data actor: loads the aligned model once, then explains one partition per call."""

    def __init__(self, job: Job) -> None:
        import torch

        from recexp.explain.batch import Explainer
        from recexp.llm.export import load_aligned
        from recexp.tasks.templates import load_templates

        torch.set_num_threads(job.cpus)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = job.dtype or ("bf16" if device == "cuda" else "float32")
        model, tokenizer = load_aligned(job.model_uri, endpoint_url=job.endpoint_url, dtype=dtype)
        templates = load_templates(job.templates_path, job.endpoint_url)
        self.explainer = Explainer(model.to(device), tokenizer, ray.get(job.catalog), templates, job.settings)
        self.requests: pa.Table = ray.get(job.requests)
        self.partials = job.partials

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[Any]]:
        index, lo, hi = (int(batch[name][0]) for name in ("partition", "lo", "hi"))
        start = time.perf_counter()
        table, tokens = self.explainer.explain(self.requests.slice(lo, hi - lo))
        self.partials.write(index, table)
        return {"partition": [index], "rows": [table.num_rows], "new_tokens": [tokens],
                "seconds": [time.perf_counter() - start]}


# ----------------------------------------------------------------------------- setup


def adapter_id(align_manifest: dict[str, Any]) -> str:
    """16 hex digits over the paths and SHA-256s of the committed ``model/`` files."""
    entries = sorted((f["path"], f["sha256"]) for f in align_manifest["files"] if f["path"].startswith("model/"))
    if not entries:
        raise DataError("the align stage has no model/ files")
    return hashlib.sha256(repr(entries).encode()).hexdigest()[:16]


def requests_for(ctx: StageContext, n_items: int) -> tuple[pa.Table, int]:
    """The request table (topk or pairs mode) and the number of repeated pairs dropped."""
    ec = ctx.cfg.explain
    ingest = ctx.input("ingest")
    sequences = ingest.read_table(io.SEQUENCES, columns=["user_id", "item_ids"])
    if ec.pairs:
        return pair_requests(sequences, read_pairs(ec.pairs, ctx.cfg.store.endpoint_url), n_items, ec.pairs)
    recommender = ctx.input("train-recommender")
    io.require_files(recommender, "train-recommender", [io.TOPK])
    return topk_requests(sequences, read_last_topk(recommender, io.TOPK, ec.k, ec.users), ec.k, ec.users), 0


def model_dir(align: StageDir) -> StageDir:
    """The aligned model export (``model/``) of the align stage."""
    return StageDir(align.fs, align.child("model"), align.protocol_prefix)


def aligned_form(model: StageDir, ec: ExplainConfig) -> str:
    """``explain.form``, else the form recorded in the aligned model's ``recexp.json``."""
    form = ec.form or (model.read_json("recexp.json").get("form") or "")
    if not form:
        raise DataError("the aligned model records no form; set explain.form (behaviour, intention or hybrid)")
    return form


def decoding(ec: ExplainConfig) -> dict[str, Any]:
    """``generate`` keywords of the ``explain`` section (sampling keys only when sampling)."""
    out: dict[str, Any] = {"do_sample": ec.do_sample, "num_beams": ec.num_beams,
                           "repetition_penalty": ec.repetition_penalty}
    if ec.do_sample:
        out |= {"temperature": ec.temperature, "top_p": ec.top_p}
    return out


def settings_for(ctx: StageContext, align: StageDir) -> ExplainSettings:
    ec = ctx.cfg.explain
    return ExplainSettings(
        form=aligned_form(model_dir(align), ec), template=ec.template,
        max_hist=ctx.cfg.tasks.max_hist, batch_size=ec.batch_size, max_new_tokens=ec.max_new_tokens,
        max_prompt_tokens=ec.max_prompt_tokens, adapter_id=adapter_id(ctx.store.manifest(ctx.upstream["align"], "align")),
        align_run=ctx.upstream["align"], run_id=ctx.run_id, decoding=decoding(ec), follow_up=ec.follow_up,
    )


# ----------------------------------------------------------------------------- reuse


def keys_of(table: pa.Table) -> list[tuple[int, int]]:
    return list(zip(table["user_id"].to_pylist(), table["item_id"].to_pylist()))


def expected_hashes(
    ctx: StageContext, align: StageDir, settings: ExplainSettings, catalog: Catalog, requests: pa.Table,
) -> list[str]:
    """The ``prompt_hash`` each request's row would get in this run (the prompt needs the
    window of the recommender the aligned model names, so that encoder is loaded)."""
    from recexp.recommender import load

    endpoint = ctx.cfg.store.endpoint_url
    max_len = load(model_dir(align).read_json("recexp.json")["recommender"]["uri"], endpoint_url=endpoint).max_len
    templates = load_templates(ctx.cfg.tasks.templates, endpoint)
    return request_hashes(catalog, templates, settings, max_len, requests)


def reusable_rows(
    store: Store, runs: Sequence[str], adapter: str, requests: pa.Table, hashes: Sequence[str],
) -> pa.Table:
    """Rows of the committed explanations of ``runs`` with ``adapter``, a requested key and that
    request's prompt hash (``hashes``, one per request); one per key (the first run listed wins)."""
    wanted = dict(zip(keys_of(requests), hashes))
    found: list[pa.Table] = []
    for run in runs:
        table = store.committed(run, STAGE).read_table(OUT_DIR).select(OUTPUT_SCHEMA.names).cast(OUTPUT_SCHEMA)
        table = table.filter(pc.equal(table["adapter_id"], adapter))
        keep = [wanted.get(k) == h for k, h in zip(keys_of(table), table["prompt_hash"].to_pylist())]
        table = table.filter(pa.array(keep, pa.bool_()))
        for key in keys_of(table):
            wanted.pop(key, None)
        found.append(table)
    return pa.concat_tables(found) if found else OUTPUT_SCHEMA.empty_table()


def without(requests: pa.Table, rows: pa.Table) -> pa.Table:
    """``requests`` whose (user, item) is not in ``rows``."""
    done = set(keys_of(rows))
    return requests.filter(pa.array([k not in done for k in keys_of(requests)], pa.bool_()))


# ----------------------------------------------------------------------------- partitions


def valid_partition(partials: Partials, index: int, expected: pa.Table) -> bool:
    """Whether a finished partition file holds exactly the requested keys of its slice."""
    try:
        table = partials.read(index)
    except (OSError, pa.ArrowInvalid):
        return False
    return table.schema.equals(OUTPUT_SCHEMA) and keys_of(table) == keys_of(expected)


def missing_partitions(partials: Partials, pending: pa.Table, size: int) -> list[tuple[int, int, int]]:
    """``(index, lo, hi)`` of the partitions without a valid file (invalid files are removed)."""
    done = set(partials.done())
    todo = []
    for index, lo, hi in io.partitions(pending.num_rows, size):
        if index in done and valid_partition(partials, index, pending.slice(lo, hi - lo)):
            continue
        partials.remove(index)
        todo.append((index, lo, hi))
    return todo


def num_gpus(ec: ExplainConfig) -> float:
    """GPUs per worker: the configured value, else 1 when the cluster has GPUs."""
    if ec.num_gpus is not None:
        return ec.num_gpus
    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def run_partitions(job: Job, todo: list[tuple[int, int, int]], ec: ExplainConfig) -> dict[str, float]:
    """Explain the ``todo`` partitions in the actor pool; totals of rows, tokens and worker seconds."""
    totals = {"partitions": 0, "rows": 0, "new_tokens": 0, "worker_seconds": 0.0}
    if not todo:
        return totals
    kill_after = int(os.environ.get(KILL_ENV, "0") or 0)
    items = [{"partition": i, "lo": lo, "hi": hi} for i, lo, hi in todo]
    ds = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
        ExplainWorker, fn_constructor_kwargs={"job": job}, batch_size=1, batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(ec.actors, len(todo))), num_cpus=ec.cpus_per_actor,
        num_gpus=num_gpus(ec) or None,
    )
    for result in ds.iter_rows():
        totals["partitions"] += 1
        totals["rows"] += int(result["rows"])
        totals["new_tokens"] += int(result["new_tokens"])
        totals["worker_seconds"] += float(result["seconds"])
        log(f"explain: partition {int(result['partition'])} done ({totals['partitions']}/{len(todo)})")
        if kill_after and totals["partitions"] >= kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
    return totals


# ----------------------------------------------------------------------------- output


def publish(ctx: StageContext, partials: Partials, pending: pa.Table, reused: pa.Table, requests: pa.Table) -> None:
    """Copy every partition and the reused rows into the staging directory, after checking that
    together they hold exactly one row per requested key."""
    parts = io.partitions(pending.num_rows, ctx.cfg.explain.partition_size)
    keys: list[tuple[int, int]] = keys_of(reused)
    for index, lo, hi in parts:
        if not valid_partition(partials, index, pending.slice(lo, hi - lo)):
            raise StoreError(f"explain: partition {index} is missing or wrong in {partials.dir.url()}")
        keys += keys_of(pending.slice(lo, hi - lo))
        partials.copy_to(index, ctx.out, f"{OUT_DIR}/{part_name(index)}")
    if reused.num_rows:
        ctx.out.write_table(REUSED_FILE, reused)
    if len(keys) != len(set(keys)) or set(keys) != set(keys_of(requests)):
        raise StoreError("explain: the explanations do not cover the requests exactly once")


def run(ctx: StageContext) -> dict[str, Any]:
    ec = ctx.cfg.explain
    align = ctx.input("align")
    with ctx.phase("prepare"):
        catalog = build_catalog(ctx.input("build-alignment-data").read_table("catalog.parquet"))
        requests, repeated = requests_for(ctx, len(catalog))
        settings = settings_for(ctx, align)
        reused = OUTPUT_SCHEMA.empty_table()
        if ec.reuse_runs and not ctx.cfg.force:
            hashes = expected_hashes(ctx, align, settings, catalog, requests)
            reused = reusable_rows(ctx.store, ec.reuse_runs, settings.adapter_id, requests, hashes)
        pending = without(requests, reused)
        plan = {**dataclasses.asdict(settings), "run_id": None, "partition_size": ec.partition_size,
                "templates": ctx.cfg.tasks.templates}
        partials = Partials.of(ctx.store, ctx.run_id, STAGE, plan_id(pending, plan))
        todo = missing_partitions(partials, pending, ec.partition_size)
    log(f"explain: {requests.num_rows} requests, {reused.num_rows} reused, {pending.num_rows} to explain; "
        f"{len(todo)} of {len(io.partitions(pending.num_rows, ec.partition_size))} partitions left")
    with ctx.phase("generate"):
        init_ray(ctx.cfg.ray)
        job = Job(align.url("model"), ctx.cfg.store.endpoint_url, settings, ctx.cfg.tasks.templates,
                  ray.put(catalog), ray.put(pending), partials, ec.cpus_per_actor, ec.dtype)
        totals = run_partitions(job, todo, ec)
    with ctx.phase("publish"):
        publish(ctx, partials, pending, reused, requests)
    seconds = ctx.timings["generate"]
    return {
        "requests": requests.num_rows, "repeated_pairs": repeated, "reused": reused.num_rows,
        "generated": totals["rows"], "resumed_partitions": len(io.partitions(pending.num_rows, ec.partition_size)) - len(todo),
        "new_tokens": totals["new_tokens"], "adapter_id": settings.adapter_id, "form": settings.form,
        "explanations_per_s": round(totals["rows"] / seconds, 3) if seconds else None,
        "tokens_per_s": round(totals["new_tokens"] / seconds, 3) if seconds else None,
    }


def execute(cfg: RunConfig) -> dict[str, Any]:
    """Run and commit the stage, then drop its partial files (the commit holds copies)."""
    manifest = run_stage(STAGE, cfg, run)
    Partials.root(Store.from_config(cfg.store), str(cfg.run_id), STAGE).clear()
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(STAGE, execute, argv)


if __name__ == "__main__":
    sys.exit(main())
