"""The explain recipe end to end on a real local Ray: values, kill-and-resume, reuse, bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import fakes
import llm_tiny
from explain_tiny import lively
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray
import torch

import recexp.recommender as rec
from ray_jobs import explain as recipe
from recexp.config import load_config
from recexp.errors import DataError, RecexpError
from recexp.explain.batch import OUTPUT_SCHEMA, Explainer, ExplainSettings, prompt_hash
from recexp.explain.partials import Partials
from recexp.explain.requests import read_last_topk, topk_requests
from recexp.llm.aligned import AlignedLM
from recexp.llm.connectors import Connectors
from recexp.llm.export import save_aligned
from recexp.llm.lora import LoraSettings, apply_lora
from recexp.llm.slots import add_slot_tokens
from recexp.store import Store, put_dir
from recexp.tasks.catalog import build_catalog, catalog_table
from recexp.tasks.templates import load_templates

pytestmark = pytest.mark.usefixtures("_model_cache", "ray_cluster")
ROOT = Path(__file__).resolve().parents[2]
N_USERS, N_ITEMS, K, PART = 10, 40, 3, 4
"""10 users x top-3 = 30 requests in 8 partitions of 4 (the last one holds 2)."""


@pytest.fixture(scope="module")
def _model_cache(tmp_path_factory: pytest.TempPathFactory):
    """Model copies from the store go to a temporary cache (set before Ray starts its workers)."""
    old = os.environ.get("RECEXP_CACHE")
    os.environ["RECEXP_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("RECEXP_CACHE")
    else:
        os.environ["RECEXP_CACHE"] = old


def aligned_model(tmp: Path, encoder: rec.Recommender) -> tuple[AlignedLM, object, Path]:
    """A tiny LoRA-wrapped aligned model (as the align stage would save it) and its base checkpoint."""
    tokenizer = llm_tiny.tiny_tokenizer()
    base = lively(llm_tiny.tiny_llama(len(tokenizer)))
    base_dir = tmp / "base"
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    slots = add_slot_tokens(base, tokenizer, llm_tiny.REC_DIM)
    torch.manual_seed(1)
    connectors = Connectors(llm_tiny.REC_DIM, base.config.hidden_size)
    base = apply_lora(base, LoraSettings(r=4, alpha=8, dropout=0.0), slots.ids)
    return AlignedLM(base, encoder, connectors, slots, "input_add").eval(), tokenizer, base_dir


def commit_align(store: Store, run_id: str, model: AlignedLM, tokenizer, base_dir: Path, tmp: Path) -> None:
    encoder_url = store.committed("up", "train-recommender").url("encoder")
    local = save_aligned(model, tokenizer, tmp / f"export-{run_id}", base_model=str(base_dir),
                         recommender_uri=encoder_url, form="hybrid")
    fakes.commit_stage(store, run_id, "align", lambda staging: put_dir(str(local), staging, "model"))


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Committed ingest, train-recommender, build-alignment-data (catalog) and align in run ``up``."""
    tmp = tmp_path_factory.mktemp("explain")
    root = str(tmp / "store")
    sequences, items = fakes.commit_upstream(root, "up", n_users=N_USERS, n_items=N_ITEMS, k=10, max_seq=8)
    store = Store(root)
    catalog = build_catalog(items)
    fakes.commit_stage(store, "up", "build-alignment-data", lambda s: s.write_table("catalog.parquet", catalog_table(catalog)))
    encoder = rec.load(store.committed("up", "train-recommender").url("encoder"))
    model, tokenizer, base_dir = aligned_model(tmp, encoder)
    commit_align(store, "up", model, tokenizer, base_dir, tmp)
    return {"root": root, "tmp": tmp, "store": store, "sequences": sequences, "catalog": catalog,
            "model": model, "tokenizer": tokenizer}


