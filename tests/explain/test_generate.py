"""Batched generation gives what a per-sample ``generate`` loop gives, in input order."""

from __future__ import annotations

import llm_tiny
import pytest
import torch

from recexp.explain.generate import count_new_tokens, generate_batched, generate_texts, length_sorted_batches
from recexp.llm.collate import Collator
from recexp.llm.errors import SlotError

MAX_NEW = 6


def rows() -> list[dict]:
    """Prompts of many lengths and slot layouts (none, users, items, several)."""
    return llm_tiny.varied_rows() + llm_tiny.toy_rows(7, seed=3)


def per_sample(model, collator: Collator, rows: list[dict], **kwargs) -> list[str]:
    """The naive baseline: one ``generate`` call per prompt, no padding at all."""
    out = []
    for row in rows:
        batch = collator.prompts([row])
        new = model.generate(
            batch.input_ids, batch.attention_mask, batch.history_ids, batch.item_slot_ids, max_new_tokens=MAX_NEW,
            do_sample=False, pad_token_id=collator.pad_id, eos_token_id=sorted(collator.encoder.ends), **kwargs,
        )
        out.append(collator.encoder.tokenizer.decode(new[0], skip_special_tokens=True).strip())
    return out


@pytest.mark.parametrize("mode", ["input_add", "every_layer"])
def test_batched_greedy_equals_per_sample(parts, mode: str) -> None:
    model = parts.aligned(mode).eval()
    collator = Collator(parts.tokenizer, parts.slots, 256)
    want = per_sample(model, collator, rows())
    got = generate_texts(model, collator, rows(), batch_size=4, max_new_tokens=MAX_NEW)
    assert [texts[0] for texts in got] == want
    assert len(set(want)) > 3  # the prompts really give different answers


def test_results_follow_input_order(parts) -> None:
    model = parts.aligned("input_add").eval()
    collator = Collator(parts.tokenizer, parts.slots, 256)
    data = rows()
    forward = generate_texts(model, collator, data, batch_size=3, max_new_tokens=MAX_NEW)
    backward = generate_texts(model, collator, data[::-1], batch_size=5, max_new_tokens=MAX_NEW)
    assert backward == forward[::-1]


def test_token_counts_and_first_step_scores(parts) -> None:
    model = parts.aligned("input_add").eval()
    collator = Collator(parts.tokenizer, parts.slots, 256)
    data = rows()
    ids = [5, 7, 11]
    out = generate_batched(model, collator, data, batch_size=4, max_new_tokens=MAX_NEW, score_ids=ids)
    assert out.prompt_tokens == [len(collator.encoder.encode_prompt(r)) for r in data]
    assert all(1 <= c[0] <= MAX_NEW for c in out.new_tokens)
    assert out.total_new_tokens == sum(c[0] for c in out.new_tokens)
    with torch.no_grad():  # the scores at the answer position = the last prompt logits of a plain forward
        for row, scores in zip(data, out.first_scores):
            logits = model(**collator.prompts([row]).model_inputs()).logits[0, -1]
            assert torch.allclose(torch.tensor(scores), logits[ids], rtol=1e-4, atol=1e-3)


def test_count_new_tokens_stops_at_the_first_stop_id() -> None:
    new = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 2, 2, 2], [9, 9, 3, 1]])
    assert count_new_tokens(new, [2, 3]) == [2, 4, 1, 3]
    assert count_new_tokens(new, 2) == [2, 4, 1, 4]


def test_several_answers_per_row(parts) -> None:
    model = parts.aligned("every_layer").eval()
    collator = Collator(parts.tokenizer, parts.slots, 256)
    data = rows()[:4]
    torch.manual_seed(0)
    sampled = generate_batched(model, collator, data, batch_size=2, max_new_tokens=MAX_NEW, num_return_sequences=3,
                               do_sample=True, temperature=5.0)
    assert [len(t) for t in sampled.texts] == [3] * 4 and [len(c) for c in sampled.new_tokens] == [3] * 4
    assert any(len(set(t)) > 1 for t in sampled.texts)  # hot sampling: the answers differ
    beams = generate_texts(
        parts.aligned("input_add").eval(), collator, data, batch_size=2, max_new_tokens=MAX_NEW,
        num_return_sequences=2, num_beams=3,
    )
    assert [len(t) for t in beams] == [2] * 4


def test_base_model_without_slots(parts) -> None:
    """A plain LM wrapped with zero slots (rows without slot tokens) works the same way."""
    model = parts.aligned("input_add").eval()
    collator = Collator(parts.tokenizer, parts.slots, 256)
    plain = [llm_tiny.task_row(f"Which item will the recommender suggest next? {i}", "") for i in range(3)]
    assert [t[0] for t in generate_texts(model, collator, plain, batch_size=2, max_new_tokens=MAX_NEW)] == \
        per_sample(model, collator, plain)


def test_bad_input_is_a_clear_error(parts) -> None:
    model = parts.aligned("input_add").eval()
    collator = Collator(parts.tokenizer, parts.slots, 256)
    broken = llm_tiny.interest_row([1, 2], 3) | {"item_slot_ids": []}  # one <item> token, no id
    with pytest.raises(SlotError, match="<item>"):
        generate_texts(model, collator, [broken])
    with pytest.raises(ValueError, match="batch_size"):
        generate_texts(model, collator, rows(), batch_size=0)
    with pytest.raises(ValueError, match="num_return_sequences"):
        generate_texts(model, collator, rows(), num_return_sequences=0)
    assert generate_texts(model, collator, []) == []


def test_length_sorted_batches() -> None:
    assert length_sorted_batches([3, 9, 1, 9, 4], 2) == [[1, 3], [4, 0], [2]]
