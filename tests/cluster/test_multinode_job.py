"""The pipeline as a Ray job on a real two-node Ray cluster, artifacts through the S3 server only.

Two ``ray start`` processes on 127.0.0.1 (a head and a worker that joins it, 1 CPU and a custom
resource each) form the cluster; the job goes in through ``JobSubmissionClient`` with the
repository as its ``working_dir`` (what ``ray job submit --working-dir .`` uploads) and runs
``python -m ray_jobs.pipeline`` (ingest -> train-recommender -> build-alignment-data -> align ->
evaluate, tiny sizes, generated data, a tiny config-built Llama as the base model) with
``store.root=s3://recexp/...`` on the moto server: every stage reads its upstream, and align its
base model, from object storage, whichever node it runs on.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from local_ray import LocalCluster, local_cluster
from ray.job_submission import JobStatus, JobSubmissionClient

from recexp.store import StageDir, Store, put_dir

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "llm"))
import llm_tiny  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
RUN = "multinode"
STAGES = ["ingest", "train-recommender", "build-alignment-data", "align", "evaluate"]
TINY = [
    "ray.num_cpus=2",  # ignored in a job: the driver joins the cluster (a local run would start a 2-CPU Ray)
    "data.synthetic_interactions=3000", "recommender.d=16", "recommender.max_len=12", "recommender.batch_size=64",
    "recommender.epochs=2", "recommender.topk=20", "recommender.inference_actors=1",
    "tasks.explain_train=20", "tasks.explain_test=5",
    # align: a tiny config-built Llama read from the S3 server, 2 steps of one DDP worker (1 CPU)
    "align.strategy=ddp", "align.max_rows=16", "align.max_steps=2", "align.micro_batch_size=2", "align.grad_accum=1",
    "align.max_length=1024", "align.lora_r=4", "align.lora_alpha=8", "align.checkpoint_every=2", "align.log_every=1",
    # evaluate: the aligned export (loaded back from S3) and popularity on 4 test rows of T1 and T3
    "evaluate.models=[aligned,popularity]", "evaluate.tasks=[t1,t3]", "evaluate.max_rows=4", "evaluate.batch_size=4",
    "evaluate.title_tokens=8", "evaluate.device=cpu",
]
AWS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION")
JOB_TIMEOUT_S = 1200.0  # a loaded 2-core machine; the job takes 1-2 minutes on an idle one

pytestmark = [pytest.mark.s3, pytest.mark.timeout(2400)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Head (1 CPU, ``head_node``) + worker (1 CPU, ``worker_node``); the venv's python first on PATH,
    as in a shell where the venv is active, so the job's ``python`` is the project's."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    with local_cluster([(1, {"head_node": 1}), (1, {"worker_node": 1})], env) as running:
        yield running


@pytest.fixture(scope="module")
def store_args(s3_endpoint: str) -> list[str]:
    return [f"store.root=s3://recexp/cluster-{uuid.uuid4().hex[:8]}", f"store.endpoint_url={s3_endpoint}"]


@pytest.fixture(scope="module")
def base_model(store_args: list[str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A tiny Llama + ChatML tokenizer uploaded to ``<store.root>/models/tiny``: its ``s3://`` URL."""
    local = llm_tiny.save_tiny_base(tmp_path_factory.mktemp("tiny-base"), llm_tiny.tiny_tokenizer())
    store = store_of(store_args)
    models = StageDir(store.fs, f"{store.base}/models", store.prefix)
    put_dir(str(local), models, "tiny")
    return models.url("tiny")


def submit(cluster: LocalCluster, entrypoint: str) -> tuple[str, str, str]:
    """Run ``entrypoint`` as a job with the repository as working_dir; ``(status, logs, job id)`` once it ends."""
    client = JobSubmissionClient(cluster.dashboard_url, headers=cluster.headers)
    runtime_env = {"working_dir": str(ROOT), "env_vars": {k: os.environ[k] for k in AWS}}
    submission = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env)
    deadline = time.time() + JOB_TIMEOUT_S
    try:
        while (status := client.get_job_status(submission)) not in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            if time.time() > deadline:
                client.stop_job(submission)
                pytest.fail(f"job still {status} after {JOB_TIMEOUT_S}s:\n{client.get_job_logs(submission)[-5000:]}")
            time.sleep(1.0)
        return str(status), client.get_job_logs(submission), client.get_job_info(submission).job_id
    except requests.ConnectionError:
        pytest.fail(f"the cluster's job API went away during the job; Ray's logs:\n{cluster.logs()}")


def pipeline(cluster: LocalCluster, store_args: list[str], *extra: str) -> tuple[str, str, str]:
    args = [f"run_id={RUN}", *store_args, f"pipeline.stages=[{','.join(STAGES)}]", *TINY, *extra]
    return submit(cluster, "python -m ray_jobs.pipeline " + " ".join(args))


def store_of(store_args: list[str]) -> Store:
    root, endpoint = (a.split("=", 1)[1] for a in store_args)
    return Store(root, endpoint_url=endpoint)


@pytest.fixture(scope="module")
def first_run(cluster: LocalCluster, store_args: list[str], base_model: str) -> dict:
    status, logs, job_id = pipeline(cluster, store_args, f"align.model={base_model}")
    assert status == "SUCCEEDED", logs[-5000:]
    store = store_of(store_args)
    return {"logs": logs, "job_id": job_id, "manifests": {s: store.manifest(RUN, s) for s in STAGES}}


