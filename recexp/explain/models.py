"""The language models an evaluation compares: the aligned one and its unaligned counterpart.

The *unaligned* model is the align stage's model before its first step:
:func:`recexp.llm.build.build_trainable` on the export's ``recexp.json`` (same base LM, slot
tokens added with their rows at the embedding mean, same recommender and injection mode,
seeded connectors, LoRA at its initialisation, which changes nothing since LoRA's ``B`` starts
at zero). On intention or hybrid rows it is the "before alignment" reference; on behaviour
rows (no slots) it is exactly the base model, which is how ``base`` and ``base-icl`` run.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from recexp.llm.aligned import AlignedLM
from recexp.llm.build import BuildSpec, build_trainable
from recexp.llm.errors import SlotError
from recexp.llm.lora import LoraSettings


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def unaligned_spec(manifest: dict[str, Any], seed: int = 0, dtype: str | None = None,
                   endpoint_url: str | None = None) -> BuildSpec:
    """What the align stage built before training, from an export's ``recexp.json``."""
    lora = (manifest.get("extra") or {}).get("lora")
    return BuildSpec(
        base_uri=manifest["base_model"], recommender_uri=manifest["recommender"]["uri"],
        form=manifest.get("form") or "intention", injection_mode=manifest["injection_mode"],
        lora=LoraSettings(**lora) if lora else None, dtype=dtype, seed=seed, endpoint_url=endpoint_url,
    )


def load_unaligned(
    manifest: dict[str, Any], *, seed: int = 0, dtype: str | None = None, endpoint_url: str | None = None,
) -> tuple[AlignedLM, PreTrainedTokenizerBase]:
    """``(unaligned AlignedLM in eval mode, its tokenizer)`` for an export's ``recexp.json``."""
    model, tokenizer = build_trainable(unaligned_spec(manifest, seed, dtype, endpoint_url))
    saved = (manifest["slots"]["user"], manifest["slots"]["item"])
    if model.slots.ids != saved:
        raise SlotError(f"unaligned model slot ids {model.slots.ids} differ from the export's {saved}")
    return model.eval(), tokenizer
