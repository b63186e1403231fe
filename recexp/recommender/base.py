"""The recommender interface every model implements, usable without Ray.

Padding convention
------------------
External item ids are dense ``0 .. n_items - 1``. The padding id is ``n_items``
(``model.pad_id``); embedding tables have ``n_items + 1`` rows and the last row is the
(zero, never trained) padding row. Histories are ``LongTensor [B, L]`` that are
*right-aligned*: the most recent item is in the last column and shorter histories are
left-padded with ``pad_id``. Histories longer than the model's ``max_len`` are cut to
their last ``max_len`` columns. Adding more left padding never changes a model's output.

Training
--------
``forward(batch)`` returns the scalar training loss. Routing the loss through ``forward``
(rather than a separate method) keeps ``DistributedDataParallel`` working: DDP only
synchronises gradients for computations started by ``module(...)``. ``loss(batch)`` is a
readable alias that calls ``self(batch)``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn


@dataclass
class Batch:
    """One training batch of right-aligned sequences.

    ``inputs[b, t]`` is the item seen at step ``t`` and ``targets[b, t]`` the item that
    followed it; both are padded with ``pad_id`` where there is no item.
    """

    inputs: torch.Tensor  # (B, L) int64, pad = n_items
    targets: torch.Tensor  # (B, L) int64, pad = n_items
    user_ids: torch.Tensor  # (B,) int64

    def to(self, device: torch.device | str) -> Batch:
        """The same batch on ``device``."""
        return Batch(self.inputs.to(device), self.targets.to(device), self.user_ids.to(device))

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


@runtime_checkable
class Scorer(Protocol):
    """Anything the metric functions can rank with (models and baselines alike)."""

    n_items: int

    def full_scores(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of every catalog item, ``(B, L) -> (B, n_items)``."""
        ...

    def score(
        self, histories: torch.Tensor, item_ids: torch.Tensor, user_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of chosen items, ``(B, L), (B, C) -> (B, C)``."""
        ...


class Recommender(nn.Module, ABC):
    """A dot-product recommender: score(user, item) = <user_embedding, item_embedding>."""

    model_type: str = ""

    def __init__(self, n_items: int, max_len: int) -> None:
        super().__init__()
        self.n_items = int(n_items)
        self.max_len = int(max_len)

    @property
    def pad_id(self) -> int:
        """The id used to left-pad histories (one past the last real item)."""
        return self.n_items

    @abstractmethod
    def item_embeddings(self) -> torch.Tensor:
        """The item table without the padding row, ``(n_items, d)``."""

    @abstractmethod
    def user_embedding(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
        """User vectors from right-aligned histories, ``(B, L) -> (B, d)``.

        ``user_ids (B,)`` is optional; only models with a per-user table use it."""

    @abstractmethod
    def forward(self, batch: Batch) -> torch.Tensor:
        """Scalar training loss for ``batch``."""

    def loss(self, batch: Batch) -> torch.Tensor:
        """Alias of ``self(batch)``: the scalar training loss."""
        return self(batch)

    def score(
        self, histories: torch.Tensor, item_ids: torch.Tensor, user_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores of ``item_ids`` for each history, ``(B, L), (B, C) -> (B, C)``."""
        user = self.user_embedding(histories, user_ids)  # (B, d)
        items = self.item_embeddings()[item_ids]  # (B, C, d)
        return torch.einsum("bd,bcd->bc", user, items)

    def full_scores(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of the whole catalog for each history, ``(B, L) -> (B, n_items)``."""
        return self.user_embedding(histories, user_ids) @ self.item_embeddings().T

    def clip_histories(self, histories: torch.Tensor) -> torch.Tensor:
        """Check ids and keep the last ``max_len`` columns of ``histories`` ``(B, L)``."""
        if histories.dim() != 2:
            raise ValueError(f"histories must be 2-D (B, L), got shape {tuple(histories.shape)}")
        if histories.numel() and (int(histories.min()) < 0 or int(histories.max()) > self.pad_id):
            raise ValueError(
                f"history ids must lie in [0, {self.n_items}] ({self.n_items} = padding), "
                f"got range [{int(histories.min())}, {int(histories.max())}]"
            )
        return histories[:, -self.max_len :]
