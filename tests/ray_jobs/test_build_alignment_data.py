"""The build-alignment-data recipe end to end on a real local Ray: counts, slots, byte-identity."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from ray_jobs import build_alignment_data as recipe
from recexp.config import TasksConfig, load_config
from recexp.errors import StoreError
from recexp.runner import run_stage
from recexp.store import Store
from recexp.tasks.context import BuildParams
from recexp.tasks.counts import merge_counts, protocol_counts, table_counts
from recexp.tasks.rows import ROW_SCHEMA, check_row

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
import fakes  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_cluster")
N_USERS, N_ITEMS, PER_PARTITION = 50, 200, 20


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Committed ``ingest`` + ``train-recommender`` (random SASRec) in run ``up``, plus a chat file."""
    root = tmp_path_factory.mktemp("store")
    sequences, _ = fakes.commit_upstream(str(root), "up", n_users=N_USERS, n_items=N_ITEMS)
    chats = root / "chats.jsonl"
    lines = [{"messages": [{"role": "user", "content": f"question {i} <user>"}, {"role": "assistant", "content": f"answer {i}"}]}
             for i in range(6)]
    chats.write_text("\n".join(json.dumps(line) for line in lines) + "\nbroken line\n")
    lengths = [len(s) for s in sequences["item_ids"].to_pylist()]
    return {"root": str(root), "chats": str(chats), "lengths": lengths}


def run(upstream: dict, run_id: str, concurrency: int | None, *extra: str) -> dict:
    overrides = [
        f"store.root={upstream['root']}", f"run_id={run_id}", "inputs.ingest=up", "inputs.train-recommender=up",
        f"tasks.users_per_partition={PER_PARTITION}", f"tasks.general_instructions={upstream['chats']}",
        "tasks.explain_train=30", "tasks.explain_test=10", *extra,
    ]
    return run_stage(recipe.STAGE, load_config(None, overrides), functools.partial(recipe.build, concurrency=concurrency))


@pytest.fixture(scope="module")
def two_workers(upstream: dict) -> dict:
    return run(upstream, "two", concurrency=2)


def test_counts_files_and_slots(upstream: dict, two_workers: dict) -> None:
    out = Store(upstream["root"]).committed("two", recipe.STAGE)
    counts = out.read_json("counts.json")
    parts = [f for f in out.files() if f.endswith(".parquet") and "/part-" in f]
    assert {f.split("/")[0] for f in parts} == {"next_item", "history", "interest", "items", "explain", "general"}
    assert sum(1 for f in parts if f.startswith("next_item/")) == 3  # 50 users / 20 per partition
    assert sum(1 for f in parts if f.startswith("items/")) == 10
    per_file = []
    for rel in parts:
        table = pq.read_table(out.child(rel))
        assert table.schema.equals(ROW_SCHEMA)
        per_file.append(table_counts(table))
        for row in table.to_pylist():
            check_row(row["messages"], row["response"], row["history_ids"], row["item_slot_ids"])
    assert merge_counts(per_file) == counts
    predicted = protocol_counts(upstream["lengths"], BuildParams.from_config(TasksConfig(), max_len=8))
    assert {k: counts[k] for k in predicted} == predicted
    for form in ("behaviour", "intention", "hybrid"):
        assert counts[f"explain/train/{form}"] == 30 and counts[f"explain/test/{form}"] == 10
        assert counts[f"t5/train/{form}"] == 6  # quota capped by the 6 usable chats
    assert two_workers["summary"]["rows"] == sum(counts.values())
    assert two_workers["summary"]["general_skipped_lines"] == 1
    assert pq.read_table(out.child("catalog.parquet")).num_rows == N_ITEMS


def test_one_worker_and_two_workers_give_identical_bytes(upstream: dict, two_workers: dict) -> None:
    one = run(upstream, "one", concurrency=1)
    digests = lambda manifest: {f["path"]: f["sha256"] for f in manifest["files"]}  # noqa: E731
    assert digests(one) == digests(two_workers)
    assert len(digests(one)) > 20


def test_missing_upstream_is_one_clear_error(upstream: dict) -> None:
    overrides = [f"store.root={upstream['root']}", "run_id=lonely", "inputs.ingest=up"]
    with pytest.raises(StoreError, match="train-recommender"):
        run_stage(recipe.STAGE, load_config(None, overrides), recipe.run)


@pytest.mark.s3
def test_s3_store_gives_the_same_bytes_as_local(tmp_path: Path, s3_endpoint: str) -> None:
    """Upstream and output on S3 (moto): workers read through the store's filesystem, the
    encoder is downloaded to a temporary directory, and the files match a local run's."""
    args = {"n_users": 12, "n_items": 120}
    local, s3 = str(tmp_path), "s3://recexp/tasks-store"
    fakes.commit_upstream(local, "up", **args)
    fakes.commit_upstream(s3, "up", endpoint_url=s3_endpoint, **args)
    common = ["run_id=out", "inputs.ingest=up", "inputs.train-recommender=up", "tasks.users_per_partition=100",
              "tasks.tasks=[t1,t3,t4,explain]", "tasks.explain_train=5", "tasks.explain_test=2"]
    manifests = [
        run_stage(recipe.STAGE, load_config(None, [f"store.root={root}", *extra, *common]), recipe.run)
        for root, extra in ((local, []), (s3, [f"store.endpoint_url={s3_endpoint}"]))
    ]
    digests = [{f["path"]: f["sha256"] for f in m["files"]} for m in manifests]
    assert digests[0] == digests[1] and any(p.startswith("interest/") for p in digests[0])
