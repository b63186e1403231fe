"""Recipe: train-recommender — SASRec / MF on the ingested sequences with Ray Train, then exports.

    recexp train-recommender --config configs/recommender/sasrec.yaml run_id=<ingested run>
    python -m ray_jobs.train_recommender --config ... [key=value ...]

setup:  read ``ingest`` (sequences, items) from the store; start Ray.
run:    ``TorchTrainer`` (Train V2): each worker takes its Ray Data shard of the train sequences,
        trains with DDP (gloo on CPU, nccl on GPU) and AdamW, evaluates its share of the valid
        users (full ranking, all-reduced), reports every epoch with a checkpoint (safetensors
        weights + best weights + optimizer state + epoch) stored under the run in the artifact
        store, and stops early on valid NDCG@10. ``FailureConfig`` restarts dead workers from
        the latest checkpoint; re-submitting the same run id resumes the same way.
        Then, on the driver: test metrics (full ranking and sampled100) beside a popularity
        baseline, and exports: ``encoder/``, ``topk.parquet`` (Ray Data batch inference over an
        actor pool), ``thresholds.parquet``, ``item_neighbors.parquet``.
commit: by the runner, atomically.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import ray
import ray.train
import torch
from ray.train import CheckpointConfig, DataConfig, FailureConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from safetensors.torch import load_file, save_file

from recexp.cli import run_main
from recexp.config import RecommenderConfig, RunConfig
from recexp.data.sequences import catalog_fingerprint
from recexp.errors import DataError
from recexp.recommender import (
    Popularity,
    build_eval_examples,
    build_train_examples,
    evaluate,
    item_neighbors,
    iterate_batches,
    load_training_state,
    make_optimizer,
    save,
    save_training_state,
    train_one_epoch,
)
from recexp.recommender.batches import check_item_ids, to_csr
from recexp.recommender.curves import curves_png, epochs_jsonl
from recexp.recommender.factory import build_model
from recexp.recommender.inference import thresholds_from_scores
from recexp.dist import all_reduce, maybe_fail
from recexp.runner import StageContext, init_ray, log, run_stage
from recexp.store import put_dir

STAGE = "train-recommender"
FAILURE_ENV = "RECEXP_INJECT_WORKER_FAILURE"
"""``<epoch>:<rank>:<marker file>``: that worker dies (os._exit) once, at the start of that epoch."""


# ----------------------------------------------------------------------------- per worker


def _shard_sequences(shard: Any) -> tuple[pa.ChunkedArray, np.ndarray]:
    """All rows of a Ray Data shard: (item_ids list array, user ids)."""
    tables = list(shard.iter_batches(batch_size=None, batch_format="pyarrow"))
    table = pa.concat_tables(tables) if tables else pa.table({"user_id": pa.array([], pa.int32()),
                                                               "item_ids": pa.array([], pa.list_(pa.int32()))})
    return table["item_ids"], table["user_id"].to_numpy()




def _restore(model: torch.nn.Module, optimizer: torch.optim.Optimizer, catalog: str) -> dict[str, Any]:
    """Load the latest checkpoint, if any, into ``model`` / ``optimizer``; returns its state."""
    checkpoint = ray.train.get_checkpoint()
    if checkpoint is None:
        return {"epoch": -1, "best": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": [], "stopped": False,
                "catalog": catalog}
    with checkpoint.as_directory() as directory:
        with open(os.path.join(directory, "training_state.json")) as f:
            saved_catalog = json.load(f)["extra"].get("catalog")
        if saved_catalog != catalog:
            raise DataError(f"checkpoint {checkpoint.path} was trained on another catalog ({saved_catalog} != {catalog}); "
                            "use a new run_id or force=true")
        model.load_state_dict(load_file(os.path.join(directory, "model.safetensors")))
        state = load_training_state(directory, optimizer)
        state["best_weights"] = load_file(os.path.join(directory, "best.safetensors"))
    return state


def _report(model: torch.nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], metrics: dict) -> None:
    """``ray.train.report`` on every rank; rank 0 attaches the checkpoint."""
    if ray.train.get_context().get_world_rank() != 0:
        ray.train.report(metrics)
        return
    with tempfile.TemporaryDirectory() as directory:
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(directory, "model.safetensors"))
        save_file(state["best_weights"], os.path.join(directory, "best.safetensors"))
        extra = {k: v for k, v in state.items() if k != "best_weights"}
        save_training_state(directory, optimizer, extra=extra)
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))


def train_loop(config: dict[str, Any]) -> None:
    """Ray Train worker: DDP training with per-epoch evaluation, checkpoints and early stopping."""
    rc = RecommenderConfig(**config["recommender"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(rc.seed)
    item_ids, users = _shard_sequences(ray.train.get_dataset_shard("train"))
    examples = build_train_examples(item_ids, config["n_items"], rc.max_len, users)
    valid_ids, valid_users = _shard_sequences(ray.train.get_dataset_shard("valid"))
    mine = np.arange(len(valid_users)) % world == rank  # this worker's share of the valid users
    valid = build_eval_examples(valid_ids.filter(pa.array(mine)), config["n_items"], rc.max_len, "valid", valid_users[mine])
    model = build_model(rc, config["n_items"], config["n_users"])
    optimizer = make_optimizer(model, rc.lr, rc.weight_decay)
    state = _restore(model, optimizer, config["catalog"])
    state.setdefault("best_weights", {k: v.clone() for k, v in model.state_dict().items()})
    ddp = ray.train.torch.prepare_model(model, move_to_device=False) if world > 1 else model
    started = time.perf_counter() - sum(row["seconds"] for row in state["history"])
    for epoch in range(state["epoch"] + 1, rc.epochs if not state["stopped"] else 0):
        maybe_fail(config.get("inject_failure"), epoch, rank)
        batches = iterate_batches(examples, rc.batch_size, seed=rc.seed * 100_003 + epoch, bucket_batches=rc.bucket_batches)
        stats = train_one_epoch(ddp, optimizer, batches, max_grad_norm=rc.max_grad_norm or None)
        row = _epoch_row(epoch, stats, evaluate(model, valid, num_sampled=0, batch_size=rc.eval_batch_size), len(valid))
        _update(state, row, model, rc, time.perf_counter() - started)
        if rank == 0:
            print(f"[recexp] epoch {epoch}: loss {row['loss']:.4f}  valid NDCG@10 {row['valid/full/ndcg@10']:.4f}  "
                  f"HR@10 {row['valid/full/hr@10']:.4f}  {row['sequences_per_s']:.0f} seq/s", flush=True)
        _report(model, optimizer, state, row)
        if state["stopped"]:
            break


def _epoch_row(epoch: int, stats: dict[str, float], valid: dict[str, float], n_valid: int) -> dict[str, Any]:
    """Global epoch metrics: valid metrics weighted by users, throughput summed over workers."""
    local = {f"valid/{k}": v * n_valid for k, v in valid.items()} | {
        "n_valid": float(n_valid), "loss": stats["loss"] * stats["sequences"], "sequences": stats["sequences"],
        "sequences_per_s": stats["sequences_per_s"],
    }
    total = all_reduce(local)
    seconds = all_reduce({"seconds": stats["seconds"]}, op="max")["seconds"]
    row = {k: v / total["n_valid"] for k, v in total.items() if k.startswith("valid/")}
    return row | {"epoch": epoch, "loss": total["loss"] / max(total["sequences"], 1.0), "seconds": seconds,
                  "sequences_per_s": total["sequences_per_s"], "finished_at": time.time()}


def _update(state: dict[str, Any], row: dict[str, Any], model: torch.nn.Module, rc: RecommenderConfig, elapsed: float) -> None:
    """Best weights, patience and the stop decision (identical on every rank: metrics are reduced)."""
    state["epoch"] = row["epoch"]
    state["history"].append(row)
    if row["valid/full/ndcg@10"] > state["best"]:
        state.update(best=row["valid/full/ndcg@10"], best_epoch=row["epoch"], bad_epochs=0)
        state["best_weights"] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    else:
        state["bad_epochs"] += 1
    over_time = rc.time_budget_min > 0 and elapsed > 60 * rc.time_budget_min
    state["stopped"] = state["bad_epochs"] >= rc.patience or row["epoch"] >= rc.epochs - 1 or over_time


# ----------------------------------------------------------------------------- driver


def fit(ctx: StageContext, sequences: pa.Table, n_items: int, catalog: str) -> ray.train.Result:
    """Run the TorchTrainer; checkpoints live under ``runs/<run_id>/.ray-train/`` in the store."""
    rc = ctx.cfg.recommender
    storage = ctx.store.stage_dir(ctx.run_id, ".ray-train")
    if ctx.cfg.force and storage.fs.exists(storage.path):
        storage.fs.rm(storage.path, recursive=True)  # a forced re-run starts over
    if storage.exists("catalog.json") and storage.read_json("catalog.json") != {"catalog": catalog}:
        raise DataError(f"the checkpoints under {storage.url()} were trained on another catalog; "
                        "use a new run_id, or force=true to start over")
    storage.write_json("catalog.json", {"catalog": catalog})
    data = ray.data.from_arrow(sequences.select(["user_id", "item_ids"]))
    trainer = TorchTrainer(
        train_loop,
        train_loop_config={"recommender": vars(rc), "n_items": n_items, "n_users": sequences.num_rows,
                           "catalog": catalog, "inject_failure": os.environ.get(FAILURE_ENV)},
        scaling_config=ScalingConfig(num_workers=rc.num_workers, use_gpu=rc.use_gpu,
                                     resources_per_worker={"CPU": rc.cpus_per_worker}),
        run_config=ray.train.RunConfig(
            name=STAGE, storage_path=storage.path, storage_filesystem=storage.arrow_fs(),
            failure_config=FailureConfig(max_failures=rc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
        ),
        datasets={"train": data, "valid": data},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )
    return trainer.fit()


def best_model(result: ray.train.Result, rc: RecommenderConfig, n_items: int, n_users: int) -> tuple[torch.nn.Module, dict]:
    """The best epoch's model and the training state from the final checkpoint."""
    if result.error is not None:
        raise result.error
    model = build_model(rc, n_items, n_users)
    with result.checkpoint.as_directory() as directory:
        model.load_state_dict(load_file(os.path.join(directory, "best.safetensors")))
        state = json.loads(open(os.path.join(directory, "training_state.json")).read())["extra"]
    return model.eval(), state


