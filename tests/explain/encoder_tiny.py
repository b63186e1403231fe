"""A tiny config-built BERT sentence encoder for the explanation-classifier tests (nothing downloaded).

The tokenizer is a WordPiece over single characters (plus a few whole words), so it spells any
ASCII text; the model is a random-init 2-layer BERT, saved like a Hugging Face checkpoint so that
:func:`recexp.explain.encoder.load_encoder` loads it from its directory.
"""

from __future__ import annotations

import string
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = ["the", "user", "game", "games", "likes", "because", "racing", "puzzle", "history"]
HIDDEN = 32


def save_tiny_bert(directory: Path, seed: int = 0) -> Path:
    """Write the tiny encoder (``config.json``, weights, tokenizer) to ``directory``; returns it."""
    directory.mkdir(parents=True, exist_ok=True)
    pieces = string.ascii_lowercase + string.digits
    vocab = SPECIALS + list(pieces + string.punctuation) + ["##" + c for c in pieces] + WORDS
    tokenizer = BertTokenizerFast(vocab={token: i for i, token in enumerate(vocab)})
    config = BertConfig(vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256)
    torch.manual_seed(seed)
    BertModel(config).eval().save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
