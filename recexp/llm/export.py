"""Save and restore an aligned model. No pickle: safetensors and JSON only.

Layout of an export directory::

    adapter/                  PEFT adapter (LoRA + slot-token rows), PeftModel.from_pretrained
    connectors.safetensors    user / item connector weights
    tokenizer/                the tokenizer with <user> / <item>
    merged/                   optional: base + adapter merged, an ordinary HF checkpoint
    recexp.json               written last: base model, recommender, form, injection mode, ...

The base model and the recommender are referenced, not copied: ``recexp.json`` names the
base model URI (``"default"`` for the converted SmolLM2) and the recommender export URI, and
:func:`load_aligned` loads both from there (or from URIs given to it, e.g. on another machine).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from safetensors.torch import load_file, save_file
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from recexp.llm.aligned import AlignedLM
from recexp.llm.connectors import Connectors
from recexp.llm.errors import ModelLoadError
from recexp.llm.load import load_base, local_model_copy
from recexp.llm.slots import add_slot_tokens, slot_token_ids

FORMAT_VERSION = 1
ADAPTER_DIR = "adapter"
TOKENIZER_DIR = "tokenizer"
MERGED_DIR = "merged"
CONNECTORS_FILE = "connectors.safetensors"
MANIFEST_FILE = "recexp.json"


def save_aligned(
    model: AlignedLM,
    tokenizer: PreTrainedTokenizerBase,
    directory: str | Path,
    *,
    base_model: str,
    recommender_uri: str,
    recommender_run: str | None = None,
    form: str | None = None,
    merged: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model`` (whose base is a ``PeftModel``) to ``directory``; returns the directory.

    ``base_model`` and ``recommender_uri`` are what :func:`load_aligned` will load them from;
    ``extra`` (JSON-serialisable: LoRA settings, metrics...) is stored in ``recexp.json``."""
    if not isinstance(model.base, PeftModel):
        raise ValueError("save_aligned expects an AlignedLM whose base is a PeftModel (see recexp.llm.lora)")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    # The slot rows are in the adapter (trainable tokens); every other row of the resized embedding
    # is rebuilt identically at load time, so the whole embedding matrix need not be stored.
    model.base.save_pretrained(out / ADAPTER_DIR, safe_serialization=True, save_embedding_layers=False)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.connectors.state_dict().items()}
    save_file(tensors, str(out / CONNECTORS_FILE))
    tokenizer.save_pretrained(out / TOKENIZER_DIR)
    if merged:
        save_merged(model, tokenizer, out / MERGED_DIR)
    manifest = {
        "format_version": FORMAT_VERSION,
        "base_model": str(base_model),
        "recommender": {"uri": str(recommender_uri), "run": recommender_run},
        "form": form,
        "merged": merged,
        "extra": extra or {},
        **_model_facts(model, tokenizer),
    }
    (out / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))  # written last
    return out


def _model_facts(model: AlignedLM, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """What ``load_aligned`` needs to rebuild ``model`` around the saved weights."""
    return {
        "injection_mode": model.mode,
        "slots": {"user": model.slots.user_id, "item": model.slots.item_id},
        "connectors": model.connectors.config(),
        "vocab_size": len(tokenizer),
    }


def save_merged(model: AlignedLM, tokenizer: PreTrainedTokenizerBase, directory: Path) -> None:
    """Base + adapter merged into one ordinary checkpoint (a copy: ``model`` is unchanged)."""
    merged = copy.deepcopy(model.base).merge_and_unload()
    merged.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """The parsed ``recexp.json`` of an export; a clear error when there is none."""
    path = Path(directory) / MANIFEST_FILE
    if not path.is_file():
        raise ModelLoadError(f"no {MANIFEST_FILE} in {directory}: not an aligned model export")
    manifest = json.loads(path.read_text())
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelLoadError(f"unsupported aligned model format_version {manifest.get('format_version')!r}")
    return manifest


def _load_lm(
    local: Path, manifest: dict[str, Any], tokenizer: PreTrainedTokenizerBase, base_uri: str | None,
    use_merged: bool, is_trainable: bool, load_kwargs: dict[str, Any],
) -> torch.nn.Module:
    """The merged checkpoint, or the base model with the adapter on top."""
    if use_merged and (local / MERGED_DIR).is_dir():
        return load_base(local / MERGED_DIR, **load_kwargs)[0]
    base, _ = load_base(base_uri or manifest["base_model"], **load_kwargs)
    add_slot_tokens(base, tokenizer)  # resize to the saved vocabulary; the adapter restores the slot rows
    return PeftModel.from_pretrained(base, local / ADAPTER_DIR, is_trainable=is_trainable)


def load_aligned(
    uri: str | Path,
    *,
    base_uri: str | None = None,
    recommender_uri: str | None = None,
    dtype: torch.dtype | str | None = None,
    use_merged: bool = False,
    is_trainable: bool = False,
    endpoint_url: str | None = None,
    attn_implementation: str = "sdpa",
) -> tuple[AlignedLM, PreTrainedTokenizerBase]:
    """``(AlignedLM in eval mode, tokenizer)`` from an export directory or store URI.

    ``base_uri`` / ``recommender_uri`` override the ones recorded at save time;
    ``use_merged`` loads ``merged/`` (when saved) instead of base + adapter."""
    from recexp.recommender.export import load as load_recommender

    local = local_model_copy(str(uri), endpoint_url)
    manifest = read_manifest(local)
    tokenizer = AutoTokenizer.from_pretrained(local / TOKENIZER_DIR)
    load_kwargs = {"dtype": dtype, "endpoint_url": endpoint_url, "attn_implementation": attn_implementation}
    lm = _load_lm(local, manifest, tokenizer, base_uri, use_merged, is_trainable, load_kwargs)
    slots = slot_token_ids(tokenizer)
    if [slots.user_id, slots.item_id] != [manifest["slots"]["user"], manifest["slots"]["item"]]:
        raise ModelLoadError(f"slot token ids {slots} differ from the saved {manifest['slots']}")
    recommender = load_recommender(recommender_uri or manifest["recommender"]["uri"], endpoint_url=endpoint_url)
    connectors = Connectors.from_config(manifest["connectors"])
    connectors.load_state_dict(load_file(str(local / CONNECTORS_FILE)), strict=True)
    model = AlignedLM(lm, recommender, connectors, slots, manifest["injection_mode"])
    return model.eval(), tokenizer
