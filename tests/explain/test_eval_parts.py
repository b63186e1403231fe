"""Baselines, evaluation-row selection and few-shot prompts, and the report, on hand-made cases."""

from __future__ import annotations

import json

import eval_fixtures as ef
import numpy as np
import pyarrow as pa
import pytest

from recexp.config import EvaluateConfig
from recexp.explain import report
from recexp.explain.baselines import popularity_order, predict_baseline, predict_from_order, random_order
from recexp.explain.eval_rows import TASKS, few_shot_rows, read_rows, select, with_shots
from recexp.explain.evaluate import evaluate_baseline
from recexp.store import Store
from recexp.tasks.rows import ROW_SCHEMA

COUNTS = np.array([5, 9, 1, 7, 3, 0, 2, 8])  # popularity order: 1, 7, 3, 0, 4, 6, 2, 5
SEQUENCES = {0: np.array([1, 3, 2, 6]), 4: np.array([7, 0, 5])}


def test_popularity_predictions_hand_computed() -> None:
    order = popularity_order(COUNTS)(None)
    assert order.tolist() == [1, 7, 3, 0, 4, 6, 2, 5]
    t1 = ef.row("t1", "uid2next", "q", "a", user_id=0, position=2, item_id=7)  # seen before t=2: items 1, 3
    assert predict_from_order("retrieval", t1, order, SEQUENCES, 5) == [[7], [0], [4], [6], [2]]
    t2 = ef.row("t2", "uidiid2rank", "q", "a", shown=[2, 3, 0], ranked=[3, 0, 2])
    assert predict_from_order("ranking", t2, order, SEQUENCES, 5) == [3, 0, 2]
    yes = ef.row("t3", "uidiid2binary", "q", "Yes", item_id=0)  # place 3 of 8: first half
    no = ef.row("t3", "uidiid2binary", "q", "No", item_id=4)  # place 4 of 8: second half
    assert predict_from_order("binary", yes, order, SEQUENCES, 5) == (1.0, 0.0)
    assert predict_from_order("binary", no, order, SEQUENCES, 5) == (0.0, 1.0)
    t6 = ef.row("t6", "uid2hist", "q", "a", shown=[0, 2, 6])
    assert predict_from_order("history", t6, order, SEQUENCES, 5) == [1, 7, 3]
    item = ef.row("t4", "iid2title", "q", "a", user_id=-1, position=-1, item_id=5)
    assert predict_from_order("item", item, order, SEQUENCES, 5) == [1]
    t7 = ef.row("t7", "uid2added", "q", "a", user_id=4, position=2, item_id=5)  # seen: 7, 0
    assert predict_from_order("item", t7, order, SEQUENCES, 5) == [1]
    with pytest.raises(ValueError, match="kind"):
        predict_from_order("poem", t6, order, SEQUENCES, 5)


def test_popularity_baseline_metrics() -> None:
    rows = {"t3": [ef.row("t3", "uidiid2binary", "q", "Yes", item_id=0), ef.row("t3", "uidiid2binary", "q", "Yes", item_id=4)],
            "t6": [ef.row("t6", "uid2hist", "q", "a", shown=[1, 2, 6])]}
    result = evaluate_baseline("popularity", popularity_order(COUNTS), rows, SEQUENCES, EvaluateConfig())
    assert result.metrics == {
        "popularity/t3/acc": 0.5, "popularity/t3/auc": 0.5, "popularity/t3/rows": 2.0,
        "popularity/t6/hcr": pytest.approx(1 / 3), "popularity/t6/rows": 1.0,  # predicts 1, 7, 3
    }


def test_random_baseline_is_seeded_and_valid() -> None:
    rows = [ef.row("t1", "uid2next", "q", "a", user_id=0, position=4, item_id=7)] * 50
    first = predict_baseline("retrieval", rows, random_order(8, seed=3), SEQUENCES, 3)
    again = predict_baseline("retrieval", rows, random_order(8, seed=3), SEQUENCES, 3)
    assert first == again and len({tuple(map(tuple, p)) for p in first}) > 1
    for prediction in first:
        items = [ids[0] for ids in prediction]
        assert len(items) == 3 == len(set(items)) and not set(items) & {1, 3, 2, 6}
    coins = predict_baseline("binary", [ef.row("t3", "uidiid2binary", "q", "Yes", item_id=2)] * 400,
                             random_order(8, seed=0), SEQUENCES)
    assert 0.4 < np.mean([y for y, _ in coins]) < 0.6


def test_selection_picks_the_same_examples_in_every_form() -> None:
    behaviour = [ef.row("t1", "uid2next", f"titles {u}", "x", user_id=u, item_id=u) for u in range(20)]
    intention = [ef.row("t1", "uid2next", f"<user> {u}", "x", user_id=u, item_id=u, form="intention") for u in range(20)]
    picked_b = select(behaviour, 5, seed=1)
    picked_i = select(list(reversed(intention)), 5, seed=1)
    assert [r["user_id"] for r in picked_b] == [r["user_id"] for r in picked_i]
    assert [r["user_id"] for r in select(behaviour, 5, seed=2)] != [r["user_id"] for r in picked_b]
    assert len(select(behaviour, 0, seed=1)) == 20


