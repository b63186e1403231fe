"""A fresh, trainable :class:`AlignedLM` from a base model URI and a recommender export.

Order matters: slot tokens first (the embedding is resized), then LoRA (so PEFT knows the
slot rows it should train), then ``AlignedLM``. What trains depends on the form:

* ``intention`` / ``hybrid``: LoRA, the ``<user>`` / ``<item>`` embedding rows, the connectors;
* ``behaviour``: LoRA only (prompts carry titles, no slots; connectors and slot rows frozen).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedTokenizerBase

from recexp.llm.aligned import AlignedLM
from recexp.llm.connectors import Connectors
from recexp.llm.load import load_base
from recexp.llm.lora import LoraSettings, apply_lora
from recexp.llm.slots import add_slot_tokens, hidden_size

SLOT_FORMS = ("intention", "hybrid")


@dataclass
class BuildSpec:
    """What :func:`build_trainable` builds."""

    base_uri: str
    recommender_uri: str
    form: str = "intention"
    injection_mode: str = "input_add"
    lora: LoraSettings | None = None
    dtype: str | None = None
    """``None``: float32 (CPU training); ``bf16`` etc. for GPU."""
    seed: int = 0
    endpoint_url: str | None = None
    attn_implementation: str = "sdpa"


def build_trainable(spec: BuildSpec) -> tuple[AlignedLM, PreTrainedTokenizerBase]:
    """``(AlignedLM in train mode, tokenizer with the slot tokens)``; seeded initialisation."""
    from recexp.recommender.export import load as load_recommender

    torch.manual_seed(spec.seed)
    base, tokenizer = load_base(spec.base_uri, spec.dtype, endpoint_url=spec.endpoint_url,
                                attn_implementation=spec.attn_implementation)
    recommender = load_recommender(spec.recommender_uri, endpoint_url=spec.endpoint_url)
    rec_dim = int(recommender.item_embeddings().shape[1])
    slots = add_slot_tokens(base, tokenizer, rec_dim)  # checks hidden size and chat template
    uses_slots = spec.form in SLOT_FORMS
    settings = spec.lora or LoraSettings()
    peft = apply_lora(base, settings, slots.ids if uses_slots and settings.train_slot_tokens else ())
    connectors = Connectors(rec_dim, hidden_size(base)).to(next(base.parameters()).dtype)
    connectors.requires_grad_(uses_slots)
    model = AlignedLM(peft, recommender, connectors, slots, spec.injection_mode)
    return model.train(), tokenizer
