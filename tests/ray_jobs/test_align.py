"""The align recipe end to end on a real local Ray: 2 workers with DeepSpeed ZeRO-2 for every form,
an injected worker failure, resume after re-submitting, and the checks before training."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import pytest
import torch

from ray_jobs import align as recipe
from ray_jobs import build_alignment_data as tasks_recipe
from recexp.config import load_config
from recexp.errors import DataError
from recexp.llm.export import load_aligned, read_manifest
from recexp.runner import run_stage
from recexp.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tasks"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "llm"))
import fakes  # noqa: E402
import llm_tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_cluster")


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Run ``up``: fake ingest + random SASRec + alignment data (t1, t3, t6); a tiny base model."""
    root = tmp_path_factory.mktemp("store")
    fakes.commit_upstream(str(root), "up", n_users=24, n_items=60)
    overrides = [f"store.root={root}", "run_id=up", "tasks.tasks=[t1,t3,t6]", "tasks.users_per_partition=12"]
    run_stage(tasks_recipe.STAGE, load_config(None, overrides), functools.partial(tasks_recipe.build, concurrency=2))
    llm_tiny.save_tiny_base(root / "base", llm_tiny.tiny_tokenizer())
    return str(root)


def overrides(root: str, run_id: str, *extra: str) -> list[str]:
    return [
        f"store.root={root}", f"run_id={run_id}", "inputs.ingest=up", "inputs.train-recommender=up",
        "inputs.build-alignment-data=up", f"align.model={root}/base", "align.num_workers=2", "align.max_rows=48",
        "align.max_length=1024", "align.micro_batch_size=2", "align.grad_accum=2", "align.lora_r=4", "align.lora_alpha=8",
        "align.lora_dropout=0.0", "align.lr=0.005", "align.warmup_steps=1", "align.log_every=1", *extra,
    ]


def align(root: str, run_id: str, *extra: str) -> dict:
    return run_stage(recipe.STAGE, load_config(None, overrides(root, run_id, *extra)), recipe.run)


def committed(root: str, run_id: str):
    return Store(root).committed(run_id, recipe.STAGE)


@pytest.fixture(scope="module")
def trained(store_root: str) -> dict[str, dict]:
    """One 4-step ZeRO-2 run per form (module scope: other tests reuse them)."""
    return {form: align(store_root, form, f"align.form={form}", "align.max_steps=4", "align.checkpoint_every=2")
            for form in ("behaviour", "intention", "hybrid")}


@pytest.mark.parametrize("form", ["behaviour", "intention", "hybrid"])
def test_two_deepspeed_workers_train_each_form_and_export(store_root: str, trained: dict, form: str) -> None:
    out = committed(store_root, form)
    metrics = out.read_json("metrics.json")
    assert metrics["steps"] == 4 and metrics["workers"] == 2 and metrics["strategy"] == "deepspeed"
    assert metrics["rows"] == 48 and set(metrics["rows_by_task"]) <= {"t1", "t3", "t6"}
    log = [json.loads(line) for line in out.open("train_log.jsonl", "r").read().splitlines()]
    assert [row["step"] for row in log] == [1, 2, 3, 4]
    assert all(row["tokens_per_s"] > 0 and 0 <= row["padding_fraction"] < 1 for row in log)
    assert out.open("loss.png").read(8) == b"\x89PNG\r\n\x1a\n"
    manifest = read_manifest(out.url("model"))
    assert manifest["form"] == form and manifest["recommender"]["run"] == "up"
    model, tokenizer = load_aligned(out.url("model"), attn_implementation="eager")
    assert model.mode == "input_add" and tokenizer.convert_tokens_to_ids("<user>") == model.slots.user_id
    assert _connectors_trained(store_root, form) == (form != "behaviour")  # behaviour: LoRA only


def _connectors_trained(root: str, form: str) -> bool:
    """Whether the exported connectors differ from a fresh model's seeded ones."""
    from recexp.llm.build import build_trainable

    out = committed(root, form)
    model, _ = load_aligned(out.url("model"), attn_implementation="eager")
    config = load_config(None, overrides(root, form, f"align.form={form}")).align
    spec = recipe.build_spec(config, read_manifest(out.url("model"))["recommender"]["uri"], None)
    init, _ = build_trainable(spec)
    return any(not torch.equal(a, b) for a, b in zip(model.connectors.state_dict().values(),
                                                     init.connectors.state_dict().values()))


