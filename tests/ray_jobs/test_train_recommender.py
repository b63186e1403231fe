"""The train-recommender recipe on a real local Ray: DDP, exports, failure recovery, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from ray_jobs import ingest, train_recommender
from recexp.config import load_config
from recexp.errors import DataError
from recexp.recommender import build_eval_examples, evaluate, load
from recexp.runner import run_stage
from recexp.store import Store

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("ray_cluster")
TINY = ["recommender.d=16", "recommender.max_len=12", "recommender.batch_size=64", "recommender.topk=20",
        "recommender.inference_actors=1", "ray.num_cpus=2"]


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A store holding a committed ``ingest`` stage (run ``base``) of 3,000 generated interactions."""
    root = str(tmp_path_factory.mktemp("store"))
    run_stage("ingest", load_config(None, [f"store.root={root}", "run_id=base", "data.synthetic_interactions=3000"]), ingest.run)
    return root


def train(root: str, run_id: str, *extra: str) -> dict:
    args = [f"store.root={root}", f"run_id={run_id}", "inputs.ingest=base", *TINY, *extra]
    return run_stage("train-recommender", load_config(None, args), train_recommender.run)


def sequences(root: str) -> pa.Table:
    return Store(root).committed("base", "ingest").read_table("sequences.parquet")


DDP = ("recommender.num_workers=2", "recommender.epochs=2")


@pytest.fixture(scope="module")
def ddp_run(store_root: str) -> dict:
    """One 2-worker DDP run shared by the tests that only read its outputs."""
    return train(store_root, "ddp", *DDP)


def test_two_workers_train_and_export_everything(store_root: str, ddp_run: dict) -> None:
    manifest = ddp_run
    out = Store(store_root).committed("ddp", "train-recommender")
    metrics = out.read_json("metrics.json")
    for key in ("test/full/ndcg@10", "test/full/hr@10", "test/sampled100/ndcg@10", "valid/full/ndcg@10",
                "popularity/test/full/ndcg@10", "test/full/ndcg@5", "test/full/hr@20"):
        assert 0.0 <= metrics[key] <= 1.0, key
    assert manifest["upstream"] == {"ingest": "base"}
    epochs = [json.loads(line) for line in out.open("epochs.jsonl", "r").read().splitlines()]
    assert [e["epoch"] for e in epochs] == [0, 1] and all(e["sequences_per_s"] > 0 for e in epochs)
    assert out.open("curves.png").read()[:8] == b"\x89PNG\r\n\x1a\n"
    check_exports(out, sequences(store_root), k=20)


def check_exports(out, seqs: pa.Table, k: int) -> None:
    """Every user has top-k at every position 1..n-1 (history excluded), thresholds at n-2 and n-1."""
    items = {u: s for u, s in zip(seqs["user_id"].to_pylist(), seqs["item_ids"].to_pylist())}
    topk = out.read_table("topk.parquet").to_pylist()
    assert len(topk) == sum(len(s) - 1 for s in items.values())
    seen = set()
    for row in topk:
        history = set(items[row["user_id"]][: row["position"]])
        assert len(row["item_ids"]) == k and not history & set(row["item_ids"])
        assert row["scores"] == sorted(row["scores"], reverse=True)
        seen.add((row["user_id"], row["position"]))
    assert seen == {(u, t) for u, s in items.items() for t in range(1, len(s))}
    thresholds = out.read_table("thresholds.parquet").to_pylist()
    assert {(r["user_id"], r["position"]) for r in thresholds} == {
        (u, t) for u, s in items.items() for t in (len(s) - 2, len(s) - 1)}
    assert all(r["interested"] >= r["not_interested"] for r in thresholds)
    neighbors = out.read_table("item_neighbors.parquet")
    n_items = neighbors.num_rows
    assert n_items == max(max(s) for s in items.values()) + 1
    for row in neighbors.to_pylist():
        assert row["item_id"] not in row["neighbor_ids"] and len(row["neighbor_ids"]) == 10


