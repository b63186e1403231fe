"""Training losses shared by the models.

Every loss takes the hidden (user) vectors at the supervised positions only, so no work
is spent on padding: ``hidden (N, d)``, ``targets (N,)`` and the item table
``items (n_items, d)`` (without the padding row).

Negatives are drawn uniformly from the whole catalog with the global torch RNG (seed it
per worker). A negative that happens to equal the positive is masked (sampled softmax)
or, for BCE/BPR, kept: with thousands of items the collision rate is negligible.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

LOSSES = ("ce", "bce", "sampled_softmax", "bpr")


def full_softmax_ce(hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of each target against every catalog item."""
    logits = hidden @ items.T  # (N, n_items)
    return F.cross_entropy(logits, targets)


def _negatives(shape: tuple[int, ...], n_items: int, device: torch.device) -> torch.Tensor:
    """Uniform random item ids of ``shape``."""
    return torch.randint(0, n_items, shape, device=device)


def bce_sampled(
    hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, num_negatives: int = 1
) -> torch.Tensor:
    """Binary cross-entropy: positive vs ``num_negatives`` random items per position
    (the original SASRec objective with ``num_negatives=1``)."""
    pos = (hidden * items[targets]).sum(-1)  # (N,)
    neg_ids = _negatives((targets.shape[0], num_negatives), items.shape[0], hidden.device)  # (N, K)
    neg = torch.einsum("nd,nkd->nk", hidden, items[neg_ids])  # (N, K)
    pos_loss = F.binary_cross_entropy_with_logits(pos, torch.ones_like(pos))
    neg_loss = F.binary_cross_entropy_with_logits(neg, torch.zeros_like(neg), reduction="none")
    return pos_loss + neg_loss.sum(-1).mean()


def sampled_softmax(
    hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, num_negatives: int = 100
) -> torch.Tensor:
    """Softmax over the positive and ``num_negatives`` random items shared by the batch;
    a negative equal to the row's positive is masked out."""
    neg_ids = _negatives((num_negatives,), items.shape[0], hidden.device)  # (K,)
    pos = (hidden * items[targets]).sum(-1, keepdim=True)  # (N, 1)
    neg = hidden @ items[neg_ids].T  # (N, K)
    neg = neg.masked_fill(neg_ids[None, :] == targets[:, None], float("-inf"))
    logits = torch.cat([pos, neg], dim=1)  # (N, 1 + K)
    return F.cross_entropy(logits, torch.zeros_like(targets))


def bpr(hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, num_negatives: int = 1) -> torch.Tensor:
    """Bayesian personalised ranking: -log sigmoid(pos - neg), averaged over negatives."""
    pos = (hidden * items[targets]).sum(-1, keepdim=True)  # (N, 1)
    neg_ids = _negatives((targets.shape[0], num_negatives), items.shape[0], hidden.device)  # (N, K)
    neg = torch.einsum("nd,nkd->nk", hidden, items[neg_ids])  # (N, K)
    return -F.logsigmoid(pos - neg).mean()


def compute_loss(
    name: str, hidden: torch.Tensor, items: torch.Tensor, targets: torch.Tensor, num_negatives: int
) -> torch.Tensor:
    """Dispatch to the loss called ``name`` (one of ``LOSSES``)."""
    if name == "ce":
        return full_softmax_ce(hidden, items, targets)
    if name == "bce":
        return bce_sampled(hidden, items, targets, num_negatives)
    if name == "sampled_softmax":
        return sampled_softmax(hidden, items, targets, num_negatives)
    if name == "bpr":
        return bpr(hidden, items, targets, num_negatives)
    raise ValueError(f"unknown loss {name!r}; expected one of {LOSSES}")