def test_metrics(model: torch.nn.Module, sequences: pa.Table, n_items: int, rc: RecommenderConfig) -> dict[str, float]:
    """valid/test metrics (full ranking + sampled) of the model and of the popularity baseline."""
    popularity = Popularity.fit(sequences["item_ids"], n_items)
    metrics = {}
    for split in ("valid", "test"):
        examples = build_eval_examples(sequences["item_ids"], n_items, rc.max_len, split)
        for prefix, scorer in (("", model), ("popularity/", popularity)):
            values = evaluate(scorer, examples, num_sampled=rc.sampled_negatives, batch_size=rc.eval_batch_size, seed=rc.seed)
            metrics |= {f"{prefix}{split}/{k}": v for k, v in values.items()}
    return metrics


class TopK:
    """Ray Data actor: one user per input row -> one row per position t = 1..n-1 with the model's
    top-k given the first t items (history excluded), plus the thresholds at t = n-2 and n-1."""

    def __init__(self, encoder_dir: str, k: int, top_fraction: float, bottom_fraction: float) -> None:
        from recexp.recommender import load

        torch.set_num_threads(1)
        self.model = load(encoder_dir)
        self.k, self.fractions = k, (top_fraction, bottom_fraction)

    def __call__(self, batch: pa.Table) -> pa.Table:
        users, positions, lengths, histories, seen = _positions(batch, self.model.max_len, self.model.n_items)
        with torch.no_grad():
            scores = self.model.full_scores(torch.from_numpy(histories)).float()  # (R, I)
            interested, not_interested = thresholds_from_scores(scores, *self.fractions)  # (R,), (R,)
            scores[seen] = float("-inf")  # the whole history, not only the model's window
            top = scores.topk(min(self.k, scores.shape[1]), dim=1)  # (R, k)
        at_end = positions >= lengths - 2  # thresholds only where the tasks need them: t in {n-2, n-1}
        return pa.table({
            "user_id": pa.array(users, pa.int32()),
            "position": pa.array(positions, pa.int32()),
            "item_ids": _lists(top.indices.numpy().astype(np.int32), pa.int32()),
            "scores": _lists(top.values.numpy(), pa.float32()),
            "interested": pa.array(interested.numpy(), pa.float32(), mask=~at_end),
            "not_interested": pa.array(not_interested.numpy(), pa.float32(), mask=~at_end),
        })


