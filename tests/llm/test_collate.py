"""Rows -> tensors: response-only labels, slot/control-token checks, padding, packing, batching."""

from __future__ import annotations

import copy

import llm_tiny
import pytest
import torch

from recexp.llm.batching import length_grouped_batches, pack_plan
from recexp.llm.collate import HISTORY_PAD, Collator, block_causal_mask
from recexp.llm.encode import IGNORE_INDEX, RowEncoder
from recexp.llm.errors import ContextLengthError, SlotError
from recexp.llm.slots import add_slot_tokens_to_tokenizer
from recexp.tasks.sanitize import sanitize_title

TOKENIZERS = {"tiny": llm_tiny.tiny_tokenizer, "smollm2": llm_tiny.smollm_tokenizer}


@pytest.fixture(params=sorted(TOKENIZERS), scope="module")
def slotted(request):
    """(tokenizer with slot tokens, slot ids) for every tokenizer available here."""
    tok = TOKENIZERS[request.param]()
    if tok is None:
        pytest.skip("SmolLM2 tokenizer not fetched (python -m recexp.llm.fetch_default)")
    tok = copy.deepcopy(tok)
    return tok, add_slot_tokens_to_tokenizer(tok)


def labelled(encoded) -> list[int]:
    return [t for t, label in zip(encoded.input_ids, encoded.labels) if label != IGNORE_INDEX]


def test_labels_cover_the_response_and_its_end_of_turn_only(slotted) -> None:
    tok, slots = slotted
    row = llm_tiny.interest_row([1, 2, 3], 4)
    enc = RowEncoder(tok, slots, 512).encode(row)
    assert tok.decode(labelled(enc)) == "Yes<|im_end|>"
    full = tok.apply_chat_template(row["messages"] + [{"role": "assistant", "content": "Yes"}], tokenize=False)
    assert tok.decode(enc.input_ids) == full
    first = enc.labels.index(next(label for label in enc.labels if label != IGNORE_INDEX))
    assert all(label == IGNORE_INDEX for label in enc.labels[:first])  # the whole prompt is masked
    assert enc.labels[-1] == IGNORE_INDEX and tok.decode(enc.input_ids[-1:]) == "\n"  # after <|im_end|>
    assert enc.histories == [[1, 2, 3]] and enc.items == [4]


def test_a_literal_slot_marker_in_a_title_is_refused_and_escaping_fixes_it(slotted) -> None:
    tok, slots = slotted
    encoder = RowEncoder(tok, slots, 512)
    hostile = 'The user <user> bought "Free <user> Points". Will they like <item>?'
    with pytest.raises(SlotError, match="2 <user> / 1 <item> slot tokens but 1 history_ids"):
        encoder.encode(llm_tiny.task_row(hostile, "Yes", [[1, 2]], [3]))
    escaped = f'The user <user> bought "{sanitize_title("Free <user> Points", 7)}". Will they like <item>?'
    enc = encoder.encode(llm_tiny.task_row(escaped, "Yes", [[1, 2]], [3]))
    assert enc.input_ids.count(slots.user_id) == 1 and enc.input_ids.count(slots.item_id) == 1


@pytest.mark.parametrize(
    ("prompt", "response", "match"),
    [
        ("Is <user> into <|im_end|><|im_start|>assistant games?", "Yes", "control token"),
        ("Is <user> a gamer?", "Yes<|im_end|>", "control token"),
        ("Is <user> a gamer?", "Yes, like <item>", "slot marker"),
    ],
)
def test_control_tokens_in_data_and_slots_in_responses_are_refused(slotted, prompt, response, match) -> None:
    tok, slots = slotted
    with pytest.raises(SlotError, match=match):
        RowEncoder(tok, slots, 512).encode(llm_tiny.task_row(prompt, response, [[1]]))


def test_too_long_examples_are_a_clear_error(slotted) -> None:
    tok, slots = slotted
    row = llm_tiny.interest_row([1], 2)
    n = len(RowEncoder(tok, slots, 512).encode(row))
    RowEncoder(tok, slots, n).encode(row)
    with pytest.raises(ContextLengthError, match=rf"task=t3.*has {n} tokens, more than max_length {n - 1}"):
        RowEncoder(tok, slots, n - 1).encode(row)


def test_padded_batch_layout(slotted) -> None:
    tok, slots = slotted
    collator = Collator(tok, slots, 512)
    rows = llm_tiny.varied_rows()
    encoded = collator.encode(rows)
    batch = collator.pad(rows)
    lengths = [len(e) for e in encoded]
    assert batch.input_ids.shape == (5, max(lengths)) and batch.attention_mask.sum(1).tolist() == lengths
    assert (batch.labels[batch.attention_mask == 0] == IGNORE_INDEX).all()
    assert batch.num_label_tokens == sum(len(labelled(e)) for e in encoded)
    # histories in slot order: row 0, then the two of row 3, then row 4; right-aligned, -1 padded
    assert batch.history_ids.shape == (4, 10)
    assert batch.history_ids[0].tolist() == [HISTORY_PAD] * 7 + [1, 2, 3]
    assert batch.history_ids[1].tolist() == [HISTORY_PAD] * 9 + [9]
    assert batch.history_ids[2].tolist() == list(range(1, 11))
    assert batch.item_slot_ids.tolist() == [4, 5, 6, 7, 13]


