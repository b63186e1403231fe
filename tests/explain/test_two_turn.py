"""Two-turn explanations: the answer is the sign of a plain forward's Yes / No logits, the
explanation answers a follow-up turn, batching changes nothing, and one pass stays as it was."""

from __future__ import annotations

import pytest
import torch
from two_turn_support import MAX_NEW, PAIRS, by_hand, generate_one, prompt_rows, setup, templates

from recexp.errors import DataError
from recexp.explain.generate import generate_batched
from recexp.explain.two_turn import answer_and_explain, answer_word
from recexp.llm.collate import Collator
from recexp.tasks.online import follow_up_row, follow_up_text
from recexp.tasks.rows import RowError

def test_turn_two_renders_through_the_chat_template(parts) -> None:
    row = prompt_rows()[0]
    question = follow_up_text(templates(), "hybrid")
    turn2 = follow_up_row(row, "Yes", question)
    system, prompt = (m["content"] for m in row["messages"])
    rendered = parts.tokenizer.apply_chat_template(turn2["messages"], tokenize=False, add_generation_prompt=True)
    assert rendered == (
        f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{prompt}<|im_end|>\n"
        f"<|im_start|>assistant\nYes<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n"
    )
    assert "why" in question and "{" not in question and "<" not in question
    assert prompt.count("<user>") == 1 and prompt.count("<item>") == 1  # the slots stay in turn 1
    assert (turn2["history_ids"], turn2["item_slot_ids"]) == (row["history_ids"], row["item_slot_ids"])
    collator = Collator(parts.tokenizer, parts.slots, 1024)
    encoded = collator.encoder.encode_prompt(turn2)
    assert (encoded.histories, encoded.items) == ([[1, 2, 3]], [4])
    assert len(encoded) > len(collator.encoder.encode_prompt(row))
    assert row["messages"] == [{"role": "system", "content": system}, {"role": "user", "content": prompt}]  # unchanged


def test_follow_up_rows_refuse_bad_input() -> None:
    row = prompt_rows()[0]
    with pytest.raises(RowError, match="slot"):
        follow_up_row(row, "No", "Why? Compare with <item>.")
    with pytest.raises(DataError, match="answer must be one of"):
        follow_up_row(row, "yes", "Why?")


@pytest.mark.parametrize("mode", ["input_add", "every_layer"])
def test_answers_and_explanations_match_a_plain_forward_and_generate(parts, mode: str) -> None:
    model, collator, ids = setup(parts, mode)
    rows = prompt_rows()
    question = follow_up_text(templates(), "hybrid")
    out = answer_and_explain(model, collator, rows, batch_size=3, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                             follow_up=question)
    margins = [by_hand(model, collator, row, ids) for row in rows]
    assert out.margins == pytest.approx(margins, abs=1e-3)
    assert out.answers == ["yes" if m >= 0 else "no" for m in margins]
    assert {"yes", "no"} <= set(out.answers)  # both answers occur, so the answer turn really varies
    want = [generate_one(model, collator, follow_up_row(row, answer_word(m), question)) for row, m in zip(rows, margins)]
    assert out.texts == want
    assert len(set(want)) > 3
    assert all(1 <= n <= MAX_NEW for n in out.new_tokens) and out.total_new_tokens == sum(out.new_tokens)


def test_batching_and_order_change_nothing(parts) -> None:
    model, collator, ids = setup(parts)
    rows = prompt_rows("behaviour", PAIRS[:4]) + prompt_rows("intention", PAIRS[4:])
    question = follow_up_text(templates(), "intention")
    one = [answer_and_explain(model, collator, [row], batch_size=1, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                              follow_up=question) for row in rows]
    batched = answer_and_explain(model, collator, rows[::-1], batch_size=5, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                                 follow_up=question)
    assert batched.texts[::-1] == [o.texts[0] for o in one]
    assert batched.new_tokens[::-1] == [o.new_tokens[0] for o in one]
    assert batched.margins[::-1] == pytest.approx([o.margins[0] for o in one], abs=1e-3)


def test_decoding_options_leave_the_answer_alone(parts) -> None:
    model, collator, ids = setup(parts)
    rows = prompt_rows()
    question = follow_up_text(templates(), "hybrid")
    greedy = answer_and_explain(model, collator, rows, batch_size=4, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                                follow_up=question)
    torch.manual_seed(0)
    hot = answer_and_explain(model, collator, rows, batch_size=4, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                             follow_up=question, do_sample=True, temperature=5.0, repetition_penalty=1.5)
    assert hot.margins == pytest.approx(greedy.margins, abs=1e-5) and hot.answers == greedy.answers
    assert hot.texts != greedy.texts  # the options reach the explanation


def test_without_follow_up_it_is_the_one_pass_generation(parts) -> None:
    model, collator, ids = setup(parts)
    rows = prompt_rows()
    old = generate_batched(model, collator, rows, batch_size=3, max_new_tokens=MAX_NEW, score_ids=ids)
    for follow_up in (None, ""):
        out = answer_and_explain(model, collator, rows, batch_size=3, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                                 follow_up=follow_up)
        assert out.texts == [t[0] for t in old.texts] and out.new_tokens == [c[0] for c in old.new_tokens]
        assert out.margins == [yes - no for yes, no in old.first_scores]
    two = answer_and_explain(model, collator, rows, batch_size=3, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                             follow_up=follow_up_text(templates(), "hybrid"))
    assert two.margins == pytest.approx(out.margins, abs=1e-3)  # the same first forward
    assert two.texts != out.texts
    assert answer_and_explain(model, collator, [], batch_size=3, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                              follow_up="Why?") == ([], [], [], 0)
