"""Packing must not leak attention: a packed example's logits equal those of the example alone."""

from __future__ import annotations

import llm_tiny
import pytest
import torch

from recexp.llm.collate import Collator
from recexp.llm.inject import INJECTION_MODES
from recexp.llm.lora import LoraSettings, apply_lora


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("mode", INJECTION_MODES)
def test_packed_logits_equal_logits_alone(parts, mode: str, attn: str) -> None:
    parts.base.set_attn_implementation(attn)
    model = parts.aligned(mode).eval()
    collator = Collator(parts.tokenizer, parts.slots, max_length=512)
    rows = llm_tiny.varied_rows()
    groups = [rows[:3], rows[3:]]
    packed = collator.pack(groups)
    with torch.no_grad():
        logits = model(**packed.model_inputs()).logits  # (2, T, V)
        for r, group in enumerate(groups):
            start = 0
            for row in group:
                alone = model(**collator.pad([row]).model_inputs()).logits[0]  # (t, V)
                got = logits[r, start : start + alone.shape[0]]
                assert torch.allclose(got, alone, atol=1e-5), (mode, attn, r, start)
                start += alone.shape[0]


def test_packed_and_padded_batches_give_the_same_loss_with_lora(parts) -> None:
    parts.base = apply_lora(parts.base, LoraSettings(r=4, alpha=8, dropout=0.0), parts.slots.ids)
    torch.nn.init.normal_(next(p for n, p in parts.base.named_parameters() if "lora_B" in n))  # a non-trivial adapter
    model = parts.aligned("every_layer").eval()
    collator = Collator(parts.tokenizer, parts.slots, max_length=512)
    rows = llm_tiny.varied_rows()
    with torch.no_grad():
        padded = model(**collator.pad(rows).model_inputs()).loss
        packed = model(**collator.pack([rows[:2], rows[2:]]).model_inputs()).loss
    assert torch.allclose(padded, packed, atol=1e-5)


def test_position_ids_alone_separate_packed_examples(parts) -> None:
    """The flash-attention path: no 4-D mask, boundaries from the restarting position ids."""
    model = parts.aligned("input_add").eval()
    rows = llm_tiny.varied_rows()
    packed = Collator(parts.tokenizer, parts.slots, max_length=512).pack([rows[:3], rows[3:]])
    inputs = packed.model_inputs()
    with torch.no_grad():
        with_mask = model(**inputs).logits
        inputs["attention_mask"] = None
        without = model(**inputs).logits
    assert torch.allclose(with_mask, without, atol=1e-5)  # the padding tail is its own example in both
