"""Turn 2 continued from turn 1's KV cache: the suffix is what the chat template appends, the
answers equal a plain forward and a plain ``generate`` over the whole turn-2 prompt (padding inside
the suffix too), and a template that rewrites turn 1 falls back to prefilling turn 2 whole."""

from __future__ import annotations

import pytest
import torch
from two_turn_support import MAX_NEW, by_hand, generate_one, prompt_rows, setup, templates

import recexp.explain.continuation as continuation
from recexp.explain.continuation import answer_then_follow_up, continuable, shared_prefix, suffix_ids
from recexp.explain.two_turn import answer_word
from recexp.llm.encode import Encoded
from recexp.tasks.online import follow_up_row, follow_up_text


def test_suffix_is_what_the_follow_up_appends(parts) -> None:
    _, collator, _ = setup(parts)
    row = prompt_rows("intention")[0]
    first = collator.encoder.encode_prompt(row)
    second = collator.encoder.encode_prompt(follow_up_row(row, "No", "Why?"))
    suffix = suffix_ids(first, second)
    assert suffix == second.input_ids[len(first):] and len(suffix) > 3
    text = collator.encoder.tokenizer.decode(suffix)
    assert text == "No<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n<|im_start|>assistant\n"
    assert suffix_ids(first, Encoded(second.input_ids[1:], [], second.histories, second.items)) is None
    assert suffix_ids(first, Encoded(second.input_ids, [], second.histories, [0])) is None  # other slots


def test_shared_prefix_stops_before_slots_and_the_last_token(parts) -> None:
    _, collator, _ = setup(parts)
    firsts = [collator.encoder.encode_prompt(r) for r in prompt_rows("intention")]
    n = shared_prefix(firsts, parts.slots.ids)
    assert firsts[0].input_ids[n] == parts.slots.user_id  # everything before the first slot is shared
    assert collator.encoder.tokenizer.decode(firsts[0].input_ids[:n]).startswith("<|im_start|>system\n")
    assert shared_prefix([Encoded([1, 2, 3], []), Encoded([1, 2, 4], [])], [9]) == 2
    assert shared_prefix([Encoded([1, 2, 3], []), Encoded([1, 2], [])], [9]) == 1  # one token left to prefill
    assert shared_prefix([Encoded([1, 2, 3], []), Encoded([1, 2, 3], [])], [2]) == 1  # stops at the slot id 2
    assert shared_prefix([Encoded([5, 6, 7], [])], []) == 2


def test_only_single_sequences_continue() -> None:
    assert continuable({}) and continuable({"do_sample": True, "num_beams": 1})
    assert not continuable({"num_beams": 2}) and not continuable({"num_return_sequences": 3})


def varied_turn_two(row: dict, margin: float) -> dict:
    """Follow-ups of different lengths per row: the suffixes are padded inside the batch."""
    return follow_up_row(row, answer_word(margin), "Why?" + " Tell me more." * (row["position"] % 4))


@pytest.mark.parametrize("mode", ["input_add", "input_replace", "every_layer"])
def test_continued_turns_equal_plain_forward_and_generate(parts, mode: str, monkeypatch) -> None:
    model, collator, ids = setup(parts, mode)
    monkeypatch.setattr(continuation, "generate_batched", None)  # no fallback: the cache path only
    shared = []
    monkeypatch.setattr(model, "_prefix_cache", lambda p, n, f=model._prefix_cache: shared.append(len(p)) or f(p, n))
    rows = prompt_rows("hybrid") + prompt_rows("intention")
    margins, texts, counts = answer_then_follow_up(model, collator, rows, varied_turn_two, batch_size=5,
                                                   max_new_tokens=MAX_NEW, yes_no_ids=ids)
    assert margins == pytest.approx([by_hand(model, collator, row, ids) for row in rows], abs=1e-3)
    assert len({len(varied_turn_two(r, 0.0)["messages"][-1]["content"]) for r in rows}) > 2  # several widths
    assert texts == [generate_one(model, collator, varied_turn_two(r, m)) for r, m in zip(rows, margins)]
    assert all(1 <= n <= MAX_NEW for n in counts)
    assert len(shared) == 3 and min(shared) > 20  # batches of 5, 5, 5, 1: the system prompt computed once each


def test_a_template_that_rewrites_turn_one_prefills_turn_two_whole(parts) -> None:
    model, collator, ids = setup(parts)
    rows = prompt_rows("intention")[:4]

    def new_system(row: dict, margin: float) -> dict:
        turn2 = follow_up_row(row, answer_word(margin), "Why?")
        return {**turn2, "messages": [{"role": "system", "content": "Be brief."}, *turn2["messages"][1:]]}

    margins, texts, _ = answer_then_follow_up(model, collator, rows, new_system, batch_size=4,
                                              max_new_tokens=MAX_NEW, yes_no_ids=ids)
    assert texts == [generate_one(model, collator, new_system(r, m)) for r, m in zip(rows, margins)]


def test_sampling_reaches_turn_two_and_beams_are_refused(parts) -> None:
    model, collator, ids = setup(parts)
    rows = prompt_rows("intention")
    question = follow_up_text(templates(), "intention")
    turn = lambda row, m: follow_up_row(row, answer_word(m), question)  # noqa: E731
    greedy = answer_then_follow_up(model, collator, rows, turn, batch_size=8, max_new_tokens=MAX_NEW, yes_no_ids=ids)
    torch.manual_seed(0)
    hot = answer_then_follow_up(model, collator, rows, turn, batch_size=8, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                                do_sample=True, temperature=5.0)
    assert hot[0] == pytest.approx(greedy[0], abs=1e-5) and hot[1] != greedy[1]
    with pytest.raises(ValueError, match="one sequence per row"):
        answer_then_follow_up(model, collator, rows, turn, batch_size=8, max_new_tokens=MAX_NEW, yes_no_ids=ids,
                              num_beams=2)