def overrides(upstream: dict, run_id: str, *extra: str) -> list[str]:
    inputs = [f"inputs.{stage}=up" for stage in ("ingest", "train-recommender", "build-alignment-data", "align")]
    return [f"store.root={upstream['root']}", f"run_id={run_id}", *inputs, f"explain.k={K}",
            f"explain.partition_size={PART}", "explain.batch_size=3", "explain.max_new_tokens=6", "tasks.max_hist=3",
            *extra]


def run(upstream: dict, run_id: str, *extra: str) -> dict:
    return recipe.execute(load_config(None, overrides(upstream, run_id, *extra)))


def output(upstream: dict, run_id: str) -> pa.Table:
    table = upstream["store"].committed(run_id, recipe.STAGE).read_table(recipe.OUT_DIR)
    return table.sort_by([("user_id", "ascending"), ("rank", "ascending")])


def expected_requests(upstream: dict, k: int = K) -> pa.Table:
    recommender = upstream["store"].committed("up", "train-recommender")
    return topk_requests(upstream["sequences"], read_last_topk(recommender, "topk.parquet", k), k)


@pytest.fixture(scope="module")
def first(upstream: dict) -> dict:
    return run(upstream, "first")


def test_topk_run_has_the_right_values(upstream: dict, first: dict) -> None:
    table = output(upstream, "first")
    requests = expected_requests(upstream)
    assert table.schema.equals(OUTPUT_SCHEMA) and table.num_rows == N_USERS * K
    for name in ("user_id", "item_id", "rank", "rec_score", "position"):
        assert table[name].to_pylist() == requests[name].to_pylist(), name
    lengths = [len(s) for s in upstream["sequences"]["item_ids"].to_pylist()]
    assert table["position"].to_pylist() == [n - 1 for n in lengths for _ in range(K)]  # last exported position
    settings = ExplainSettings("hybrid", 0, 3, 3, 6, 2048, "-", "up", "first")
    explainer = Explainer(upstream["model"], upstream["tokenizer"], upstream["catalog"], load_templates(), settings)
    want, _ = explainer.explain(requests)  # the same model in this process, never saved or loaded
    for name in ("answer", "explanation", "prompt_hash", "new_tokens"):
        assert table[name].to_pylist() == want[name].to_pylist(), name
    assert np.allclose(table["answer_margin"].to_numpy(), want["answer_margin"].to_numpy(), atol=1e-4)
    assert set(table["answer"].to_pylist()) <= {"yes", "no"} and set(table["run_id"].to_pylist()) == {"first"}
    assert set(table["adapter_id"].to_pylist()) == {first["summary"]["adapter_id"]}
    summary = first["summary"]
    assert (summary["requests"], summary["generated"], summary["reused"], summary["form"]) == (30, 30, 0, "hybrid")
    assert summary["new_tokens"] == sum(table["new_tokens"].to_pylist())
    files = upstream["store"].committed("first", recipe.STAGE).files()
    assert sorted(f for f in files if f.startswith("explanations/")) == [
        f"explanations/part-{i:05d}.parquet" for i in range(8)]
    assert not Partials.root(upstream["store"], "first", recipe.STAGE).dir.files()  # cleaned after the commit


