"""Baseline for bench/tasks_generation.py: the same alignment data in one process, driven by pandas.

Loads every upstream table whole with pandas, groups the recommender outputs per user with
pandas ``groupby``, and calls the same pure builders as the recipe (``recexp.tasks``) over all
users at once: T1/T2, T6/T7, T3 (scoring in-process with the same encoder), explanations
(global selection), T4, and T5 when a chat file is given. Writes one Parquet file per task
family and prints one JSON line (rows, counts, seconds).

    .venv/bin/python bench/tasks_pandas_baseline.py --store ROOT --run-id RUN --out DIR [--general FILE]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from recexp.config import TasksConfig
from recexp.store import StageDir, Store
from recexp.tasks import BuildContext, BuildParams, UserRecord, build_catalog, load_templates
from recexp.tasks import io
from recexp.tasks.counts import merge_counts, table_counts, train_rows_by_form
from recexp.tasks.general import build_general, general_quota, read_general
from recexp.tasks.history import build_history
from recexp.tasks.interest import build_explain, build_interest, interest_pairs, model_scorer, select_explain
from recexp.tasks.items import build_items
from recexp.tasks.next_item import build_next_item


def read(directory: StageDir, name: str) -> pd.DataFrame:
    return pd.read_parquet(directory.child(name), filesystem=directory.arrow_fs())


def users_from_pandas(sequences: pd.DataFrame, topk: pd.DataFrame, thresholds: pd.DataFrame) -> list[UserRecord]:
    """Per-user records assembled with pandas groupby (the baseline's own data path)."""
    users = {int(u): UserRecord(int(u), np.asarray(ids, dtype=np.int64)) for u, ids in zip(sequences["user_id"], sequences["item_ids"])}
    for user, group in topk.sort_values(["user_id", "position"]).groupby("user_id", sort=True):
        users[int(user)].topk = {
            int(t): (np.asarray(ids, dtype=np.int64), np.asarray(scores, dtype=np.float32))
            for t, ids, scores in zip(group["position"], group["item_ids"], group["scores"])
        }
    for user, group in thresholds.groupby("user_id", sort=True):
        users[int(user)].thresholds = {
            int(t): (float(hi), float(lo)) for t, hi, lo in zip(group["position"], group["interested"], group["not_interested"])
        }
    return [users[u] for u in sorted(users)]


def generate(store: Store, run_id: str, out: Path, general: str) -> dict:
    ingest, recommender = store.committed(run_id, "ingest"), store.committed(run_id, "train-recommender")
    catalog = build_catalog(pa.Table.from_pandas(read(ingest, io.ITEMS), preserve_index=False))
    encoder = io.encoder_config(recommender)
    ctx = BuildContext(BuildParams.from_config(TasksConfig(), int(encoder["config"]["max_len"])), catalog, load_templates())
    users = users_from_pandas(read(ingest, io.SEQUENCES), read(recommender, io.TOPK), read(recommender, io.THRESHOLDS))
    model = io.load_encoder(recommender, len(catalog))
    pairs, _ = interest_pairs(users, ctx, model_scorer(model), model.pad_id)
    neighbors = read(recommender, io.NEIGHBORS)
    tables = {
        "next_item": build_next_item(users, ctx),
        "history": build_history(users, ctx),
        "interest": build_interest(pairs, users, ctx),
        "explain": build_explain(select_explain(pairs, ctx.params.explain_train, ctx.params.explain_test), users, ctx),
        "items": build_items(range(len(catalog)), {int(i): int(n[0]) for i, n in zip(neighbors["item_id"], neighbors["neighbor_ids"])}, ctx),
    }
    if general:
        chats, _ = read_general(general)
        quota = general_quota(train_rows_by_form(merge_counts(table_counts(t) for t in tables.values()), ctx.params.forms),
                              ctx.params.general_ratio, len(chats))
        tables["general"] = build_general(chats, quota, ctx)
    out.mkdir(parents=True, exist_ok=True)
    for family, table in tables.items():
        pq.write_table(table, out / f"{family}.parquet", compression="zstd")
    return merge_counts(table_counts(t) for t in tables.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", required=True)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--general", default="", help="T5 chat file (JSON lines); default none")
    args = parser.parse_args()
    start = time.perf_counter()
    counts = generate(Store(args.store), args.run_id, Path(args.out), args.general)
    seconds = time.perf_counter() - start
    print(json.dumps({"impl": "pandas", "rows": sum(counts.values()), "seconds": round(seconds, 2), "counts": counts}), flush=True)


if __name__ == "__main__":
    main()
