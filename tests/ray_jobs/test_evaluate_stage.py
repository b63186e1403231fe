"""The evaluate recipe end to end: real upstream stages (fake ingest + recommender, the real
build-alignment-data recipe on Ray), a faked align stage holding a tiny aligned model export,
then every model and baseline on the same test examples."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pyarrow as pa
import pytest
import torch

from ray_jobs import build_alignment_data
from ray_jobs import evaluate as recipe
from recexp.config import load_config
from recexp.llm.build import BuildSpec, build_trainable
from recexp.llm.export import save_aligned
from recexp.llm.lora import LoraSettings
from recexp.runner import run_stage
from recexp.store import Store, put_dir

TESTS = Path(__file__).resolve().parents[1]
for helper_dir in ("tasks", "llm"):
    sys.path.insert(0, str(TESTS / helper_dir))
import fakes  # noqa: E402
import llm_tiny  # noqa: E402

pytestmark = pytest.mark.usefixtures("ray_cluster")
LORA = LoraSettings(r=4, alpha=8, dropout=0.0)
ALL_TASKS = {"t1", "t2", "t3", "t6", "item-recovery"}
SMALL = ["evaluate.max_rows=3", "evaluate.batch_size=4", "evaluate.title_tokens=6", "evaluate.list_tokens=12",
         "evaluate.max_length=4096",
         "evaluate.device=cpu"]


def commit_align(store: Store, run_id: str, work: Path) -> None:
    """A tiny aligned export (LoRA moved away from its no-op init) committed as ``align/model``."""
    base_dir = llm_tiny.save_tiny_base(work / "base", llm_tiny.tiny_tokenizer())
    encoder = store.committed(run_id, "train-recommender").url("encoder")
    spec = BuildSpec(base_uri=str(base_dir), recommender_uri=encoder, form="intention", lora=LORA, seed=0)
    model, tokenizer = build_trainable(spec)
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.2)
    staging = store.begin(run_id, "align")
    with tempfile.TemporaryDirectory() as local:
        save_aligned(model.eval(), tokenizer, local, base_model=str(base_dir), recommender_uri=encoder,
                     form="intention", extra={"lora": LORA.to_dict()})
        put_dir(local, staging, "model")
    store.commit(staging, run_id, "align", {"fake": True})


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Committed ingest, train-recommender, build-alignment-data and align in run ``up``."""
    root = str(tmp_path_factory.mktemp("store"))
    fakes.commit_upstream(root, "up", n_users=12, n_items=80, max_seq=10)
    overrides = [f"store.root={root}", "run_id=up", "tasks.tasks=[t1,t2,t3,t4,t6]",
                 "tasks.forms=[behaviour,intention]", "tasks.t3_test_fraction=1.0"]
    run_stage(build_alignment_data.STAGE, load_config(None, overrides), build_alignment_data.run)
    commit_align(Store(root), "up", tmp_path_factory.mktemp("align"))
    return root


@pytest.fixture(scope="module")
def evaluated(upstream: str) -> dict:
    return run_stage(recipe.STAGE, load_config(None, [f"store.root={upstream}", "run_id=up", *SMALL]), recipe.run)


def test_every_model_and_task_is_scored(upstream: str, evaluated: dict) -> None:
    out = Store(upstream).committed("up", recipe.STAGE)
    metrics = out.read_json("metrics.json")
    tasks_of = {}
    for key in metrics:
        model, task, _ = key.split("/")
        tasks_of.setdefault(model, set()).add(task)
    assert tasks_of == {
        "aligned": ALL_TASKS, "unaligned": ALL_TASKS, "popularity": ALL_TASKS, "random": ALL_TASKS,
        "base": {"t1", "t2", "t3"}, "base-icl": {"t1", "t2", "t3"},  # T6 and T4 iid2title have no behaviour form
    }
    for key, value in metrics.items():
        if key.endswith("/rows"):  # 3 examples, minus any prompt too long for the context
            assert value + metrics.get(key.replace("/rows", "/skipped"), 0) == 3, key
        elif not key.endswith("/skipped"):
            assert 0.0 <= value <= 1.0, key
    assert evaluated["summary"]["form"] == "intention"
    assert evaluated["summary"]["rows"]["intention"] == dict.fromkeys(ALL_TASKS, 3)