def test_loss_goes_down_over_more_steps(store_root: str) -> None:
    align(store_root, "longer", "align.form=intention", "align.max_steps=12", "align.checkpoint_every=12", "align.lr=0.01")
    log = [json.loads(line) for line in committed(store_root, "longer").open("train_log.jsonl", "r").read().splitlines()]
    first, last = sum(r["loss"] for r in log[:3]) / 3, sum(r["loss"] for r in log[-3:]) / 3
    assert last < 0.9 * first


def test_worker_killed_mid_training_resumes_from_the_checkpoint(store_root: str, trained: dict, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    marker = tmp_path / "died"
    monkeypatch.setenv(recipe.FAILURE_ENV, f"3:1:{marker}")  # rank 1 dies at the start of step 3
    align(store_root, "killed", "align.form=intention", "align.max_steps=4", "align.checkpoint_every=2")
    assert marker.exists()
    metrics = committed(store_root, "killed").read_json("metrics.json")
    assert metrics["starts"] == [0, 2]  # restarted from the step-2 checkpoint
    straight = committed(store_root, "intention").read_json("metrics.json")
    assert metrics["final_loss"] == pytest.approx(straight["final_loss"], rel=1e-4)


def test_resubmitting_a_failed_run_resumes(store_root: str, trained: dict, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(recipe.FAILURE_ENV, f"3:0:{tmp_path / 'died'}")
    with pytest.raises(Exception):
        align(store_root, "resubmit", "align.form=intention", "align.max_steps=4", "align.checkpoint_every=2",
              "align.max_failures=0")
    assert not Store(store_root).is_committed("resubmit", recipe.STAGE)
    monkeypatch.delenv(recipe.FAILURE_ENV)
    align(store_root, "resubmit", "align.form=intention", "align.max_steps=4", "align.checkpoint_every=2", "align.max_failures=0")
    metrics = committed(store_root, "resubmit").read_json("metrics.json")
    assert metrics["starts"] == [0, 2]
    straight = committed(store_root, "intention").read_json("metrics.json")
    assert metrics["final_loss"] == pytest.approx(straight["final_loss"], rel=1e-4)


def test_a_changed_config_is_refused_unless_forced(store_root: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    run = ("align.form=intention", "align.max_steps=3", "align.checkpoint_every=1", "align.max_failures=0",
           "align.num_workers=1", "align.max_rows=16")
    monkeypatch.setenv(recipe.FAILURE_ENV, f"2:0:{tmp_path / 'died'}")
    with pytest.raises(Exception):
        align(store_root, "changed", *run)  # leaves the step-1 checkpoint behind
    monkeypatch.delenv(recipe.FAILURE_ENV)
    with pytest.raises(DataError, match="another configuration"):
        align(store_root, "changed", *run, "align.lr=0.001")
    align(store_root, "changed", *run, "align.lr=0.001", "force=true")
    assert committed(store_root, "changed").read_json("metrics.json")["starts"] == [0]  # started over


def test_a_base_model_too_narrow_for_the_slots_fails_before_training(store_root: str, tmp_path: Path) -> None:
    tokenizer = llm_tiny.tiny_tokenizer()
    narrow = llm_tiny.tiny_llama(len(tokenizer))
    narrow.resize_token_embeddings(len(tokenizer))
    config = narrow.config
    config.hidden_size, config.intermediate_size, config.num_attention_heads, config.num_key_value_heads = 16, 32, 2, 1
    type(narrow)(config).save_pretrained(tmp_path / "narrow")
    tokenizer.save_pretrained(tmp_path / "narrow")
    with pytest.raises(DataError, match=r"align.model=.*hidden size 16 is too small for 16-d"):
        align(store_root, "narrow", f"align.model={tmp_path / 'narrow'}")


def test_a_recommender_of_another_catalog_is_refused(store_root: str) -> None:
    fakes.commit_upstream(store_root, "other", n_users=10, n_items=55)
    with pytest.raises(DataError, match="does not fit this run's catalog"):
        align(store_root, "mixed", "inputs.train-recommender=other")


def test_an_example_longer_than_the_context_names_the_row(store_root: str) -> None:
    with pytest.raises(DataError, match=r"example \(task=t\d, form=intention, user_id=\d+.*more than max_length 64"):
        align(store_root, "short", "align.max_length=64")
