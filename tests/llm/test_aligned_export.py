"""An aligned model saved and restored anywhere gives the same logits; no pickle anywhere."""

from __future__ import annotations

import json
from pathlib import Path

import llm_tiny
import pytest
import torch

from recexp.llm.collate import Collator
from recexp.llm.errors import ModelLoadError
from recexp.llm.export import load_aligned, read_manifest, save_aligned
from recexp.llm.lora import LoraSettings, apply_lora
from recexp.llm.slots import slot_token_ids
from recexp.llm.train_step import make_optimizer, train_step
from recexp.recommender.export import save as save_recommender


@pytest.fixture(params=["input_add", "every_layer"], scope="module")
def exported(request, tiny_template, tmp_path_factory):
    """A trained-for-3-steps aligned model, its export directory and a batch (built once per mode)."""
    parts = tiny_template.copy()
    tmp_path = tmp_path_factory.mktemp(request.param)
    base_dir = tmp_path / "base"
    parts.base.save_pretrained(base_dir)
    parts.tokenizer.save_pretrained(base_dir)  # a base checkpoint as load_base would find it
    rec_dir = save_recommender(parts.recommender, tmp_path / "encoder", "fp-test")
    parts.base = apply_lora(parts.base, LoraSettings(r=4, alpha=8, dropout=0.0), parts.slots.ids)
    model = parts.aligned(request.param)
    batch = Collator(parts.tokenizer, parts.slots, 256).pad(llm_tiny.varied_rows())
    optimizer = make_optimizer(model, lr=1e-2)
    for _ in range(3):
        train_step(model, [batch], optimizer)
    out = save_aligned(
        model, parts.tokenizer, tmp_path / "aligned", base_model=str(base_dir), recommender_uri=str(rec_dir),
        recommender_run="run-1", form="hybrid", merged=True, extra={"lora": LoraSettings(r=4, alpha=8).to_dict()},
    )
    return model.eval(), out, batch


def test_load_aligned_gives_identical_logits(exported) -> None:
    model, out, batch = exported
    restored, tokenizer = load_aligned(out, attn_implementation="eager")
    assert restored.mode == model.mode and restored.slots == model.slots == slot_token_ids(tokenizer)
    with torch.no_grad():
        want = model(**batch.model_inputs()).logits
        got = restored(**batch.model_inputs()).logits
    assert torch.allclose(got, want, atol=1e-6)
    merged, _ = load_aligned(out, use_merged=True, attn_implementation="eager")
    with torch.no_grad():
        assert torch.allclose(merged(**batch.model_inputs()).logits, want, atol=1e-5)


def test_export_layout_and_manifest(exported) -> None:
    model, out, _ = exported
    manifest = read_manifest(out)
    assert manifest["injection_mode"] == model.mode and manifest["form"] == "hybrid"
    assert manifest["recommender"]["run"] == "run-1" and manifest["base_model"].endswith("base")
    assert manifest["slots"] == {"user": model.slots.user_id, "item": model.slots.item_id}
    assert manifest["extra"]["lora"]["r"] == 4
    assert (out / "adapter" / "adapter_config.json").is_file() and (out / "connectors.safetensors").is_file()
    assert (out / "tokenizer").is_dir() and (out / "merged" / "config.json").is_file()
    files = [p.name for p in out.rglob("*") if p.is_file()]
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))], files
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["trainable_token_indices"] and adapter["r"] == 4


def test_loading_something_else_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="recexp.json"):
        load_aligned(tmp_path)