def test_pipeline_job_commits_every_stage_to_s3(first_run: dict, store_args: list[str], base_model: str) -> None:
    store, manifests, logs = store_of(store_args), first_run["manifests"], first_run["logs"]
    root = store_args[0].split("=", 1)[1]
    for stage in STAGES:
        manifest = manifests[stage]
        assert manifest is not None, f"{stage} not committed"
        assert f"{stage}: committed {len(manifest['files'])} files to {root}/runs/{RUN}/{stage}" in logs
        assert manifest["config"]["store"]["root"] == root
    assert manifests["train-recommender"]["upstream"] == {"ingest": RUN}
    assert manifests["build-alignment-data"]["upstream"] == {"ingest": RUN, "train-recommender": RUN}

    ingest = store.committed(RUN, "ingest")
    stats = ingest.read_json("stats.json")
    assert manifests["ingest"]["summary"]["num_users"] == stats["num_users"] > 50
    assert ingest.read_table("sequences.parquet").num_rows == stats["num_users"]
    assert ingest.read_table("items.parquet").num_rows == stats["num_items"]
    assert stats["input"]["interaction_rows"] == 3000  # data.synthetic_interactions, generated into the store

    train = store.committed(RUN, "train-recommender")
    metrics = train.read_json("metrics.json")
    assert 0.0 <= metrics["test/full/ndcg@10"] <= metrics["test/full/hr@10"] <= 1.0
    topk = train.read_table("topk.parquet")
    assert set(topk["user_id"].to_pylist()) == set(range(stats["num_users"]))
    assert {len(ids) for ids in topk["item_ids"].to_pylist()} == {20}  # recommender.topk
    assert any(f.startswith("encoder/") and f.endswith(".safetensors") for f in train.files())

    tasks = store.committed(RUN, "build-alignment-data")
    counts = tasks.read_json("counts.json")
    assert manifests["build-alignment-data"]["summary"]["rows"] == sum(counts.values())
    assert counts["explain/train/intention"] == 20 and counts["explain/test/intention"] == 5
    assert tasks.read_table("catalog.parquet").num_rows == stats["num_items"]

    align = store.committed(RUN, "align")
    trained = align.read_json("metrics.json")
    assert (trained["steps"], trained["workers"], trained["strategy"], trained["rows"]) == (2, 1, "ddp", 16)
    export = align.read_json("model/recexp.json")
    assert export["base_model"] == base_model  # read from the S3 server, not a local path
    assert export["recommender"]["uri"] == f"{root}/runs/{RUN}/train-recommender/encoder"
    assert manifests["align"]["upstream"] == {"ingest": RUN, "train-recommender": RUN, "build-alignment-data": RUN}

    scores = store.committed(RUN, "evaluate").read_json("metrics.json")
    assert {scores[f"{m}/{t}/rows"] for m in ("aligned", "popularity") for t in ("t1", "t3")} == {4.0}
    assert 0.0 <= scores["aligned/t3/acc"] <= 1.0 and 0.0 <= scores["aligned/t1/hr@5"] <= 1.0
    assert manifests["evaluate"]["upstream"] == {"align": RUN, "build-alignment-data": RUN, "ingest": RUN}


def test_the_cluster_has_two_nodes_and_the_job_used_both(cluster: LocalCluster, first_run: dict) -> None:
    nodes = {n["node_id"]: n for n in cluster.alive_nodes()}
    assert sorted(n["resources_total"]["CPU"] for n in nodes.values()) == [1.0, 1.0]
    assert sorted(r for n in nodes.values() for r in n["resources_total"] if r.endswith("_node")) == ["head_node", "worker_node"]
    job = first_run["job_id"]
    used = set()
    for kind in ("tasks", "actors"):
        rows = cluster.get(f"/api/v0/{kind}?limit=10000&filter_keys=job_id&filter_predicates=%3D&filter_values={job}")
        used |= {row["node_id"] for row in rows["data"]["result"]["result"] if row.get("node_id")}
    assert used == set(nodes), "the job's tasks and actors ran on both nodes (1 CPU each: the stages need two)"


def test_resubmitting_the_run_skips_committed_stages(cluster: LocalCluster, store_args: list[str], base_model: str,
                                                     first_run: dict) -> None:
    status, logs, _ = pipeline(cluster, store_args, f"align.model={base_model}")
    assert status == "SUCCEEDED", logs[-5000:]
    root = store_args[0].split("=", 1)[1]
    for stage in STAGES:
        assert f"{stage}: already committed at {root}/runs/{RUN}/{stage}; skipping" in logs
    store = store_of(store_args)
    assert {s: store.manifest(RUN, s) for s in STAGES} == first_run["manifests"]  # nothing re-run or rewritten


def test_working_dir_upload_leaves_out_venv_artifacts_and_git(cluster: LocalCluster) -> None:
    status, logs, _ = submit(cluster, "python -c \"import json, os; print('LISTING', json.dumps(sorted(os.listdir('.'))))\"")
    assert status == "SUCCEEDED", logs
    listing = set(json.loads(logs.split("LISTING ", 1)[1].splitlines()[0]))
    assert {"recexp", "ray_jobs", "configs", "cluster", "pyproject.toml"} <= listing
    assert not listing & {".venv", "artifacts", ".git", ".cache"}, listing


def test_a_bad_key_fails_the_job_with_one_clear_line(cluster: LocalCluster, store_args: list[str]) -> None:
    status, logs, _ = submit(cluster, f"python -m ray_jobs.pipeline run_id={RUN}-bad {' '.join(store_args)} ingest.kcore=3")
    assert status == "FAILED"
    assert "error: unknown key 'ingest.kcore' (from command line); known keys here:" in logs
    assert "Traceback" not in logs
