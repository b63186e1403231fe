"""LoRA: only adapters, slot rows and connectors train; parameter counts add up."""

from __future__ import annotations

import llm_tiny
import pytest
import torch

from recexp.llm.collate import Collator
from recexp.llm.lora import LoraSettings, apply_lora, count_parameters
from recexp.llm.train_step import make_optimizer, train_step


def test_trainable_parameters_are_adapters_slot_rows_and_connectors(parts) -> None:
    parts.base = apply_lora(parts.base, LoraSettings(r=4, alpha=8), parts.slots.ids)
    counts = count_parameters(parts.aligned("input_add"))
    layers, r = parts.base.config.num_hidden_layers, 4
    q = o = r * (64 + 64)
    k = v = r * (64 + 32)  # 2 kv heads of 16
    assert counts.by_part["base"][0] == layers * (q + k + v + o) + 2 * 64  # + the two slot rows
    assert counts.by_part["connectors"][0] == counts.by_part["connectors"][1] == 2 * (16 * 32 + 32 + 32 * 64 + 64)
    # the frozen recommender is outside the module tree (DeepSpeed / DDP never see it)
    assert "recommender" not in counts.by_part
    assert not any(p.requires_grad for p in parts.recommender.parameters())
    assert counts.trainable == sum(t for t, _ in counts.by_part.values())
    assert "trainable" in str(counts)


def test_training_changes_slot_rows_and_adapters_only(parts) -> None:
    embed_before = parts.base.get_input_embeddings().weight.detach().clone()  # (V, H)
    parts.base = apply_lora(parts.base, LoraSettings(r=4, alpha=8, dropout=0.0), parts.slots.ids)
    frozen = {n: p.detach().clone() for n, p in parts.base.named_parameters() if not p.requires_grad}
    assert any("q_proj.base_layer" in n for n in frozen) and any("embed_tokens" in n for n in frozen)
    model = parts.aligned("input_add")
    batch = Collator(parts.tokenizer, parts.slots, 256).pad(llm_tiny.toy_rows(4))
    optimizer = make_optimizer(model, lr=1e-2)
    for _ in range(2):
        train_step(model, [batch], optimizer)
    with torch.no_grad():
        embed_after = parts.base.get_input_embeddings()(torch.arange(embed_before.shape[0]))  # effective rows
    changed = (embed_after != embed_before).any(dim=1).nonzero().flatten().tolist()
    assert changed == sorted(parts.slots.ids)
    now = dict(parts.base.named_parameters())
    assert all(torch.equal(now[n], value) for n, value in frozen.items())


def test_invalid_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="invalid LoRA"):
        LoraSettings(r=0)
    assert LoraSettings().to_dict()["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj"]