def test_models_answer_the_same_examples(upstream: str, evaluated: dict) -> None:
    samples = Store(upstream).committed("up", recipe.STAGE).read_json("samples.json")
    examples = {}
    for s in samples:
        examples.setdefault((s["model"], s["task"]), set()).add((s["user_id"], s["position"], s["expected"]))
    for task in ("t1", "t2", "t3"):
        assert len(examples[("aligned", task)]) == 3
        for model in ("unaligned", "base", "base-icl", "popularity", "random"):
            assert examples[(model, task)] == examples[("aligned", task)], (model, task)
    forms = {(s["model"], s["form"]) for s in samples}
    assert ("aligned", "intention") in forms and ("base", "behaviour") in forms and ("base-icl", "behaviour") in forms
    icl = [s for s in samples if s["model"] == "base-icl"]
    assert all(len(s["answers"]) == (5 if s["task"] == "t1" else 1) for s in icl)


def test_report_files(upstream: str, evaluated: dict) -> None:
    out = Store(upstream).committed("up", recipe.STAGE)
    table = out.open("table.md", "r").read()
    for model in ("aligned", "unaligned", "base", "base-icl", "popularity", "random"):
        assert f"| {model} |" in table
    assert "t1 hr@5" in table and "item-recovery acc" in table
    assert out.open("metrics.png").read()[:4] == b"\x89PNG"
    assert not out.exists("comparison.md")


def test_cli_compares_runs_and_reports_missing_stages(upstream: str, capsys: pytest.CaptureFixture) -> None:
    common = [f"store.root={upstream}", "inputs.align=up", "inputs.build-alignment-data=up", "inputs.ingest=up", *SMALL]
    code = recipe.main(["run_id=cmp", "evaluate.models=[popularity,random]", "evaluate.compare=[up]", *common])
    assert code == 0
    out = Store(upstream).committed("cmp", recipe.STAGE)
    comparison = out.open("comparison.md", "r").read()
    assert "| model | metric | up | cmp |" in comparison
    up = json.loads(Store(upstream).committed("up", recipe.STAGE).open("metrics.json", "r").read())
    assert f"| popularity | t3 acc | {up['popularity/t3/acc']:.4f} | {up['popularity/t3/acc']:.4f} |" in comparison
    assert "| aligned | t3 acc |" in comparison and set(out.read_json("metrics.json")) < set(up)
    assert recipe.main([f"store.root={upstream}", "run_id=nothing-here", *SMALL]) == 2
    assert "align" in capsys.readouterr().err


def test_explanation_quality_of_a_committed_explain_stage(upstream: str) -> None:
    """Four explanations, two the same text, two naming an item of the user's shown history."""
    store = Store(upstream)
    sequences = store.committed("up", "ingest").read_table("sequences.parquet").to_pylist()
    titles = store.committed("up", "build-alignment-data").read_table("catalog.parquet")["title"].to_pylist()
    cited = {s["user_id"]: [i for i in s["item_ids"][:-1][-9:] if i >= 31] for s in sequences}  # plain titles
    plain = [s for s in sequences if cited[s["user_id"]]][:2]
    rows = [{"user_id": s["user_id"], "item_id": s["item_ids"][-1], "position": len(s["item_ids"]) - 1,
             "explanation": f"Because of {titles[cited[s['user_id']][0]]}, a good pick."} for s in plain]
    rows += [{"user_id": u, "item_id": 0, "position": 2, "explanation": "A fine game for anyone."} for u in (0, 1)]
    staging = store.begin("up", "explain")
    staging.write_table("explanations/part-00000.parquet", pa.Table.from_pylist(rows))
    store.commit(staging, "up", "explain", {"config": {"tasks": {"max_hist": 9}}})
    args = [f"store.root={upstream}", "run_id=quality", "inputs.align=up", "inputs.build-alignment-data=up",
            "inputs.ingest=up", "inputs.explain=up", "evaluate.explanations=true", "evaluate.models=[popularity]",
            "evaluate.tasks=[t3]", *SMALL, "evaluate.max_rows=10"]
    assert recipe.main(args) == 0
    metrics = store.committed("quality", recipe.STAGE).read_json("metrics.json")
    quality = {k.split("/")[2]: v for k, v in metrics.items() if k.startswith("aligned/explanations/")}
    assert quality["rows"] == 4 and quality["usr"] == 0.75  # 3 distinct texts of 4
    assert quality["cite_rate"] == 0.5 and quality["words_min"] == 5
    assert 0.0 <= quality["precision"] <= 1.0 and 0.0 <= quality.get("recall", 0.0) <= 1.0
    assert set(metrics) - {k for k in metrics if k.startswith("aligned/")} == {"popularity/t3/acc", "popularity/t3/auc",
                                                                                "popularity/t3/rows"}
