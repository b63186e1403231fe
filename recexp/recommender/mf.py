"""Matrix factorisation with an optional history-mean user representation.

Two ways to get a user vector:

* ``user_repr="id"``: a learned table row per known user id. ``user_embedding(histories,
  user_ids=...)`` uses it; called *without* ``user_ids`` (e.g. by downstream code that
  only has a history) it falls back to the mean of the history's item embeddings, an
  item-based approximation that lives in the same space as the item table.
* ``user_repr="history_mean"``: the user is always the mean embedding of the items seen
  so far (a FISM-style model). Training uses the causal running mean, so the vector that
  predicts step ``t + 1`` only averages items ``<= t``.

An empty (all-padding) history maps to the zero vector.
"""

from __future__ import annotations

import torch
from torch import nn

from recexp.recommender.base import Batch, Recommender
from recexp.recommender.config import MFConfig
from recexp.recommender.losses import compute_loss


class MF(Recommender):
    """Dot-product matrix factorisation (see module docstring)."""

    model_type = "mf"

    def __init__(self, config: MFConfig) -> None:
        super().__init__(config.n_items, config.max_len)
        self.config = config
        self.item_emb = nn.Embedding(config.n_items + 1, config.d, padding_idx=config.n_items)
        self.user_emb = nn.Embedding(config.n_users, config.d) if config.user_repr == "id" else None
        nn.init.normal_(self.item_emb.weight, std=config.init_std)
        with torch.no_grad():
            self.item_emb.weight[self.pad_id].zero_()
        if self.user_emb is not None:
            nn.init.normal_(self.user_emb.weight, std=config.init_std)

    def item_embeddings(self) -> torch.Tensor:
        return self.item_emb.weight[: self.n_items]  # (I, d)

    def running_mean(self, histories: torch.Tensor) -> torch.Tensor:
        """Mean of the non-pad item embeddings up to each position, ``(B, L) -> (B, L, d)``."""
        valid = (histories != self.pad_id).unsqueeze(-1)  # (B, L, 1)
        summed = self.item_emb(histories).cumsum(dim=1)  # (B, L, d); the pad row is zero
        count = valid.cumsum(dim=1).clamp_min(1)  # (B, L, 1)
        return summed / count

    def user_embedding(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors ``(B, d)``: the id table when ``user_ids`` is given and the model
        has one, otherwise the mean of the history's item embeddings."""
        if user_ids is not None and self.user_emb is not None:
            return self.user_emb(user_ids)
        return self.running_mean(self.clip_histories(histories))[:, -1]  # (B, d)

    def forward(self, batch: Batch) -> torch.Tensor:
        keep = batch.targets != self.pad_id  # (B, L)
        if self.user_emb is not None:
            users = self.user_emb(batch.user_ids)  # (B, d)
            hidden = users[:, None, :].expand(-1, keep.shape[1], -1)  # (B, L, d)
        else:
            hidden = self.running_mean(batch.inputs)  # (B, L, d)
        return compute_loss(
            self.config.loss, hidden[keep], self.item_embeddings(), batch.targets[keep], self.config.num_negatives
        )