def _lists(matrix: np.ndarray, value_type: pa.DataType) -> pa.Array:
    """A ``list<value_type>`` array with one row per row of ``matrix (R, k)``."""
    flat = pa.array(matrix.ravel(), value_type)
    return pa.FixedSizeListArray.from_arrays(flat, matrix.shape[1]).cast(pa.list_(value_type))


def _positions(batch: pa.Table, max_len: int, pad: int) -> tuple[np.ndarray, ...]:
    """Every (user, t) for t = 1..n-1: user ids, t, the sequence length n, the right-aligned
    model input ``seq[:t][-max_len:]`` (R, max_len) and the (row, item) index pairs of the
    whole history ``seq[:t]`` (for exclusion)."""
    from recexp.recommender.batches import right_aligned

    seqs = to_csr(batch["item_ids"], batch["user_id"].to_numpy())
    counts = np.maximum(seqs.lengths - 1, 0)  # positions per user
    users = np.repeat(seqs.user_ids, counts)
    starts = np.repeat(seqs.offsets[:-1], counts)
    positions = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts) + 1  # 1..n-1
    histories = right_aligned(seqs.values, starts, starts + positions, max_len, pad)
    rows = np.repeat(np.arange(len(positions)), positions)  # one entry per history item
    offsets_in_row = np.arange(positions.sum()) - np.repeat(np.cumsum(positions) - positions, positions)
    seen = (torch.from_numpy(rows), torch.from_numpy(seqs.values[np.repeat(starts, positions) + offsets_in_row]))
    return users, positions, np.repeat(seqs.lengths, counts), histories, seen