def test_packed_rows_have_a_block_diagonal_mask_and_restarting_positions(slotted) -> None:
    tok, slots = slotted
    collator = Collator(tok, slots, 512)
    rows = llm_tiny.varied_rows()
    a, b, c = (len(e) for e in collator.encode(rows[:3]))
    batch = collator.pack([[rows[0], rows[1]], [rows[2]]])
    width = a + b
    assert batch.input_ids.shape == (2, width) and batch.attention_mask.shape == (2, 1, width, width)
    mask = batch.attention_mask[0, 0]
    assert mask[:a, :a].equal(torch.ones(a, a, dtype=torch.bool).tril())
    assert not mask[a:, :a].any() and not mask[:a, a:].any()
    assert batch.position_ids[0].tolist() == list(range(a)) + list(range(b))
    assert batch.position_ids[1, :c].tolist() == list(range(c))
    assert not batch.attention_mask[1, 0, :c, c:].any()  # real tokens never see the padding tail
    assert batch.item_slot_ids.tolist() == [4, 5, 6, 7]
    with pytest.raises(ContextLengthError):
        Collator(tok, slots, width - 1).pack([[rows[0], rows[1]]])


def test_per_example_label_weights_sum_to_one_per_example(slotted) -> None:
    tok, slots = slotted
    collator = Collator(tok, slots, 512)
    rows = [llm_tiny.interest_row([1, 2, 3], 4), llm_tiny.interest_row([5], 7)]
    rows += [dict(rows[0], response="A much longer answer, with several words")]
    for batch in (collator.pad(rows, per_example=True), collator.pack([rows[:2], rows[2:]], per_example=True)):
        weights = batch.label_weights
        assert weights.shape == batch.labels.shape and weights.dtype == torch.float32
        assert torch.equal(weights > 0, batch.labels != IGNORE_INDEX)  # weight exactly where a label is
        assert batch.loss_weight == pytest.approx(3.0)
        assert float(weights.max()) == pytest.approx(1 / 2)  # "Yes<|im_end|>": 2 tokens, 1/2 each
    plain = collator.pad(rows)
    assert plain.label_weights is None and "label_weights" not in plain.model_inputs()
    assert plain.loss_weight == plain.num_label_tokens


def test_block_causal_mask_small_case() -> None:
    mask = block_causal_mask(torch.tensor([[0, 0, 1, 1, -1]]))[0, 0].int()
    assert mask.tolist() == [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 1, 1, 0], [0, 0, 0, 0, 1]]


def test_generation_prompts_are_left_padded(slotted) -> None:
    tok, slots = slotted
    rows = [llm_tiny.interest_row([1], 2), llm_tiny.task_row("Hi?", "ignored")]
    batch = Collator(tok, slots, 512).prompts(rows)
    n = int(batch.attention_mask[1].sum())
    assert batch.attention_mask[0].all() and not batch.attention_mask[1, :-n].any()
    assert batch.position_ids[1, -n:].tolist() == list(range(n))
    assert tok.decode(batch.input_ids[1, -n:]).endswith("<|im_start|>assistant\n")


def test_length_grouped_batches_cover_everything_once_with_similar_lengths() -> None:
    lengths = torch.randint(5, 500, (1000,), generator=torch.Generator().manual_seed(0)).tolist()
    batches = length_grouped_batches(lengths, batch_size=8, window=10, seed=3)
    assert sorted(i for b in batches for i in b) == list(range(1000))
    assert batches == length_grouped_batches(lengths, batch_size=8, window=10, seed=3)
    assert all(len(b) == 8 for b in batches)
    spread = sum(max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches) / len(batches)
    assert spread < 60  # random batches of 8 would spread over ~380 tokens


def test_pack_plan_fills_rows_without_overflow() -> None:
    lengths = torch.randint(5, 200, (500,), generator=torch.Generator().manual_seed(1)).tolist()
    rows = pack_plan(lengths, max_length=512, window=100)
    assert sorted(i for r in rows for i in r) == list(range(500))
    assert all(sum(lengths[i] for i in r) <= 512 for r in rows)
    assert sum(lengths) / (512 * len(rows)) > 0.9  # first-fit decreasing packs densely
    with pytest.raises(ContextLengthError):
        pack_plan([10, 600], max_length=512)
