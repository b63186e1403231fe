"""One optimizer step of the alignment training, single process (no Ray, no DeepSpeed).

The loss of a step is ``sum of token losses / labelled tokens of the whole step``: each
micro-batch's loss is divided by the step's token count, so accumulated gradients equal
those of one big batch whatever the micro-batch sizes. fp32 on CPU; bf16 autocast on CUDA.
A DDP-wrapped model skips gradient synchronisation on all but the last micro-batch.

The Ray Train + DeepSpeed recipe reuses :func:`micro_loss` (forward + loss of one
micro-batch) and drives backward/step through the DeepSpeed engine instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from recexp.llm.collate import AlignBatch


@dataclass
class StepStats:
    """What one optimizer step did."""

    loss: float
    """Mean token loss over the step's labelled tokens."""
    label_tokens: float
    grad_norm: float
    """Gradient norm before clipping."""
    micro_batches: int


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[None]:
    """bf16 autocast on CUDA, nothing elsewhere (CPU trains in fp32)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Activation checkpointing (non-reentrant) in the decoder layers of ``model.base``."""
    model.base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.base.config.use_cache = False


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters that require grad (adapter, slot rows, connectors)."""
    return [p for p in model.parameters() if p.requires_grad]


def make_optimizer(model: nn.Module, lr: float = 2e-4, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW over the trainable parameters only."""
    params = trainable_parameters(model)
    if not params:
        raise ValueError("the model has no trainable parameters (apply LoRA first)")
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def micro_loss(model: nn.Module, batch: AlignBatch, num_items: float, device: torch.device) -> torch.Tensor:
    """Forward of one micro-batch: its summed token loss divided by ``num_items``."""
    with autocast_for(device):
        return model(**batch.to(device).model_inputs(), num_items_in_batch=num_items, return_logits=False).loss


def _sync_contexts(model: nn.Module, n: int) -> Iterator[contextlib.AbstractContextManager[None]]:
    """``no_sync()`` for all but the last micro-batch of a DDP model; nothing otherwise."""
    no_sync = getattr(model, "no_sync", None)
    for i in range(n):
        yield no_sync() if no_sync is not None and i < n - 1 else contextlib.nullcontext()


def train_step(
    model: nn.Module,
    micro_batches: Sequence[AlignBatch],
    optimizer: torch.optim.Optimizer,
    *,
    max_grad_norm: float | None = 1.0,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    device: torch.device | str | None = None,
    num_items: float | None = None,
) -> StepStats:
    """Accumulate gradients over ``micro_batches``, clip, step the optimizer (and scheduler).

    ``num_items``: the loss divisor; default the labelled tokens of ``micro_batches`` (their
    examples with per-example label weights, ``AlignBatch.loss_weight``). Data
    parallel workers pass (global labelled tokens / world size), because DDP and DeepSpeed
    average gradients over workers."""
    device = torch.device(device) if device is not None else next(model.parameters()).device
    num_items = num_items if num_items is not None else sum(b.loss_weight for b in micro_batches)
    if num_items == 0:
        raise ValueError("no labelled tokens in this step's micro-batches")
    model.train()
    total = 0.0
    for batch, sync in zip(micro_batches, _sync_contexts(model, len(micro_batches))):
        with sync:
            loss = micro_loss(model, batch, num_items, device)
            loss.backward()
        total += float(loss.detach())
    params = trainable_parameters(model)
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm if max_grad_norm else float("inf"))
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return StepStats(loss=total, label_tokens=num_items, grad_norm=float(norm), micro_batches=len(micro_batches))
