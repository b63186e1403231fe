"""Sentence embeddings of explanations: a BERT-style encoder, mean pooling, unit length.

This is how sentence-transformers computes all-MiniLM-L6-v2 embeddings (its ``1_Pooling`` is
mean pooling and ``2_Normalize`` L2 normalisation), done with ``transformers`` alone:
the token states of the last layer are averaged over the attention mask and scaled to unit
length, so a dot product is the cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from recexp.explain.fetch_encoder import encoder_dir
from recexp.llm.errors import ModelLoadError

DEFAULT_ENCODER = "minilm"
MAX_TOKENS = 256
"""Word pieces per text (all-MiniLM-L6-v2 was trained on 128 and truncates at 256)."""


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average of ``hidden`` (B, T, D) over the positions where ``mask`` (B, T) is 1 -> (B, D)."""
    weights = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1e-9)


class SentenceEncoder:
    """Texts -> unit-length embeddings (N, D), in batches, on one device."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, batch_size: int = 32,
                 max_tokens: int = MAX_TOKENS) -> None:
        self.model, self.tokenizer = model.eval(), tokenizer
        self.batch_size, self.max_tokens = batch_size, max_tokens

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Float32 (N, D) embeddings of ``texts``, each row of unit L2 norm."""
        device = next(self.model.parameters()).device
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(list(texts[start:start + self.batch_size]), padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt").to(device)
            hidden = self.model(**batch).last_hidden_state  # (B, T, D)
            pooled = torch.nn.functional.normalize(mean_pool(hidden, batch["attention_mask"]), dim=-1)
            out[start:start + len(pooled)] = pooled.float().cpu().numpy()
        return out


def load_encoder(name: str = DEFAULT_ENCODER, device: str | torch.device = "cpu") -> SentenceEncoder:
    """``minilm`` (the fetched all-MiniLM-L6-v2) or a local Hugging Face model directory."""
    path = encoder_dir() if name == DEFAULT_ENCODER else Path(name)
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"evaluate.encoder: {path} is not a Hugging Face model directory (no config.json)")
    model = AutoModel.from_pretrained(path).to(device)
    return SentenceEncoder(model, AutoTokenizer.from_pretrained(path))
