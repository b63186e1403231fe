"""The evaluation of an LLM: a model known to be right scores exactly 1, a wrong one 0, and on a
real tiny model the T3 accuracy equals the one computed from a plain forward pass."""

from __future__ import annotations

import eval_fixtures as ef
import llm_tiny
import pytest
import torch

from recexp.config import EvaluateConfig
from recexp.explain.evaluate import (
    Answers,
    evaluate_llm,
    fitting_rows,
    score,
    task_metrics,
)
from recexp.explain.two_turn import answer_token_ids
from recexp.llm.collate import Collator

SETTINGS = EvaluateConfig(batch_size=2, title_tokens=32, list_tokens=96)


def retrieval_answers(row: dict) -> list[str]:
    """The row's answer, then four other titles (beams); other tasks: the answer."""
    if row["task"] != "t1":
        return [row["response"]]
    return [row["response"]] + [t for t in ef.TITLES if t != row["response"]][:4]


def wrong_answers(row: dict) -> list[str]:
    """Always wrong: 'No' for Yes, 'Yes' for No, otherwise titles that are not the answer."""
    if row["task"] == "t3":
        return ["No" if row["response"] == "Yes" else "Yes"]
    if row["task"] == "t2":
        return ["Unknown game; Another one"]
    return ["Not a title at all"] * 5


@pytest.fixture
def collator(parts) -> Collator:
    return Collator(parts.tokenizer, parts.slots, 512)


def all_rows() -> list[dict]:
    return [r for rows in ef.rows_by_task().values() for r in rows]


def test_a_model_known_to_be_right_scores_exactly_one(collator: Collator) -> None:
    oracle = ef.OracleLM(collator, all_rows(), retrieval_answers)
    result = evaluate_llm("aligned", oracle, collator, ef.rows_by_task(), ef.TITLES, SETTINGS)
    quality = {k: v for k, v in result.metrics.items() if not k.endswith(("/rows", "/grounded"))}
    assert quality == {
        "aligned/t1/hr@5": 1.0, "aligned/t1/ndcg@5": 1.0, "aligned/t2/ndcg@5": 1.0, "aligned/t3/acc": 1.0,
        "aligned/t3/auc": 1.0, "aligned/t6/hcr": 1.0, "aligned/item-recovery/acc": 1.0,
    }
    assert result.metrics["aligned/t1/rows"] == 3 and result.metrics["aligned/t3/rows"] == 2
    assert result.metrics["aligned/t1/grounded"] == 1.0  # all 5 beams are catalog titles
    t1 = [s for s in result.samples if s["task"] == "t1"]
    assert len(t1) == 3 and t1[0]["answers"][0] == t1[0]["expected"] and len(t1[0]["answers"]) == 5


def test_a_model_known_to_be_wrong_scores_zero(collator: Collator) -> None:
    oracle = ef.OracleLM(collator, all_rows(), wrong_answers)
    result = evaluate_llm("base", oracle, collator, ef.rows_by_task(), ef.TITLES, SETTINGS)
    quality = {k: v for k, v in result.metrics.items() if not k.endswith(("/rows", "/grounded"))}
    assert set(quality.values()) == {0.0} and len(quality) == 7  # incl. t3 auc 0: every margin backwards
    assert result.metrics["base/t1/grounded"] == 0.0 and result.metrics["base/item-recovery/grounded"] == 0.0


def test_answers_in_other_words_still_ground(collator: Collator) -> None:
    """Case, quotes, numbering and punctuation do not matter; the target at beam 2 gives NDCG 0.5."""
    def sloppy(row: dict) -> list[str]:
        if row["task"] == "t1":
            return ["Tetris", "Doom", f'"{row["response"].upper()}"', "Myst", "Portal"]
        if row["task"] == "t2":
            return ["1. mario kart 8\n2. SPACE QUEST\n3. tetris."]
        return [row["response"]]

    rows = {"t1": [ef.rows_by_task()["t1"][1]], "t2": ef.rows_by_task()["t2"]}  # t1 target: Zelda, third beam
    oracle = ef.OracleLM(collator, rows["t1"] + rows["t2"], sloppy)
    result = evaluate_llm("aligned", oracle, collator, rows, ef.TITLES, SETTINGS)
    assert result.metrics["aligned/t1/hr@5"] == 1.0 and result.metrics["aligned/t1/ndcg@5"] == 0.5
    assert result.metrics["aligned/t2/ndcg@5"] == 1.0


