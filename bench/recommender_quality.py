"""Quality benchmark: SASRec vs popularity on Amazon Games (leave-one-out), pure PyTorch.

Reads the RecBole-format test split (one row per user: history + target = the full
sequence), trains SASRec on ``seq[:-2]`` for a fixed number of epochs or a wall-time
budget, selects the epoch with the best validation NDCG@10 (if ``--eval-every``), and
reports test ``sampled100`` and full-ranking HR/NDCG@10, the popularity baseline, wall
time and per-epoch sequences/s. Results go to stdout and ``--out`` (JSON).

Reference to beat (pmixer/SASRec.pytorch, d=50, 2 blocks, BCE, 20 epochs, ~12 min on
2 cores): test sampled100 NDCG@10 0.466 / HR@10 0.694.

Example::

    python bench/recommender_quality.py --time-budget-min 12 --out bench/out/sasrec_games.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recexp.recommender import (
    Popularity,
    SASRec,
    SASRecConfig,
    build_eval_examples,
    build_train_examples,
    evaluate,
    iterate_batches,
    make_optimizer,
    train_one_epoch,
)

DATA = Path("/work/shared/data/amazon-video-games")


def read_sequences(path: Path) -> tuple[list[np.ndarray], int]:
    """Full sequences (history + target) from a RecBole ``.test.inter`` file, and the
    number of items (ids must already be dense)."""
    frame = pd.read_csv(path, sep="\t", dtype=str)
    histories, targets = frame.iloc[:, 1], frame.iloc[:, 2].astype(np.int64)
    sequences = [np.append(np.array(h.split(), dtype=np.int64), t) for h, t in zip(histories, targets)]
    flat = np.concatenate(sequences)
    n_items = int(flat.max()) + 1
    if np.unique(flat).shape[0] != n_items:
        raise ValueError("item ids are not dense; remap them first")
    return sequences, n_items


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=DATA / "Games-6k.test.inter")
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--max-len", type=int, default=50)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--heads", type=int, default=1)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--post-ln", action="store_true", help="post-LN blocks (default pre-LN)")
    p.add_argument("--loss", default="ce", choices=["ce", "bce", "sampled_softmax"])
    p.add_argument("--negatives", type=int, default=1)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--bucket", type=int, default=50, help="sort rows by length within windows of this many batches")
    p.add_argument("--time-budget-min", type=float, default=12.0, help="no epoch is started that would end past this")
    p.add_argument("--eval-every", type=int, default=0, help="validate every N epochs and keep the best (0: never)")
    p.add_argument("--clip", type=float, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    sequences, n_items = read_sequences(args.data)
    train = build_train_examples(sequences, n_items, args.max_len)
    valid = build_eval_examples(sequences, n_items, args.max_len, "valid")
    test = build_eval_examples(sequences, n_items, args.max_len, "test")
    print(f"users={len(sequences)} items={n_items} train_rows={len(train)} skipped={train.n_skipped}", flush=True)

    t0 = time.perf_counter()
    popularity = evaluate(Popularity.fit(sequences, n_items), test)
    print(f"popularity test: {json.dumps({k: round(v, 4) for k, v in popularity.items()})} "
          f"({time.perf_counter() - t0:.1f}s)", flush=True)

    config = SASRecConfig(
        n_items=n_items, d=args.d, max_len=args.max_len, n_blocks=args.blocks, n_heads=args.heads,
        dropout=args.dropout, norm_first=not args.post_ln, loss=args.loss, num_negatives=args.negatives,
    )
    model = SASRec(config)
    optimizer = make_optimizer(model, lr=args.lr, weight_decay=args.weight_decay)
    epochs, best, best_state, train_seconds = [], -1.0, None, 0.0
    for epoch in range(args.epochs):
        stats = train_one_epoch(
            model, optimizer, iterate_batches(train, args.batch_size, seed=args.seed + epoch, bucket_batches=args.bucket), max_grad_norm=args.clip
        )
        train_seconds += stats["seconds"]
        record = {"epoch": epoch + 1, "loss": stats["loss"], "sequences_per_s": stats["sequences_per_s"],
                  "seconds": stats["seconds"], "train_seconds_total": train_seconds}
        if args.eval_every and (epoch + 1) % args.eval_every == 0:
            metrics = evaluate(model, valid)
            record["valid/sampled100/ndcg@10"] = metrics["sampled100/ndcg@10"]
            record["valid/full/ndcg@10"] = metrics["full/ndcg@10"]
            if metrics["sampled100/ndcg@10"] > best:
                best, best_state = metrics["sampled100/ndcg@10"], copy.deepcopy(model.state_dict())
        epochs.append(record)
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()}), flush=True)
        if train_seconds + train_seconds / (epoch + 1) > args.time_budget_min * 60:
            print(f"stopping: another epoch would exceed the {args.time_budget_min} min budget", flush=True)
            break
    if best_state is not None:
        model.load_state_dict(best_state)

    t0 = time.perf_counter()
    result = evaluate(model, test)
    eval_seconds = time.perf_counter() - t0
    report = {
        "command_args": vars(args) | {"data": str(args.data), "out": str(args.out)},
        "config": config.to_dict(),
        "train_wall_seconds": train_seconds,
        "test_eval_seconds": eval_seconds,
        "epochs": epochs,
        "test": result,
        "popularity_test": popularity,
    }
    print(f"SASRec test: sampled100 ndcg@10={result['sampled100/ndcg@10']:.4f} hr@10={result['sampled100/hr@10']:.4f} "
          f"| full ndcg@10={result['full/ndcg@10']:.4f} hr@10={result['full/hr@10']:.4f} "
          f"| train {train_seconds / 60:.1f} min", flush=True)
    print(f"popularity test: sampled100 ndcg@10={popularity['sampled100/ndcg@10']:.4f} "
          f"hr@10={popularity['sampled100/hr@10']:.4f} | full ndcg@10={popularity['full/ndcg@10']:.4f} "
          f"hr@10={popularity['full/hr@10']:.4f}", flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