def test_with_shots_builds_a_multi_turn_chat() -> None:
    shot_a = ef.row("t3", "uidiid2binary", "Will A like B?", "Yes", user_id=1, item_id=1)
    shot_b = ef.row("t3", "uidiid2binary", "Will C like D?", "No", user_id=2, item_id=2)
    shot_b["history_ids"], shot_b["item_slot_ids"] = [[4, 5]], [6]
    target = ef.row("t3", "uidiid2binary", "Will E like F?", "Yes", user_id=3, item_id=3)
    chat = with_shots(target, [shot_a, shot_b])
    assert [(m["role"], m["content"]) for m in chat["messages"]] == [
        ("system", ef.SYSTEM), ("user", "Will A like B?"), ("assistant", "Yes"), ("user", "Will C like D?"),
        ("assistant", "No"), ("user", "Will E like F?"),
    ]
    assert chat["history_ids"] == [[4, 5]] and chat["item_slot_ids"] == [6] and chat["response"] == "Yes"


def test_few_shot_examples_come_from_other_users_and_items() -> None:
    pool = [ef.row("t3", "uidiid2binary", f"pool {u}", "Yes", user_id=u, item_id=u % 3) for u in range(6)]
    rows = [ef.row("t3", "uidiid2binary", "test", "No", user_id=u, item_id=0) for u in range(6)]
    shots = few_shot_rows(rows, pool, 2, seed=0)
    for test_row, chat in zip(rows, shots):
        users = [m["content"] for m in chat["messages"] if m["content"].startswith("pool")]
        assert len(users) == 2
        used = [int(u.split()[1]) for u in users]
        assert test_row["user_id"] not in used and all(u % 3 != 0 for u in used)  # not the same item either
    assert few_shot_rows(rows, [], 2, seed=0) == rows


def test_read_rows_filters_task_form_split_and_subtask(tmp_path) -> None:
    staging = Store(str(tmp_path)).begin("r", "build-alignment-data")
    rows = [
        ef.row("t4", "iid2title", "q1", "a", user_id=-1, position=-1, item_id=1),
        ef.row("t4", "iid2brand", "q2", "b", user_id=-1, position=-1, item_id=1),
        ef.row("t4", "iid2title", "q3", "c", user_id=-1, position=-1, item_id=2, form="intention"),
        dict(ef.row("t4", "iid2title", "q4", "d", user_id=-1, position=-1, item_id=3), split="train"),
    ]
    staging.write_table("items/part-00000.parquet", pa.Table.from_pylist(rows, schema=ROW_SCHEMA))
    got = read_rows(staging, TASKS["item-recovery"], "behaviour", "test")
    assert [r["response"] for r in got] == ["a"]
    assert [r["response"] for r in read_rows(staging, TASKS["item-recovery"], "behaviour", "train", head=5)] == ["d"]
    assert read_rows(staging, TASKS["t1"], "behaviour", "test") == []  # no next_item directory


METRICS = {
    "aligned/t1/hr@5": 0.5, "aligned/t1/ndcg@5": 0.25, "aligned/t1/rows": 4.0, "aligned/t1/grounded": 0.75,
    "aligned/t3/acc": 0.75, "aligned/t3/rows": 4.0,
    "random/t3/acc": 0.5, "random/t3/rows": 4.0, "random/t1/hr@5": 0.1, "random/t1/ndcg@5": 0.05, "random/t1/rows": 4.0,
    "base/t3/acc": 0.25, "base/t3/rows": 4.0, "base/t3/skipped": 1.0,
}


def test_metrics_table() -> None:
    table = report.metrics_table(METRICS)
    lines = table.splitlines()
    assert lines[0] == "| model | t1 hr@5 | t1 ndcg@5 | t3 acc |"
    assert lines[2] == "| aligned | 0.5000 | 0.2500 | 0.7500 |"
    assert lines[3] == "| base | — | — | 0.2500 |"
    assert lines[4] == "| random | 0.1000 | 0.0500 | 0.5000 |"
    assert "- aligned: t1 4 rows (75% grounded); t3 4 rows" in table
    assert "- base: t3 4 rows, 1 too long" in table


def test_comparison_table_and_chart(tmp_path) -> None:
    other = {"aligned/t3/acc": 0.9, "aligned/t3/rows": 4.0}
    table = report.comparison_table({"intention": METRICS, "hybrid": other})
    assert "| model | metric | intention | hybrid |" in table
    assert "| aligned | t3 acc | 0.7500 | 0.9000 |" in table
    assert "| aligned | t1 hr@5 | 0.5000 | — |" in table
    path = tmp_path / "chart.png"
    report.bar_chart(METRICS, path, "test")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000


def test_report_cli_compares_committed_runs(tmp_path, capsys) -> None:
    store = Store(str(tmp_path))
    for run, value in (("a", 0.5), ("b", 0.75)):
        staging = store.begin(run, "evaluate")
        staging.write_json("metrics.json", {"aligned/t3/acc": value, "aligned/t3/rows": 2.0})
        store.commit(staging, run, "evaluate", {})
    assert report.main(["--store", str(tmp_path), "a", "b"]) == 0
    assert "| aligned | t3 acc | 0.5000 | 0.7500 |" in capsys.readouterr().out
    assert json.loads((tmp_path / "runs" / "a" / "evaluate" / "metrics.json").read_text())["aligned/t3/acc"] == 0.5
