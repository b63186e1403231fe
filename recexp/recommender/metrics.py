"""Ranking metrics for leave-one-out evaluation, vectorised over users.

Protocols
---------
* ``full``: the target is ranked against the whole catalog. Items of the user's history
  (everything before the target, not only the model's ``max_len`` window) are set to
  ``-inf`` first, **except the target itself**: if the target was already in the history
  (a repeat), excluding it would make the case an unavoidable miss.
* ``sampled{n}``: the target is ranked against ``n`` negatives drawn uniformly (with
  replacement) from items the user never interacted with (the whole sequence, including
  items after the target), from a ``torch.Generator`` seeded by ``seed``. Results are
  reproducible for a given seed, batch size and example order.

Ranks are 0-based and ties count against the target (pessimistic):
``rank = #{other candidates with score >= target score}``. Then
``HR@k = mean(rank < k)`` and ``NDCG@k = mean([rank < k] / log2(rank + 2))``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from recexp.recommender.base import Scorer
from recexp.recommender.batches import EvalBatch, EvalExamples, iterate_eval_batches

KS = (5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """0-based pessimistic rank of ``targets (B,)`` among ``scores (B, C)`` columns."""
    target_score = scores.gather(1, targets[:, None])  # (B, 1)
    return (scores >= target_score).sum(dim=1) - 1  # (B,); minus the target itself


def rank_metrics(ranks: torch.Tensor, ks: Sequence[int] = KS) -> dict[str, torch.Tensor]:
    """Per-user ``hr@k`` and ``ndcg@k`` values ``(B,)`` for 0-based ``ranks (B,)``."""
    out: dict[str, torch.Tensor] = {}
    gain = 1.0 / torch.log2(ranks.double() + 2.0)  # (B,)
    for k in ks:
        hit = ranks < k
        out[f"hr@{k}"] = hit.double()
        out[f"ndcg@{k}"] = torch.where(hit, gain, torch.zeros_like(gain))
    return out


def item_mask(batch: EvalBatch, n_items: int, history_only: bool) -> torch.Tensor:
    """Boolean ``(B, n_items)``: the user's history items (``history_only``) or every
    item of the user's sequence."""
    mask = torch.zeros(len(batch.targets), n_items, dtype=torch.bool)
    keep = batch.before_target if history_only else torch.ones_like(batch.before_target)
    mask[batch.item_rows[keep], batch.item_ids[keep]] = True
    return mask


def full_ranks(scores: torch.Tensor, targets: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
    """Ranks ``(B,)`` of ``targets`` over the catalog ``scores (B, I)`` with the boolean
    ``history (B, I)`` items set to -inf, except each row's target."""
    exclude = history.clone()
    exclude[torch.arange(len(targets)), targets] = False
    return target_ranks(scores.masked_fill(exclude, float("-inf")), targets)


def sample_unseen(seen: torch.Tensor, num: int, generator: torch.Generator) -> torch.Tensor:
    """``(B, num)`` item ids drawn uniformly with replacement among the False columns of
    ``seen (B, I)``, by rejection in rounds (vectorised over users)."""
    b, n_items = seen.shape
    if bool(seen.all(dim=1).any()):
        raise ValueError("a user has interacted with every item; cannot sample negatives")
    out = torch.empty(b, num, dtype=torch.long)
    filled = torch.zeros(b, dtype=torch.long)
    while bool((filled < num).any()):
        cand = torch.randint(0, n_items, (b, num + num // 2 + 8), generator=generator)  # (B, M)
        ok = ~seen.gather(1, cand)  # (B, M)
        slot = filled[:, None] + ok.long().cumsum(dim=1) - 1  # (B, M) destination column
        take = ok & (slot < num)
        rows = torch.arange(b)[:, None].expand_as(cand)
        out[rows[take], slot[take]] = cand[take]
        filled = torch.clamp(filled + ok.sum(dim=1), max=num)
    return out


def sampled_ranks(
    scorer: Scorer, batch: EvalBatch, seen: torch.Tensor, num: int, generator: torch.Generator
) -> torch.Tensor:
    """Ranks ``(B,)`` of the target among itself plus ``num`` unseen random items."""
    negatives = sample_unseen(seen, num, generator)  # (B, num)
    candidates = torch.cat([batch.targets[:, None], negatives], dim=1)  # (B, 1 + num)
    scores = scorer.score(batch.histories, candidates, batch.user_ids)  # (B, 1 + num)
    return target_ranks(scores, torch.zeros_like(batch.targets))


@torch.no_grad()
def evaluate_ranking(
    scorer: Scorer,
    examples: EvalExamples,
    *,
    ks: Sequence[int] = KS,
    num_sampled: int = 100,
    batch_size: int = 512,
    seed: int = 0,
) -> dict[str, float]:
    """Mean ``full/{hr,ndcg}@k`` and ``sampled{num_sampled}/{hr,ndcg}@k`` over
    ``examples``; ``num_sampled=0`` skips the sampled protocol."""
    generator = torch.Generator().manual_seed(seed)
    sums: dict[str, torch.Tensor] = {}
    for batch in iterate_eval_batches(examples, batch_size):
        scores = scorer.full_scores(batch.histories, batch.user_ids).float()  # (B, I)
        history = item_mask(batch, examples.n_items, history_only=True)  # (B, I)
        per_user = {f"full/{k}": v for k, v in rank_metrics(full_ranks(scores, batch.targets, history), ks).items()}
        if num_sampled > 0:
            seen = item_mask(batch, examples.n_items, history_only=False)  # (B, I)
            ranks = sampled_ranks(scorer, batch, seen, num_sampled, generator)
            per_user |= {f"sampled{num_sampled}/{k}": v for k, v in rank_metrics(ranks, ks).items()}
        for key, value in per_user.items():
            sums[key] = sums.get(key, torch.zeros((), dtype=torch.float64)) + value.sum()
    n = max(len(examples), 1)
    return {key: float(total) / n for key, total in sorted(sums.items())}
