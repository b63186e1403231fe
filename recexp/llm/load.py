"""Load a base causal LM and its tokenizer: a Hugging Face model directory or a GGUF file.

``uri`` may be

* ``"default"``: the converted SmolLM2-135M-Instruct (``python -m recexp.llm.fetch_default``);
* a local directory holding ``config.json`` (a normal HF checkpoint);
* a local ``*.gguf`` file (de-quantised by ``transformers``, which needs the ``gguf`` package);
* any fsspec URL (``s3://bucket/models/x``, ``s3://.../model.gguf``): copied once into
  ``$RECEXP_CACHE/models/remote/<hash>`` (default cache root ``~/.cache/recexp``), then as above.

A GGUF-loaded model carries a ``quantization_config`` and refuses ``save_pretrained``;
:func:`plain_copy` rebuilds it as an ordinary model (same weights), which is what
:func:`load_base` returns, so PEFT, export and DeepSpeed see a normal checkpoint.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from recexp.llm.errors import ModelLoadError
from recexp.llm.paths import DEFAULT_URI, default_model_dir

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype:
    """``None`` -> float32 (the CPU default); names such as ``"bf16"`` -> the torch dtype."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}; known: {sorted(_DTYPES)}")
    return _DTYPES[dtype]


def local_model_copy(uri: str, endpoint_url: str | None = None) -> Path:
    """A local path for ``uri``: itself when local, else a copy in the cache that is fetched
    again when the remote files change (see :func:`recexp.store.cached_copy`)."""
    from recexp.store import cached_copy

    try:
        return Path(cached_copy(uri, endpoint_url, "models/remote"))
    except FileNotFoundError:
        raise ModelLoadError(f"model not found: {uri}") from None


def plain_copy(model: PreTrainedModel, attn_implementation: str = "sdpa") -> PreTrainedModel:
    """The same weights in a fresh model built from the config without ``quantization_config``."""
    config = model.config
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    dtype = next(model.parameters()).dtype
    fresh = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    missing, unexpected = fresh.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if not k.endswith("lm_head.weight") or not config.tie_word_embeddings]
    if missing or unexpected:
        raise ModelLoadError(f"GGUF conversion lost weights: missing {missing[:5]}, unexpected {unexpected[:5]}")
    fresh.tie_weights()
    return fresh.eval()


def _load_gguf(path: Path, dtype: torch.dtype, attn: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """De-quantise a GGUF file into an ordinary ``dtype`` model, plus its tokenizer."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
        model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    except ImportError as err:
        raise ModelLoadError(f"loading {path} needs the `gguf` package: {err}") from err
    return plain_copy(model, attn), tokenizer


def _load_hf_dir(path: Path, dtype: torch.dtype, attn: str) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """An ordinary checkpoint directory (``config.json`` + weights + tokenizer files)."""
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path} is neither a model directory (no config.json) nor a .gguf file")
    config = AutoConfig.from_pretrained(path)
    if getattr(config, "quantization_config", None):
        raise ModelLoadError(f"{path} holds a quantised checkpoint; convert it to a plain one first")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation=attn)
    return model.eval(), AutoTokenizer.from_pretrained(path)


def resolve_uri(uri: str | Path, endpoint_url: str | None = None) -> Path:
    """The local path ``uri`` names (``"default"``, a directory, a .gguf file or a remote URL)."""
    uri = str(uri)
    path = default_model_dir() if uri == DEFAULT_URI else local_model_copy(uri, endpoint_url)
    if not path.exists():
        raise ModelLoadError(f"model not found: {uri}")
    return path


def load_base(
    uri: str | Path = DEFAULT_URI,
    dtype: torch.dtype | str | None = None,
    *,
    endpoint_url: str | None = None,
    attn_implementation: str = "sdpa",
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """``(model, tokenizer)`` for ``uri`` (see the module doc), in eval mode.

    ``dtype`` defaults to float32 (CPU training); pass ``"bf16"`` for GPU serving. A
    tokenizer without a pad token gets its end-of-sequence token as pad token.
    """
    path = resolve_uri(uri, endpoint_url)
    torch_dtype = parse_dtype(dtype)
    if path.is_file() and path.suffix == ".gguf":
        model, tokenizer = _load_gguf(path, torch_dtype, attn_implementation)
    else:
        model, tokenizer = _load_hf_dir(path, torch_dtype, attn_implementation)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model, tokenizer
