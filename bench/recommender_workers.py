"""Throughput benchmark: SASRec training sequences/s with 1 and 2 Ray Train workers (CPU, DDP).

Runs the ``train-recommender`` recipe's ``fit`` (the TorchTrainer part only: no test metrics,
no exports) on an ingested run for a few epochs per setting, and reports the per-epoch
sequences/s (summed over workers) that the workers measure, median over the epochs after
the first (warm-up). Each setting uses a fresh run id under the same store root.

    python bench/recommender_workers.py --root ./artifacts --ingest-run games --epochs 3 \
        --settings 1x2 2x1 1x1 --out bench/out/recommender_workers.json

A setting ``WxC`` is W workers with C CPUs each (and C torch threads each).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from ray_jobs.train_recommender import best_model, fit
from recexp.config import load_config
from recexp.data.sequences import catalog_fingerprint
from recexp.runner import StageContext, init_ray
from recexp.store import Store


def run_setting(args: argparse.Namespace, workers: int, cpus: int) -> dict:
    run_id = f"bench-workers-{workers}x{cpus}"
    cfg = load_config(args.config, [
        f"store.root={args.root}", f"run_id={run_id}", "force=true", f"recommender.epochs={args.epochs}",
        f"recommender.patience={args.epochs}", f"recommender.num_workers={workers}", f"recommender.cpus_per_worker={cpus}",
    ])
    store = Store.from_config(cfg.store)
    ingest = store.committed(args.ingest_run, "ingest")
    sequences = ingest.read_table("sequences.parquet", columns=["user_id", "item_ids"])
    items = ingest.read_table("items.parquet", columns=["item_id", "item"])
    ctx = StageContext(cfg=cfg, stage="train-recommender", run_id=run_id, store=store, out=None)
    started = time.perf_counter()
    result = fit(ctx, sequences, items.num_rows, catalog_fingerprint(items))
    _, state = best_model(result, cfg.recommender, items.num_rows, sequences.num_rows)
    rates = [row["sequences_per_s"] for row in state["history"]]  # every epoch, from the final checkpoint
    return {"setting": f"{workers}x{cpus}", "workers": workers, "cpus_per_worker": cpus, "epochs": len(rates),
            "sequences_per_s": rates, "median_after_first": statistics.median(rates[1:] or rates),
            "wall_s": round(time.perf_counter() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="./artifacts")
    parser.add_argument("--ingest-run", default="games")
    parser.add_argument("--config", default="configs/recommender/sasrec.yaml")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--settings", nargs="+", default=["1x2", "2x1", "1x1"])
    parser.add_argument("--out", default="bench/out/recommender_workers.json")
    args = parser.parse_args()
    init_ray(load_config(None, []).ray)
    results = []
    for setting in args.settings:
        workers, cpus = (int(x) for x in setting.split("x"))
        results.append(run_setting(args, workers, cpus))
        print(json.dumps(results[-1]), flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
