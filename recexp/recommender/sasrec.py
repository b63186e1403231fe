"""SASRec: self-attentive sequential recommendation (Kang & McAuley, ICDM 2018).

Item embeddings plus learned position embeddings feed ``n_blocks`` causal multi-head
self-attention blocks; the user vector is the final hidden state at the most recent
position, and scores are dot products with the same (tied) item table.

Positions are counted from the *right*: the most recent column always gets position
``max_len - 1``. Together with a key-padding mask this makes outputs independent of how
much left padding a history carries. A padding query attends only to itself, so its
(unused) output stays finite.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from recexp.recommender.base import Batch, Recommender
from recexp.recommender.config import SASRecConfig
from recexp.recommender.losses import compute_loss


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention under a boolean ``(B, 1, L, L)`` allow-mask."""

    def __init__(self, d: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.n_heads = n_heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        b, length, d = x.shape  # (B, L, d)
        qkv = self.qkv(x).view(b, length, 3, self.n_heads, d // self.n_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (B, H, L, d/H)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed, dropout_p=p)  # (B, H, L, d/H)
        return self.out(y.transpose(1, 2).reshape(b, length, d))  # (B, L, d)


class Block(nn.Module):
    """Attention + position-wise feed-forward, each with a residual and LayerNorm."""

    def __init__(self, cfg: SASRecConfig) -> None:
        super().__init__()
        self.norm_first = cfg.norm_first
        self.attn = CausalSelfAttention(cfg.d, cfg.n_heads, cfg.dropout)
        self.ffn = nn.Sequential(
            nn.Linear(cfg.d, cfg.ffn_mult * cfg.d),
            nn.ReLU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ffn_mult * cfg.d, cfg.d),
        )
        self.norm1 = nn.LayerNorm(cfg.d)
        self.norm2 = nn.LayerNorm(cfg.d)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        # x: (B, L, d); allowed: (B, 1, L, L)
        if self.norm_first:
            x = x + self.drop(self.attn(self.norm1(x), allowed))
            return x + self.drop(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.drop(self.attn(x, allowed)))
        return self.norm2(x + self.drop(self.ffn(x)))


def attention_mask(histories: torch.Tensor, pad_id: int) -> torch.Tensor:
    """Boolean allow-mask ``(B, 1, L, L)``: causal, no attention to padding keys,
    except that every position may attend to itself."""
    length = histories.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=histories.device).tril()  # (L, L)
    key_ok = (histories != pad_id)[:, None, :]  # (B, 1, L)
    eye = torch.eye(length, dtype=torch.bool, device=histories.device)  # (L, L)
    return ((causal & key_ok) | eye)[:, None, :, :]  # (B, 1, L, L)


class SASRec(Recommender):
    """Causal transformer over item histories (see module docstring)."""

    model_type = "sasrec"

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__(config.n_items, config.max_len)
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.d, padding_idx=config.n_items)
        self.pos_emb = nn.Embedding(config.max_len, config.d)
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_blocks))
        self.final_norm = nn.LayerNorm(config.d)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) embeddings, Xavier linears, zero biases."""
        nn.init.normal_(self.item_emb.weight, std=self.config.init_std)
        nn.init.normal_(self.pos_emb.weight, std=self.config.init_std)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight[: self.n_items]  # (I, d)

    def encode(self, histories: torch.Tensor) -> torch.Tensor:
        """Hidden states at every position, ``(B, L) -> (B, L', d)`` with ``L' = min(L, max_len)``."""
        histories = self.clip_histories(histories)
        length = histories.shape[1]
        positions = torch.arange(self.max_len - length, self.max_len, device=histories.device)  # (L,)
        x = self.item_emb(histories) * math.sqrt(self.config.d) + self.pos_emb(positions)  # (B, L, d)
        x = self.emb_drop(x)
        allowed = attention_mask(histories, self.pad_id)  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, allowed)
        return self.final_norm(x)  # (B, L, d)

    def user_embedding(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Hidden state at the most recent position, ``(B, L) -> (B, d)``; ``user_ids`` is unused."""
        return self.encode(histories)[:, -1]  # (B, d)

    def forward(self, batch: Batch) -> torch.Tensor:
        hidden = self.encode(batch.inputs)  # (B, L, d)
        targets = batch.targets[:, -hidden.shape[1] :]  # (B, L)
        keep = targets != self.pad_id  # (B, L)
        return compute_loss(
            self.config.loss, hidden[keep], self.item_embeddings(), targets[keep], self.config.num_negatives
        )
