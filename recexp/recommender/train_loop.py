"""Per-worker training and evaluation steps (pure functions; the Ray Train recipe calls
them on each worker, possibly with the model wrapped in ``DistributedDataParallel``).

The only thing assumed about ``model`` is that ``model(batch)`` returns the scalar loss
(``Recommender.forward``), plus, for evaluation, the ``Scorer`` methods on the
unwrapped module.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from recexp.recommender.base import Batch, Scorer
from recexp.recommender.batches import EvalExamples
from recexp.recommender.metrics import KS, evaluate_ranking


def make_optimizer(model: nn.Module, lr: float = 1e-3, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW over all trainable parameters; biases and LayerNorm weights (1-D tensors)
    are exempt from weight decay."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98))


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Iterable[Batch],
    *,
    max_grad_norm: float | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """One pass over ``batches``. Returns the sequence-weighted mean ``loss``,
    ``sequences_per_s``, ``sequences``, ``steps`` and ``seconds``."""
    model.train()
    total_loss, n_seq, steps = 0.0, 0, 0
    start = time.perf_counter()
    for batch in batches:
        if device is not None:
            batch = batch.to(device)
        optimizer.zero_grad(set_to_none=True)
        loss = model(batch)
        loss.backward()
        if max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        total_loss += float(loss.detach()) * len(batch)
        n_seq += len(batch)
        steps += 1
    seconds = time.perf_counter() - start
    return {
        "loss": total_loss / max(n_seq, 1),
        "sequences_per_s": n_seq / max(seconds, 1e-9),
        "sequences": float(n_seq),
        "steps": float(steps),
        "seconds": seconds,
    }


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP (or similar ``.module``) wrapper, else ``model``."""
    return getattr(model, "module", model)


def evaluate(
    model: nn.Module | Scorer,
    examples: EvalExamples,
    *,
    ks: Sequence[int] = KS,
    num_sampled: int = 100,
    batch_size: int = 512,
    seed: int = 0,
) -> dict[str, float]:
    """Ranking metrics of ``model`` (eval mode, no grad) on ``examples``; see
    ``metrics.evaluate_ranking``. The model's train/eval mode is restored afterwards."""
    scorer = unwrap(model) if isinstance(model, nn.Module) else model
    was_training = isinstance(scorer, nn.Module) and scorer.training
    if isinstance(scorer, nn.Module):
        scorer.eval()
    try:
        return evaluate_ranking(scorer, examples, ks=ks, num_sampled=num_sampled, batch_size=batch_size, seed=seed)
    finally:
        if was_training:
            scorer.train()
