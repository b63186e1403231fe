"""Recipe: align — LoRA-align an LLM to the recommender with Ray Train + DeepSpeed.

    recexp align --config configs/align/intention.yaml run_id=<run with alignment data>
    python -m ray_jobs.align --config ... [key=value ...]   # what `ray job submit` runs

setup:  read the train rows of ``align.form`` from ``build-alignment-data``; check that the
        recommender export and the alignment data share one catalog; build the model once on
        the driver and encode every row there (chat template, response-only labels, slot and
        context-length checks), so bad input fails with one clear error before any worker starts.
run:    ``TorchTrainer`` (Train V2). Each worker takes every ``world``-th encoded example,
        builds the same seeded model (base + slot tokens + LoRA + connectors + frozen
        recommender), wraps it in DeepSpeed ZeRO (``align.deepspeed_config``; ZeRO-2 by default)
        or DDP, and runs optimizer steps over seeded per-epoch micro-batches (packed, length-
        grouped or padded). The label-token count of each step is all-reduced so the update
        equals one big batch. Every ``checkpoint_every`` steps all ranks save (DeepSpeed
        partitions optimizer state) and report the checkpoint; ``FailureConfig`` restarts dead
        workers from it, and re-submitting the same run id resumes the same way.
export: on the driver, the final trainable weights go into a fresh copy of the model, saved
        with ``save_aligned`` as ``model/``; plus ``metrics.json``, ``train_log.jsonl``, ``loss.png``.
commit: by the runner, atomically.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import ray
import ray.train
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from recexp.cli import run_main
from recexp.config import AlignConfig, RunConfig
from recexp.data.sequences import catalog_fingerprint
from recexp.errors import DataError
from recexp.llm.align_data import collate, epoch_micro_batches, read_train_rows, shard, token_counts
from recexp.llm.build import BuildSpec, build_trainable
from recexp.llm.collate import Collator
from recexp.llm.encode import Encoded
from recexp.llm.engine import EngineSettings, build_engine, load_trainable, read_ds_config
from recexp.llm.errors import ContextLengthError, ModelLoadError, SlotError
from recexp.llm.export import save_aligned
from recexp.llm.lora import LoraSettings, count_parameters
from recexp.llm.slots import hidden_size
from recexp.llm.train_log import loss_png, mfu, peak_memory_mb
from recexp.dist import all_reduce, maybe_fail
from recexp.runner import StageContext, init_ray, log, run_stage
from recexp.store import put_dir

STAGE = "align"
FAILURE_ENV = "RECEXP_INJECT_WORKER_FAILURE"
"""``<step>:<rank>:<marker file>``: that worker dies (os._exit) once, at the start of that step."""
STATE_FILE = "state.json"
RESUMABLE_CHANGES = ("time_budget_min", "max_failures", "log_every", "checkpoint_every", "merged")
"""``align`` keys that may differ when a run resumes from its checkpoints; any other change refuses."""
EXAMPLE_SCHEMA = pa.schema([
    ("input_ids", pa.list_(pa.int32())), ("labels", pa.list_(pa.int32())),
    ("histories", pa.list_(pa.list_(pa.int32()))), ("items", pa.list_(pa.int32())),
])


def build_spec(ac: AlignConfig, recommender_uri: str, endpoint_url: str | None) -> BuildSpec:
    """The model every worker (and the export) builds: identical, seeded."""
    lora = LoraSettings(r=ac.lora_r, alpha=ac.lora_alpha, dropout=ac.lora_dropout, target_modules=list(ac.lora_targets))
    return BuildSpec(
        base_uri=ac.model, recommender_uri=recommender_uri, form=ac.form, injection_mode=ac.injection_mode,
        lora=lora, dtype="bf16" if ac.use_gpu else None, seed=ac.seed, endpoint_url=endpoint_url,
    )


# ----------------------------------------------------------------------------- per worker


def _examples(shard_data: Any, rank: int, world: int) -> list[Encoded]:
    """This worker's encoded examples (every ``world``-th row of the whole data set)."""
    tables = list(shard_data.iter_batches(batch_size=None, batch_format="pyarrow"))
    table = pa.concat_tables(tables).take(pa.array(shard(sum(t.num_rows for t in tables), rank, world)))
    columns = {name: table[name].to_pylist() for name in EXAMPLE_SCHEMA.names}
    return [Encoded(*fields) for fields in zip(*(columns[n] for n in EXAMPLE_SCHEMA.names))]




