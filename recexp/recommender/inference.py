"""Batched export computations on a trained recommender (pure functions, no grad).

* ``topk``: each user's best ``k`` items, history excluded;
* ``item_neighbors``: each item's ``k`` most similar items by dot product (itself excluded);
* ``score_thresholds``: per-user score cut-offs: ``interested`` is the score of the item
  at the top-``top_fraction`` boundary of the catalog (items scoring ``>=`` it are the top
  ~20%), ``not_interested`` the score at the bottom-``bottom_fraction`` boundary (items
  scoring ``<=`` it are the bottom ~50%).
"""

from __future__ import annotations

import math

import torch

from recexp.recommender.base import Scorer


def history_mask(histories: torch.Tensor, n_items: int) -> torch.Tensor:
    """Boolean ``(B, n_items)`` marking the non-pad ids of ``histories (B, L)``
    (padding id ``n_items``)."""
    mask = torch.zeros(histories.shape[0], n_items + 1, dtype=torch.bool, device=histories.device)
    mask.scatter_(1, histories, True)
    return mask[:, :n_items]


@torch.no_grad()
def topk(
    model: Scorer,
    histories: torch.Tensor,
    k: int,
    *,
    exclude: torch.Tensor | None = None,
    exclude_history: bool = True,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-``k`` ``(ids, scores)``, each ``(B, k)``, for right-aligned ``histories (B, L)``.

    Excluded items (set to -inf) are the ids in ``exclude (B, S)`` (padded with
    ``n_items``) when given, else the history itself when ``exclude_history``."""
    ids, scores = [], []
    for start in range(0, histories.shape[0], batch_size):
        hist = histories[start : start + batch_size]  # (b, L)
        full = model.full_scores(hist).float()  # (b, I)
        drop = exclude[start : start + batch_size] if exclude is not None else (hist if exclude_history else None)
        if drop is not None:
            full = full.masked_fill(history_mask(drop, model.n_items), float("-inf"))
        top = full.topk(k, dim=1)
        ids.append(top.indices)
        scores.append(top.values)
    return torch.cat(ids), torch.cat(scores)


@torch.no_grad()
def item_neighbors(item_emb: torch.Tensor, k: int = 10, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` items with the largest dot product with each item, excluding itself:
    ``(ids, scores)``, each ``(I, k)``, for ``item_emb (I, d)``."""
    ids, scores = [], []
    for start in range(0, item_emb.shape[0], batch_size):
        block = item_emb[start : start + batch_size] @ item_emb.T  # (b, I)
        rows = torch.arange(block.shape[0], device=block.device)
        block[rows, rows + start] = float("-inf")
        top = block.topk(k, dim=1)
        ids.append(top.indices)
        scores.append(top.values)
    return torch.cat(ids), torch.cat(scores)


def thresholds_from_scores(
    scores: torch.Tensor, top_fraction: float = 0.2, bottom_fraction: float = 0.5
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(interested, not_interested)``, each ``(B,)``, from catalog ``scores (B, I)``:
    the ``ceil(top_fraction * I)``-th largest and the ``max(1, floor(bottom_fraction * I))``-th
    smallest score of each row."""
    n_items = scores.shape[1]
    k_top = max(1, math.ceil(top_fraction * n_items))
    k_bottom = max(1, math.floor(bottom_fraction * n_items))
    interested = scores.kthvalue(n_items - k_top + 1, dim=1).values  # (B,)
    not_interested = scores.kthvalue(k_bottom, dim=1).values  # (B,)
    return interested, not_interested


@torch.no_grad()
def score_thresholds(
    model: Scorer,
    histories: torch.Tensor,
    *,
    top_fraction: float = 0.2,
    bottom_fraction: float = 0.5,
    batch_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-user ``(interested, not_interested)`` score thresholds ``(B,)`` over the whole
    catalog (see ``thresholds_from_scores``)."""
    tops, bottoms = [], []
    for start in range(0, histories.shape[0], batch_size):
        full = model.full_scores(histories[start : start + batch_size]).float()  # (b, I)
        top, bottom = thresholds_from_scores(full, top_fraction, bottom_fraction)
        tops.append(top)
        bottoms.append(bottom)
    return torch.cat(tops), torch.cat(bottoms)