def test_kill_and_resume_gives_each_pair_once(upstream: dict, first: dict) -> None:
    env = {**os.environ, recipe.KILL_ENV: "3"}
    args = overrides(upstream, "killed", f"ray.address={ray.get_runtime_context().gcs_address}")
    proc = subprocess.run([sys.executable, "-m", "ray_jobs.explain", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]
    store = upstream["store"]
    assert not store.is_committed("killed", recipe.STAGE)
    survived = [f for f in Partials.root(store, "killed", recipe.STAGE).dir.files() if f.endswith(".parquet")]
    assert 3 <= len(survived) < 8  # killed midway: some partitions done, some not
    resumed = run(upstream, "killed")["summary"]
    done = resumed["resumed_partitions"]  # the killed job's actors may have finished one more since
    assert len(survived) <= done < 8
    assert 30 - PART * done <= resumed["generated"] <= 30 - PART * done + 2  # only the missing ones
    table, clean = output(upstream, "killed"), output(upstream, "first")
    keys = list(zip(table["user_id"].to_pylist(), table["item_id"].to_pylist()))
    assert len(keys) == len(set(keys)) == 30 and keys == list(zip(clean["user_id"].to_pylist(), clean["item_id"].to_pylist()))
    assert table["explanation"].to_pylist() == clean["explanation"].to_pylist()


def test_reuse_skips_existing_rows_unless_forced(upstream: dict, first: dict) -> None:
    store = upstream["store"]
    foreign = output(upstream, "first").slice(0, 6)
    foreign = foreign.set_column(foreign.schema.get_field_index("adapter_id"), "adapter_id", pa.array(["other"] * 6))
    fakes.commit_stage(store, "foreign", recipe.STAGE, lambda s: s.write_table("explanations/part-00000.parquet", foreign))
    summary = run(upstream, "second", "explain.k=4", "explain.reuse_runs=[foreign,first]")["summary"]
    assert (summary["requests"], summary["reused"], summary["generated"]) == (40, 30, 10)
    table, old = output(upstream, "second"), output(upstream, "first")
    reused = table.filter(pc.equal(table["run_id"], "first")).sort_by([("user_id", "ascending"), ("rank", "ascending")])
    assert reused.equals(old)  # copied as they were, created_at and run ids included
    assert table.num_rows == 40 and sorted(set(table["rank"].to_pylist())) == [1, 2, 3, 4]
    assert set(table.filter(pc.equal(table["rank"], 4))["run_id"].to_pylist()) == {"second"}
    forced = run(upstream, "second", "explain.k=4", "explain.reuse_runs=[first]", "force=true")["summary"]
    assert (forced["reused"], forced["generated"]) == (0, 40)
    assert set(output(upstream, "second")["run_id"].to_pylist()) == {"second"}


def test_reuse_needs_the_same_prompt(upstream: dict, first: dict) -> None:
    """Rows made from another prompt (here: two turns, while this run explains in one pass) are
    regenerated; the answers come from the same first forward, the explanations do not."""
    summary = run(upstream, "onepass", "explain.follow_up=false", "explain.reuse_runs=[first]")["summary"]
    assert (summary["reused"], summary["generated"]) == (0, 30)
    table, old = output(upstream, "onepass"), output(upstream, "first")
    assert set(table["run_id"].to_pylist()) == {"onepass"}
    assert not set(table["prompt_hash"].to_pylist()) & set(old["prompt_hash"].to_pylist())
    assert table["answer"].to_pylist() == old["answer"].to_pylist()
    assert np.allclose(table["answer_margin"].to_numpy(), old["answer_margin"].to_numpy(), atol=1e-3)
    assert table["explanation"].to_pylist() != old["explanation"].to_pylist()
    settings = ExplainSettings("hybrid", 0, 3, 3, 6, 2048, "-", "up", "onepass", follow_up=False)
    explainer = Explainer(upstream["model"], upstream["tokenizer"], upstream["catalog"], load_templates(), settings)
    want, _ = explainer.explain(expected_requests(upstream))
    for name in ("answer", "explanation", "prompt_hash"):
        assert table[name].to_pylist() == want[name].to_pylist(), name
    assert table["prompt_hash"].to_pylist() == [prompt_hash(row) for row in explainer.prompts(expected_requests(upstream))]
    again = run(upstream, "onepass2", "explain.follow_up=false", "explain.reuse_runs=[first,onepass]")["summary"]
    assert (again["reused"], again["generated"]) == (30, 0)  # the same prompt: copied


def test_explicit_pairs(upstream: dict, first: dict) -> None:
    pairs = upstream["tmp"] / "pairs.csv"
    pairs.write_text("user_id,item_id\n3,5\n1,20\n3,5\n1,0\n")
    summary = run(upstream, "pairs", f"explain.pairs={pairs}")["summary"]
    assert (summary["requests"], summary["repeated_pairs"], summary["generated"]) == (3, 1, 3)
    table = output(upstream, "pairs").sort_by([("user_id", "ascending"), ("item_id", "ascending")])
    assert list(zip(table["user_id"].to_pylist(), table["item_id"].to_pylist())) == [(1, 0), (1, 20), (3, 5)]
    encoder = upstream["model"].recommender
    for row in table.to_pylist():
        history = upstream["sequences"]["item_ids"][row["user_id"]].as_py()
        assert row["position"] == len(history)
        padded = torch.tensor([history[-encoder.max_len:]])
        with torch.no_grad():
            scores = encoder.full_scores(padded)[0]
        assert row["rec_score"] == pytest.approx(float(scores[row["item_id"]]), abs=1e-5)
        outside = [i for i in range(N_ITEMS) if i not in history]
        assert row["rank"] == 1 + sum(float(scores[i]) > row["rec_score"] for i in outside)


@pytest.mark.parametrize(
    ("extra", "error", "message"),
    [
        (("explain.users=[1,99]",), DataError, "no top-k list for user 99"),
        (("explain.pairs={tmp}/bad.csv",), DataError, "bad.csv line 3: item_id 'x' is not an integer"),
        (("explain.pairs={tmp}/unknown.csv",), DataError, "unknown.csv line 2: unknown user_id 77"),
        (("explain.pairs={tmp}/range.csv",), DataError, "range.csv line 2: item_id 40 not in 0..39"),
        (("explain.pairs={tmp}/cols.csv",), DataError, "has no column 'item_id'"),
        (("explain.pairs={tmp}/missing.csv",), DataError, "file not found"),
        (("inputs.align=nowhere",), RecexpError, "stage 'align' of run 'nowhere' is not committed"),
    ],
)
def test_bad_input_is_one_clear_error(upstream: dict, extra, error, message) -> None:
    tmp = upstream["tmp"]
    (tmp / "bad.csv").write_text("user_id,item_id\n1,2\n1,x\n")
    (tmp / "unknown.csv").write_text("user_id,item_id\n77,2\n")
    (tmp / "range.csv").write_text("user_id,item_id\n1,40\n")
    (tmp / "cols.csv").write_text("user_id,item\n1,2\n")
    with pytest.raises(error, match=message):
        run(upstream, "bad", *(e.format(tmp=tmp) for e in extra))
    assert not upstream["store"].is_committed("bad", recipe.STAGE)


@pytest.mark.s3
def test_runs_on_object_storage(upstream: dict, s3_endpoint: str, tmp_path: Path) -> None:
    """The whole chain on the loopback S3 server: upstream stages, partial files, commit."""
    root = "s3://recexp/explain-test"
    sequences, items = fakes.commit_upstream(root, "up", n_users=N_USERS, n_items=N_ITEMS, k=10, max_seq=8,
                                             endpoint_url=s3_endpoint)
    store = Store(root, s3_endpoint)
    fakes.commit_stage(store, "up", "build-alignment-data",
                       lambda s: s.write_table("catalog.parquet", catalog_table(build_catalog(items))))
    model, tokenizer, base_dir = aligned_model(tmp_path, rec.load(store.committed("up", "train-recommender").url("encoder"),
                                                                  endpoint_url=s3_endpoint))
    commit_align(store, "up", model, tokenizer, base_dir, tmp_path)
    args = [a for a in overrides(upstream, "s3run") if not a.startswith("store.root")]
    cfg = load_config(None, [f"store.root={root}", f"store.endpoint_url={s3_endpoint}", *args, "explain.users=[0,1,2]"])
    summary = recipe.execute(cfg)["summary"]
    assert (summary["requests"], summary["generated"]) == (9, 9)
    table = store.committed("s3run", recipe.STAGE).read_table(recipe.OUT_DIR)
    assert sorted(set(table["user_id"].to_pylist())) == [0, 1, 2] and table.num_rows == 9
    assert not Partials.root(store, "s3run", recipe.STAGE).dir.files()