class Schedule:
    """Which micro-batches make optimizer step ``s`` (same steps per epoch on every worker)."""

    def __init__(self, examples: list[Encoded], ac: AlignConfig) -> None:
        self.examples, self.ac = examples, ac
        self.lengths = [len(e) for e in examples]
        self._cache: tuple[int, list] = (0, self._plan(0))  # the first epoch's plan serves twice
        local = len(self._cache[1]) // ac.grad_accum
        self.steps_per_epoch = int(all_reduce({"steps": float(local)}, op="min")["steps"])
        if self.steps_per_epoch < 1:
            raise DataError(f"too few examples for one optimizer step per worker ({len(examples)} on a worker, "
                            f"micro_batch_size {ac.micro_batch_size} x grad_accum {ac.grad_accum})")
        by_epochs = ac.epochs * self.steps_per_epoch
        self.total_steps = ac.max_steps or by_epochs

    def _plan(self, epoch: int) -> list:
        ac = self.ac
        return epoch_micro_batches(self.lengths, ac.batching, ac.micro_batch_size, ac.max_length, ac.seed, epoch)

    def micro_batches(self, step: int) -> list:
        """Index micro-batches of optimizer step ``step``."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if self._cache[0] != epoch:
            self._cache = (epoch, self._plan(epoch))
        return self._cache[1][index * self.ac.grad_accum : (index + 1) * self.ac.grad_accum]


def _restore(engine: Any) -> dict[str, Any]:
    """Load the latest checkpoint, if any, into ``engine``; returns the training state."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {"step": 0, "history": [], "seconds": 0.0}
    with checkpoint.as_directory() as directory:
        engine.load(directory)
        with open(os.path.join(directory, STATE_FILE)) as f:
            return json.load(f)


