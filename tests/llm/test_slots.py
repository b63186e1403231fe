"""Slot tokens: added as special tokens, embeddings resized, positions found, bad bases refused."""

from __future__ import annotations

import llm_tiny
import pytest
import torch

from recexp.llm.connectors import Connector, Connectors
from recexp.llm.errors import SlotError
from recexp.llm.slots import add_slot_tokens, check_base, slot_positions, slot_token_ids


def test_slots_are_single_special_tokens_and_rows_start_at_the_mean(tokenizer) -> None:
    base = llm_tiny.tiny_llama(len(tokenizer))
    old = base.get_input_embeddings().weight.detach().clone()  # (V, H)
    slots = add_slot_tokens(base, tokenizer, llm_tiny.REC_DIM)
    weight = base.get_input_embeddings().weight
    assert weight.shape[0] == len(tokenizer) == old.shape[0] + 2
    assert torch.equal(weight[: old.shape[0]], old)
    assert torch.allclose(weight[slots.user_id], old.mean(0)) and torch.allclose(weight[slots.item_id], old.mean(0))
    assert base.get_output_embeddings().weight.shape[0] == len(tokenizer)
    ids = tokenizer("a <user> b <item><user>", add_special_tokens=False)["input_ids"]
    assert ids.count(slots.user_id) == 2 and ids.count(slots.item_id) == 1
    assert "<user>" not in tokenizer.decode(ids, skip_special_tokens=True)


def test_near_miss_spellings_are_not_slots(tokenizer) -> None:
    base = llm_tiny.tiny_llama(len(tokenizer))
    slots = add_slot_tokens(base, tokenizer)
    for text in ["< user >", "<users>", "<USER>", "‹user›", "<ite m>", "user item"]:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert slots.user_id not in ids and slots.item_id not in ids, text


def test_adding_slots_is_idempotent(tokenizer) -> None:
    base = llm_tiny.tiny_llama(len(tokenizer))
    first = add_slot_tokens(base, tokenizer)
    rows = base.get_input_embeddings().weight.shape[0]
    assert add_slot_tokens(base, tokenizer) == first
    assert base.get_input_embeddings().weight.shape[0] == rows
    assert slot_token_ids(tokenizer) == first


def test_tokenizer_without_slots_or_template_is_refused(tokenizer) -> None:
    base = llm_tiny.tiny_llama(len(tokenizer))
    with pytest.raises(SlotError, match="add_slot_tokens"):
        slot_token_ids(tokenizer)
    tokenizer.chat_template = None
    with pytest.raises(SlotError, match="chat template"):
        add_slot_tokens(base, tokenizer)


def test_hidden_size_too_small_for_the_connector(tokenizer) -> None:
    base = llm_tiny.tiny_llama(len(tokenizer))  # hidden 64 -> bottleneck 32
    check_base(base, tokenizer, rec_dim=32)
    with pytest.raises(SlotError, match="too small"):
        check_base(base, tokenizer, rec_dim=33)


def test_slot_positions_are_row_major() -> None:
    ids = torch.tensor([[5, 9, 1, 9], [9, 2, 3, 4], [0, 0, 0, 9]])
    rows, cols = slot_positions(ids, 9)
    assert rows.tolist() == [0, 0, 1, 2] and cols.tolist() == [1, 3, 0, 3]


def test_connector_shapes_and_config_round_trip() -> None:
    connector = Connector(16, 64)
    assert connector(torch.randn(5, 16)).shape == (5, 64)
    assert [m.out_features for m in connector.net if isinstance(m, torch.nn.Linear)] == [32, 64]
    assert isinstance(connector.net[1], torch.nn.GELU)
    pair = Connectors(16, 64)
    assert Connectors.from_config(pair.config()).config() == {"rec_dim": 16, "hidden": 64}