def test_loaded_encoder_reproduces_the_model(store_root: str, ddp_run: dict) -> None:
    out = Store(store_root).committed("ddp", "train-recommender")
    model = load(out.url("encoder"))
    seqs = sequences(store_root)
    examples = build_eval_examples(seqs["item_ids"], model.n_items, model.max_len, "test")
    metrics = evaluate(model, examples, num_sampled=100, seed=0)
    recorded = out.read_json("metrics.json")
    assert metrics["full/ndcg@10"] == recorded["test/full/ndcg@10"]  # exactly: same weights, same maths
    assert metrics["sampled100/hr@10"] == recorded["test/sampled100/hr@10"]
    row = out.read_table("topk.parquet").slice(0, 1).to_pylist()[0]
    history = dict(zip(seqs["user_id"].to_pylist(), seqs["item_ids"].to_pylist()))[row["user_id"]][: row["position"]]
    scores = model.full_scores(torch.tensor([history]))[0]
    assert torch.allclose(scores[row["item_ids"]], torch.tensor(row["scores"]), atol=1e-5)


def test_worker_killed_mid_training_resumes(store_root: str, ddp_run: dict, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "failed-once"
    monkeypatch.setenv(train_recommender.FAILURE_ENV, f"1:1:{marker}")
    train(store_root, "faulty", *DDP)
    assert marker.exists()  # the worker of rank 1 really died at the start of epoch 1
    clean = Store(store_root).committed("ddp", "train-recommender").read_json("metrics.json")
    faulty = Store(store_root).committed("faulty", "train-recommender").read_json("metrics.json")
    assert faulty["epochs"] == 2
    assert abs(faulty["valid/full/ndcg@10"] - clean["valid/full/ndcg@10"]) <= 0.02 * clean["valid/full/ndcg@10"]


def test_resubmitting_the_run_resumes_from_the_checkpoint(store_root: str) -> None:
    args = [f"store.root={store_root}", "run_id=resume", "inputs.ingest=base", *TINY,
            "recommender.epochs=40", "recommender.patience=40"]
    proc = subprocess.Popen([sys.executable, "-m", "ray_jobs.train_recommender", *args], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = Path(store_root) / "runs/resume/.ray-train/train-recommender"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(storage.glob("checkpoint_*"))) < 2:
        time.sleep(0.2)
    killed_at = time.time()
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not Store(store_root).is_committed("resume", "train-recommender")
    train(store_root, "resume", "recommender.epochs=40", "recommender.patience=40", "recommender.time_budget_min=0.001")
    epochs = Store(store_root).committed("resume", "train-recommender").read_json("metrics.json")["epochs"]
    history = [json.loads(line) for line in
               Store(store_root).committed("resume", "train-recommender").open("epochs.jsonl", "r").read().splitlines()]
    assert history[0]["finished_at"] < killed_at < history[-1]["finished_at"]  # earlier epochs were kept
    assert [h["epoch"] for h in history] == list(range(epochs)) and epochs >= 2


def test_item_outside_the_catalog_names_the_user(tmp_path: Path) -> None:
    store = Store(str(tmp_path))
    staging = store.begin("bad", "ingest")
    staging.write_table("sequences.parquet", pa.table({
        "user_id": pa.array([0, 1], pa.int32()),
        "item_ids": pa.array([[0, 1, 2, 1], [2, 1, 99]], pa.list_(pa.int32())),
    }))
    staging.write_table("items.parquet", pa.table({"item_id": pa.array([0, 1, 2], pa.int32()), "item": ["a", "b", "c"]}))
    store.commit(staging, "bad", "ingest", {})
    with pytest.raises(DataError, match="user_id 1: item id 99 is outside the catalog"):
        run_stage("train-recommender", load_config(None, [f"store.root={tmp_path}", "run_id=bad", *TINY]), train_recommender.run)


def test_checkpoints_of_another_catalog_are_refused(store_root: str, tmp_path: Path) -> None:
    storage = Store(store_root).stage_dir("other-catalog", ".ray-train")
    storage.write_json("catalog.json", {"catalog": "0" * 64})
    with pytest.raises(DataError, match="trained on another catalog"):
        train(store_root, "other-catalog", "recommender.epochs=1")