def _report(engine: Any, state: dict[str, Any], metrics: dict[str, Any], checkpoint: bool) -> None:
    """``ray.train.report`` on every rank; with a checkpoint, every rank saves its part."""
    rank = ray.train.get_context().get_world_rank()
    if not checkpoint:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        engine.save(directory, rank)
        if rank == 0:
            with open(os.path.join(directory, STATE_FILE), "w") as f:
                json.dump(state, f)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def _device(ac: AlignConfig) -> torch.device:
    if ac.use_gpu:
        return ray.train.torch.get_device()
    torch.set_num_threads(ac.cpus_per_worker)
    return torch.device("cpu")


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: build, shard, train with checkpoints (see the module doc)."""
    ac = AlignConfig(**config["align"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    os.environ.setdefault("LOCAL_RANK", str(context.get_local_rank()))
    device = _device(ac)
    model, _ = build_trainable(BuildSpec(**config["spec"]))
    model.recommender.to(device)
    model.to(device)
    if ac.gradient_checkpointing:
        from recexp.llm.train_step import enable_gradient_checkpointing

        enable_gradient_checkpointing(model)
    examples = _examples(ray.train.get_dataset_shard("train"), rank, world)
    schedule = Schedule(examples, ac)
    settings = EngineSettings(
        strategy=ac.strategy, ds_config=config["ds_config"], lr=ac.lr, weight_decay=ac.weight_decay,
        warmup_steps=ac.warmup_steps, total_steps=schedule.total_steps, max_grad_norm=ac.max_grad_norm,
        micro_batch_size=ac.micro_batch_size, grad_accum=ac.grad_accum, world_size=world, bf16=ac.use_gpu,
    )
    engine = build_engine(model, settings, device)
    state = _restore(engine)
    state.setdefault("starts", []).append(state["step"])  # where each attempt began (resume audit)
    _train(engine, schedule, state, config, rank, world, device)


def _train(engine: Any, schedule: Schedule, state: dict[str, Any], config: dict[str, Any], rank: int, world: int,
           device: torch.device) -> None:
    """Optimizer steps from ``state["step"]`` to the end, with logs and checkpoints."""
    ac = AlignConfig(**config["align"])
    pad_id, packed = config["pad_id"], ac.batching == "packed"
    started = time.perf_counter() - state["seconds"]
    window = {"real": 0.0, "padded": 0.0, "seconds": 0.0}
    for step in range(state["step"], schedule.total_steps):
        maybe_fail(config.get("inject_failure"), step, rank)
        tick = time.perf_counter()
        micro = schedule.micro_batches(step)
        batches = [collate(schedule.examples, m, pad_id, packed, ac.max_length, ac.loss_per == "example") for m in micro]
        tokens = all_reduce({"labels": float(sum(b.loss_weight for b in batches))})["labels"]
        stats = engine.step(batches, max(tokens, 1.0) / world)
        real, padded = token_counts(schedule.examples, micro)
        window = {k: window[k] + v for k, v in (("real", real), ("padded", padded), ("seconds", time.perf_counter() - tick))}
        elapsed = all_reduce({"t": time.perf_counter() - started}, op="max")["t"]
        over_time = ac.time_budget_min > 0 and elapsed > 60 * ac.time_budget_min
        last = step + 1 == schedule.total_steps or over_time
        if (step + 1) % ac.log_every == 0 or last:
            row = _log_row(step, stats.loss, window, elapsed, config, device)
            state["history"].append(row)
            window = {"real": 0.0, "padded": 0.0, "seconds": 0.0}
        state.update(step=step + 1, seconds=elapsed, stopped=last, steps_per_epoch=schedule.steps_per_epoch)
        checkpoint = (step + 1) % ac.checkpoint_every == 0 or last
        if checkpoint or (step + 1) % ac.log_every == 0:
            _report(engine, state, state["history"][-1] if state["history"] else {}, checkpoint)
        if last:
            break


def _log_row(step: int, loss: float, window: dict[str, float], elapsed: float, config: dict[str, Any],
             device: torch.device) -> dict[str, Any]:
    """One ``train_log.jsonl`` row; sums over workers (tokens/s) or means (loss)."""
    world = ray.train.get_context().get_world_size()
    total = all_reduce({"loss": loss, "real": window["real"], "padded": window["padded"]})
    seconds = all_reduce({"s": window["seconds"]}, op="max")["s"]
    memory = all_reduce({"mb": peak_memory_mb(device)}, op="max")["mb"]
    tokens_per_s = total["padded"] / max(seconds, 1e-9)
    row = {
        "step": step + 1, "loss": total["loss"] / world, "elapsed_s": round(elapsed, 2),
        "tokens_per_s": tokens_per_s, "effective_tokens_per_s": total["real"] / max(seconds, 1e-9),
        "padding_fraction": 1.0 - total["real"] / max(total["padded"], 1.0), "peak_memory_mb": memory,
    }
    utilisation = mfu(tokens_per_s / world, config["n_params"], config["n_layers"], config["hidden"], config["max_length"], device)
    if utilisation is not None:
        row["mfu_estimate"] = utilisation
    if ray.train.get_context().get_world_rank() == 0:
        print(f"[recexp] align step {row['step']}: loss {row['loss']:.4f}  {tokens_per_s:.0f} tok/s "
              f"({row['effective_tokens_per_s']:.0f} non-padding)  peak {memory:.0f} MB", flush=True)
    return row


# ----------------------------------------------------------------------------- driver


def resolve_ds_config(path: str) -> dict[str, Any]:
    """The DeepSpeed JSON at ``path``: absolute, relative to the working directory, or to the repository."""
    candidates = [Path(path), Path(__file__).resolve().parents[1] / path]
    for candidate in candidates:
        if candidate.is_file():
            return read_ds_config(candidate)
    raise DataError(f"align.deepspeed_config: file not found: {path}")


def check_catalog(ctx: StageContext, tasks_catalog: pa.Table) -> str:
    """The recommender encoder URI, after checking that it, the alignment data and the ingest
    share one catalog."""
    from recexp.recommender.export import load as load_recommender

    recommender = ctx.input("train-recommender")
    encoder_uri = recommender.url("encoder")
    items = ctx.input("ingest").read_table("items.parquet", columns=["item_id", "item"])
    try:
        load_recommender(encoder_uri, expected_fingerprint=catalog_fingerprint(items),
                         expected_n_items=tasks_catalog.num_rows, endpoint_url=ctx.cfg.store.endpoint_url)
    except ValueError as exc:
        raise DataError(f"the recommender at {encoder_uri} does not fit this run's catalog: {exc}") from None
    return encoder_uri


def encode_rows(rows: pa.Table, collator: Collator) -> pa.Table:
    """Every row encoded (raises on a row that is too long or whose slots and ids disagree)."""
    try:
        encoded = collator.encode(rows.to_pylist())
    except (SlotError, ContextLengthError) as exc:
        raise DataError(f"alignment data cannot be used with this model: {exc}") from None
    return pa.table({
        "input_ids": [e.input_ids for e in encoded], "labels": [e.labels for e in encoded],
        "histories": [e.histories for e in encoded], "items": [e.items for e in encoded],
    }, schema=EXAMPLE_SCHEMA)


def prepare(ctx: StageContext) -> tuple[BuildSpec, pa.Table, dict[str, Any]]:
    """Rows, catalog check, a model built once (fails fast on a bad base model), encoded examples."""
    ac = ctx.cfg.align
    tasks_dir = ctx.input("build-alignment-data")
    encoder_uri = check_catalog(ctx, tasks_dir.read_table("catalog.parquet"))
    rows = read_train_rows(tasks_dir, ac.form, ac.tasks, "train", ac.max_rows, ac.seed, ac.task_rows)
    spec = build_spec(ac, encoder_uri, ctx.cfg.store.endpoint_url)
    try:
        model, tokenizer = build_trainable(spec)
    except (ModelLoadError, SlotError) as exc:
        raise DataError(f"align.model={ac.model}: {exc}") from None
    collator = Collator(tokenizer, model.slots, ac.max_length)
    examples = encode_rows(rows, collator)
    counts = count_parameters(model)
    base = model.base.get_base_model().config
    facts = {
        "pad_id": collator.pad_id, "n_params": counts.total, "trainable_params": counts.trainable,
        "n_layers": int(getattr(base, "num_hidden_layers", 0)), "hidden": hidden_size(model.base.get_base_model()),
        "max_length": ac.max_length, "rows": rows.num_rows,
        "tasks": dict(zip(*np.unique(rows["task"].to_numpy(zero_copy_only=False), return_counts=True))),
    }
    log(f"align: {rows.num_rows} {ac.form} rows, {counts}")
    return spec, examples, facts


def fit(ctx: StageContext, spec: BuildSpec, examples: pa.Table, facts: dict[str, Any]) -> ray.train.Result:
    """Run the TorchTrainer; checkpoints live under ``runs/<run_id>/.ray-train/align`` in the store."""
    ac = ctx.cfg.align
    storage = ctx.store.stage_dir(ctx.run_id, ".ray-train")
    identity = {"align": {k: v for k, v in vars(ac).items() if k not in RESUMABLE_CHANGES}, "rows": facts["rows"],
                "encoder": spec.recommender_uri}
    if ctx.cfg.force and storage.fs.exists(storage.child(STAGE)):
        storage.fs.rm(storage.child(STAGE), recursive=True)  # a forced re-run starts over
    if not ctx.cfg.force and storage.exists(f"{STAGE}.json") and storage.read_json(f"{STAGE}.json") != json.loads(json.dumps(identity)):
        raise DataError(f"the align checkpoints under {storage.url(STAGE)} were made with another configuration or "
                        "data; use a new run_id, or force=true to start over")
    storage.write_json(f"{STAGE}.json", identity)
    ds_config = resolve_ds_config(ac.deepspeed_config) if ac.strategy == "deepspeed" else {}
    ray.data.DataContext.get_current().execution_options.preserve_order = True  # shards by row index
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"align": vars(ac), "spec": vars(spec), "ds_config": ds_config,
                           "inject_failure": os.environ.get(FAILURE_ENV)} | facts,
        scaling_config=ScalingConfig(num_workers=ac.num_workers, use_gpu=ac.use_gpu,
                                     resources_per_worker={"CPU": ac.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=STAGE, storage_path=storage.path, storage_filesystem=storage.arrow_fs(),
            failure_config=FailureConfig(max_failures=ac.max_failures), checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={"train": ray.data.from_arrow(examples)},
        dataset_config=DataConfig(datasets_to_split=[]),  # every worker sees all rows and keeps its share
    )
    result = trainer.fit()
    if result.error is not None:
        raise result.error
    return result


def export(ctx: StageContext, spec: BuildSpec, result: ray.train.Result) -> dict[str, Any]:
    """Final trainable weights into a fresh model -> ``model/``; returns the training state."""
    model, tokenizer = build_trainable(spec)
    with result.checkpoint.as_directory() as directory:
        load_trainable(model, os.path.join(directory, "trainable.safetensors"))
        with open(os.path.join(directory, STATE_FILE)) as f:
            state = json.load(f)
    with tempfile.TemporaryDirectory() as local:
        save_aligned(
            model.eval(), tokenizer, local, base_model=spec.base_uri, recommender_uri=spec.recommender_uri,
            recommender_run=ctx.upstream.get("train-recommender"), form=spec.form, merged=ctx.cfg.align.merged,
            extra={"lora": spec.lora.to_dict() if spec.lora else None, "align_run": ctx.run_id, "steps": state["step"]},
        )
        put_dir(local, ctx.out, "model")
    return state


def run(ctx: StageContext) -> dict[str, Any]:
    ac = ctx.cfg.align
    with ctx.phase("prepare"):
        spec, examples, facts = prepare(ctx)
    init_ray(ctx.cfg.ray)
    with ctx.phase("train"):
        result = fit(ctx, spec, examples, facts)
    with ctx.phase("export"):
        state = export(ctx, spec, result)
    history = state["history"]
    last = history[-1] if history else {}
    metrics = {"form": ac.form, "steps": state["step"], "steps_per_epoch": state.get("steps_per_epoch"),
               "train_seconds": state["seconds"], "final_loss": last.get("loss"), "first_loss": history[0]["loss"] if history else None,
               "tokens_per_s": last.get("tokens_per_s"), "effective_tokens_per_s": last.get("effective_tokens_per_s"),
               "peak_memory_mb": last.get("peak_memory_mb"), "workers": ac.num_workers, "strategy": ac.strategy,
               "rows": facts["rows"], "rows_by_task": {k: int(v) for k, v in facts["tasks"].items()},
               "trainable_params": facts["trainable_params"], "total_params": facts["n_params"],
               "starts": state.get("starts", [])}
    ctx.out.write_json("metrics.json", metrics)
    with ctx.out.open("train_log.jsonl", "w") as f:
        f.write("".join(json.dumps(row, sort_keys=True) + "\n" for row in history))
    with ctx.out.open("loss.png", "wb") as f:
        f.write(loss_png(history, f"align {ac.form} ({ac.injection_mode}) — run {ctx.run_id}"))
    log(f"align: {state['step']} steps, loss {metrics['first_loss']} -> {metrics['final_loss']}")
    return {k: metrics[k] for k in ("steps", "final_loss", "rows")}


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(STAGE, lambda cfg: run_stage(STAGE, cfg, run), argv)


if __name__ == "__main__":
    sys.exit(main())