def test_score_of_partial_answers() -> None:
    rows = ef.rows_by_task()
    t6 = score("history", rows["t6"], [[0, 7]])  # one of the three shown items
    assert t6 == {"hcr": pytest.approx(1 / 3)}
    t1 = score("retrieval", rows["t1"], [[(9,), (1,)], [()], [(3,)]])  # hit at rank 1, miss, hit at rank 0
    assert t1["hr@5"] == pytest.approx(2 / 3)
    assert t1["ndcg@5"] == pytest.approx((1 / torch.log2(torch.tensor(3.0)).item() + 1) / 3)
    t3 = score("binary", rows["t3"], [(0.2, 0.1), (0.2, 0.1)])  # always Yes: one of two right
    assert t3 == {"acc": 0.5, "auc": 0.5}
    metrics = task_metrics("random", "t3", rows["t3"], Answers([(1.0, 0.0), (0.0, 1.0)]), 5)
    assert metrics == {"random/t3/acc": 1.0, "random/t3/auc": 1.0, "random/t3/rows": 2.0}  # no texts: no grounded share
    assert task_metrics("random", "t3", [], Answers([]), 5) == {}


def test_t3_accuracy_equals_a_plain_forward_pass(parts) -> None:
    """A real tiny AlignedLM with slots: the metric is the share of rows whose Yes logit at the
    last prompt position beats No, as a plain forward pass computes it."""
    model = parts.aligned("input_add").eval()
    collator = Collator(parts.tokenizer, parts.slots, 256)
    rows = []
    for r in llm_tiny.toy_rows(12, seed=5):
        r = dict(r, meta=f'{{"item_id":{r["item_slot_ids"][0]},"subtask":"uidiid2binary"}}')
        rows.append(r)
    result = evaluate_llm("aligned", model, collator, {"t3": rows}, ef.TITLES, SETTINGS)
    yes, no = answer_token_ids(parts.tokenizer)
    with torch.no_grad():
        logits = model(**{k: v for k, v in collator.prompts(rows).model_inputs().items() if k != "labels"}).logits
    last = logits[:, -1]  # left padding: the last position is every row's answer position
    predicted = ["Yes" if y > n else "No" for y, n in zip(last[:, yes].tolist(), last[:, no].tolist())]
    want = sum(p == r["response"] for p, r in zip(predicted, rows)) / len(rows)
    assert result.metrics["aligned/t3/acc"] == pytest.approx(want)
    assert result.metrics["aligned/t3/rows"] == 12


def test_real_tiny_model_beams_and_lists(parts) -> None:
    """T1 with 5 beams and T6 lists on a real (random) tiny model: answers come back per row,
    and the metrics agree with grounding the sampled answers by hand."""
    model = parts.aligned("input_add").eval()
    collator = Collator(parts.tokenizer, parts.slots, 256)
    rows = {task: ef.rows_by_task()[task] for task in ("t1", "t6")}
    result = evaluate_llm("unaligned", model, collator, rows, ef.TITLES, EvaluateConfig(title_tokens=6, list_tokens=8))
    t1 = [s for s in result.samples if s["task"] == "t1"]
    assert [len(s["answers"]) for s in t1] == [5, 5, 5]
    assert 0.0 <= result.metrics["unaligned/t1/hr@5"] <= 1.0 and result.metrics["unaligned/t6/rows"] == 1
    assert result.metrics["unaligned/t1/grounded"] == 0.0  # a random model writes no catalog title


def test_prompts_longer_than_the_context_are_skipped_and_counted(parts) -> None:
    collator = Collator(parts.tokenizer, parts.slots, 96)
    rows = ef.rows_by_task()["t3"] + [ef.row("t3", "uidiid2binary", "very long " * 80, "Yes", item_id=1)]
    kept, skipped = fitting_rows(collator, rows)
    assert skipped == 1 and kept == rows[:2]
    oracle = ef.OracleLM(collator, kept)
    result = evaluate_llm("aligned", oracle, collator, {"t3": rows}, ef.TITLES, SETTINGS)
    assert result.metrics["aligned/t3/skipped"] == 1 and result.metrics["aligned/t3/rows"] == 2
    assert result.metrics["aligned/t3/acc"] == 1.0