def export(ctx: StageContext, model: torch.nn.Module, sequences: pa.Table, fingerprint: str, metrics: dict) -> None:
    """``encoder/``, ``topk.parquet/``, ``thresholds.parquet/``, ``item_neighbors.parquet``."""
    rc = ctx.cfg.recommender
    with tempfile.TemporaryDirectory() as local:
        save(model, local, fingerprint, metadata={"run_id": ctx.run_id, "metrics": metrics})
        put_dir(local, ctx.out, "encoder")
        # Blocks made on the driver: no upstream tasks competing with the actors for CPUs.
        table = sequences.select(["user_id", "item_ids"])
        step = max(1, -(-table.num_rows // (4 * rc.inference_actors)))
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, table.num_rows, step)])
        out = ds.map_batches(
            TopK, fn_constructor_args=(local, rc.topk, rc.interested_fraction, rc.not_interested_fraction),
            batch_size=64, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=rc.inference_actors),
        ).materialize()
        fs = ctx.out.arrow_fs()
        out.select_columns(["user_id", "position", "item_ids", "scores"]).write_parquet(ctx.out.child("topk.parquet"), filesystem=fs)
        thresholds = out.map_batches(lambda t: t.filter(pc.is_valid(t["interested"])), batch_format="pyarrow")
        thresholds.select_columns(["user_id", "position", "interested", "not_interested"]).write_parquet(
            ctx.out.child("thresholds.parquet"), filesystem=fs)
    ids, scores = item_neighbors(model.item_embeddings().detach(), k=min(rc.neighbors, model.n_items - 1))
    ctx.out.write_table("item_neighbors.parquet", pa.table({
        "item_id": pa.array(np.arange(model.n_items, dtype=np.int32)),
        "neighbor_ids": _lists(ids.numpy().astype(np.int32), pa.int32()),
        "scores": _lists(scores.numpy().astype(np.float32), pa.float32()),
    }))


def run(ctx: StageContext) -> dict[str, Any]:
    rc = ctx.cfg.recommender
    ingest = ctx.input("ingest")
    sequences = ingest.read_table("sequences.parquet", columns=["user_id", "item_ids"])
    items = ingest.read_table("items.parquet", columns=["item_id", "item"])
    n_items, catalog = items.num_rows, catalog_fingerprint(items)
    try:
        check_item_ids(to_csr(sequences["item_ids"], sequences["user_id"].to_numpy()), n_items)
    except ValueError as exc:
        raise DataError(str(exc)) from None
    init_ray(ctx.cfg.ray)
    with ctx.phase("train"):
        model, state = best_model(fit(ctx, sequences, n_items, catalog), rc, n_items, sequences.num_rows)
    with ctx.phase("evaluate"):
        metrics = test_metrics(model, sequences, n_items, rc)
    with ctx.phase("export"):
        export(ctx, model, sequences, catalog, metrics)
    history = state["history"]
    ctx.out.write_json("metrics.json", metrics | {"best_epoch": state["best_epoch"], "epochs": len(history)})
    with ctx.out.open("epochs.jsonl", "w") as f:
        f.write(epochs_jsonl(history))
    with ctx.out.open("curves.png", "wb") as f:
        f.write(curves_png(history, f"{rc.model} — run {ctx.run_id}"))
    log(f"train-recommender: test NDCG@10 full {metrics['test/full/ndcg@10']:.4f} "
        f"(popularity {metrics['popularity/test/full/ndcg@10']:.4f}), sampled100 {metrics.get('test/sampled100/ndcg@10', float('nan')):.4f}")
    return {k: round(metrics[k], 4) for k in ("test/full/ndcg@10", "test/full/hr@10", "popularity/test/full/ndcg@10")}


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(STAGE, lambda cfg: run_stage(STAGE, cfg, run), argv)


if __name__ == "__main__":
    sys.exit(main())
