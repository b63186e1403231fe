"""The real default model (SmolLM2-135M-Instruct, converted from GGUF): opt-in, slow.

Needs ``python -m recexp.llm.fetch_default`` to have run on this machine (no network here)."""

from __future__ import annotations

from pathlib import Path

import llm_tiny
import pytest
import torch

from recexp.llm.collate import Collator
from recexp.llm.connectors import Connectors
from recexp.llm.export import load_aligned, save_aligned
from recexp.llm.fetch_default import CHECK_MESSAGES, greedy_reply
from recexp.llm.load import load_base
from recexp.llm.lora import LoraSettings, apply_lora, count_parameters
from recexp.llm.paths import MARKER_FILE, default_model_path
from recexp.llm.slots import add_slot_tokens
from recexp.llm.train_step import make_optimizer, train_step
from recexp.recommender.export import save as save_recommender

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (default_model_path() / MARKER_FILE).is_file(), reason="default model not fetched"),
]


def test_converted_default_model_answers_sensibly() -> None:
    assert "Paris" in greedy_reply(default_model_path(), CHECK_MESSAGES, max_new_tokens=20)


def test_align_train_generate_save_load_on_the_default_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    base, tokenizer = load_base("default")
    slots = add_slot_tokens(base, tokenizer, llm_tiny.REC_DIM)
    base = apply_lora(base, LoraSettings(), slots.ids)
    recommender = llm_tiny.tiny_recommender()
    model = llm_tiny.Parts(base, tokenizer, slots, recommender, Connectors(llm_tiny.REC_DIM, 576)).aligned("every_layer")
    counts = count_parameters(model)
    assert 0 < counts.trainable < 0.05 * counts.total
    collator = Collator(tokenizer, slots, 512)
    batch = collator.pad(llm_tiny.toy_rows(4))
    optimizer = make_optimizer(model, lr=1e-4)
    losses = [train_step(model, [batch], optimizer).loss for _ in range(3)]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    prompts = collator.prompts(llm_tiny.toy_rows(2))
    model.eval()
    new = model.generate(prompts.input_ids, prompts.attention_mask, prompts.history_ids, prompts.item_slot_ids,
                         max_new_tokens=5, do_sample=False)
    assert new.shape[0] == 2 and not set(new.flatten().tolist()) & set(slots.ids)
    rec_dir = save_recommender(recommender, tmp_path / "encoder", "fp")
    out = save_aligned(model, tokenizer, tmp_path / "aligned", base_model="default", recommender_uri=str(rec_dir))
    restored, _ = load_aligned(out)
    with torch.no_grad():
        assert torch.allclose(restored(**batch.model_inputs()).logits, model(**batch.model_inputs()).logits, atol=1e-4)
