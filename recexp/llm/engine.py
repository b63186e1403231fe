"""Training engines for the alignment: DeepSpeed ZeRO or plain DDP behind one small interface.

An engine owns the optimizer (AdamW over the trainable parameters: LoRA, slot rows,
connectors), the learning-rate schedule (linear warm-up, cosine decay to 10%), gradient
accumulation and clipping, and checkpoints:

* ``step(micro_batches, num_items)`` -> :class:`~recexp.llm.train_step.StepStats`: one optimizer
  step. ``num_items`` divides every micro-batch's summed token loss; data-parallel workers pass
  (global labelled tokens of the step / world size), since both DDP and DeepSpeed average
  gradients over workers, so the update equals that of one big batch.
* ``save(directory, rank)`` / ``load(directory)``: every rank calls both (DeepSpeed partitions
  optimizer state per rank). Nothing is unpickled: DeepSpeed's files are read with
  ``torch.load(weights_only=True)`` and an allow-list of its few state classes; trainable
  weights are safetensors.
* ``trainable_state()``: full trainable weights by parameter name (gathered under ZeRO-3),
  for the export.

Works without Ray (a single process needs no process group; DDP needs one with world > 1).
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from recexp.llm.collate import AlignBatch
from recexp.llm.train_step import StepStats, make_optimizer, micro_loss, train_step

TRAINABLE_FILE = "trainable.safetensors"
DDP_STATE_FILE = "optimizer.pt"
DS_DIR = "deepspeed"
DS_TAG = "state"


@dataclass
class EngineSettings:
    """What an engine needs besides the model."""

    strategy: str = "deepspeed"
    ds_config: dict[str, Any] = field(default_factory=lambda: {"zero_optimization": {"stage": 2}})
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 10
    total_steps: int = 100
    max_grad_norm: float = 1.0
    micro_batch_size: int = 4
    grad_accum: int = 4
    world_size: int = 1
    bf16: bool = False


class WarmupCosine:
    """LR multiplier: linear warm-up to 1, then cosine decay to ``floor`` at ``total`` steps.

    A class rather than a closure so that the scheduler state stays plain data."""

    def __init__(self, warmup: int, total: int, floor: float = 0.1) -> None:
        self.warmup, self.total, self.floor = warmup, max(total, 1), floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * progress))


def deepspeed_config(base: dict[str, Any], settings: EngineSettings) -> dict[str, Any]:
    """``base`` (the shipped JSON: ZeRO stage...) with batch sizes, clipping and precision filled in."""
    config = copy.deepcopy(base)
    config.update(
        train_micro_batch_size_per_gpu=settings.micro_batch_size,
        gradient_accumulation_steps=settings.grad_accum,
        train_batch_size=settings.micro_batch_size * settings.grad_accum * settings.world_size,
        gradient_clipping=settings.max_grad_norm,
        zero_allow_untested_optimizer=True,  # torch AdamW: no compiled optimizer op needed on CPU
        steps_per_print=10**9,
        bf16={"enabled": settings.bf16},
    )
    return config


def _scheduler(optimizer: torch.optim.Optimizer, settings: EngineSettings) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(settings.warmup_steps, settings.total_steps))


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


class DDPEngine:
    """Plain PyTorch: DDP when a process group with several ranks exists, else the model itself."""

    def __init__(self, model: nn.Module, settings: EngineSettings, device: torch.device) -> None:
        self.module, self.device, self.settings = model, device, settings
        distributed = torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1
        ids = [device.index] if device.type == "cuda" else None
        self.model = nn.parallel.DistributedDataParallel(model, device_ids=ids) if distributed else model
        self.optimizer = make_optimizer(model, settings.lr, settings.weight_decay)
        self.scheduler = _scheduler(self.optimizer, settings)

    def step(self, micro_batches: Sequence[AlignBatch], num_items: float) -> StepStats:
        return train_step(
            self.model, micro_batches, self.optimizer, max_grad_norm=self.settings.max_grad_norm or None,
            scheduler=self.scheduler, device=self.device, num_items=num_items,
        )

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().cpu().contiguous() for k, v in _trainable(self.module).items()}

    def save(self, directory: str | Path, rank: int) -> None:
        """Rank 0 writes weights, optimizer and scheduler state (replicated on every rank)."""
        if rank == 0:
            save_file(self.trainable_state(), os.path.join(directory, TRAINABLE_FILE))
            state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict()}
            torch.save(state, os.path.join(directory, DDP_STATE_FILE))

    def load(self, directory: str | Path) -> None:
        load_trainable(self.module, os.path.join(directory, TRAINABLE_FILE))
        state = torch.load(os.path.join(directory, DDP_STATE_FILE), map_location="cpu", weights_only=True)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


class DeepSpeedEngine:
    """DeepSpeed ZeRO (stage from the JSON config), AdamW as a client optimizer."""

    def __init__(self, model: nn.Module, settings: EngineSettings, device: torch.device) -> None:
        import deepspeed

        self.module, self.device, self.settings = model, device, settings
        optimizer = make_optimizer(model, settings.lr, settings.weight_decay)
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=_scheduler(optimizer, settings),
            config=deepspeed_config(settings.ds_config, settings), dist_init_required=False,
        )
        self.engine.checkpoint_engine.load = _safe_torch_load  # no unpickling of stored files
        self.stage = int(self.engine.zero_optimization_stage())

    def step(self, micro_batches: Sequence[AlignBatch], num_items: float) -> StepStats:
        """DeepSpeed counts micro-batches itself and steps the optimizer at the boundary."""
        if len(micro_batches) != self.settings.grad_accum:
            raise ValueError(f"DeepSpeed expects {self.settings.grad_accum} micro-batches per step, got {len(micro_batches)}")
        self.engine.train()
        total = 0.0
        for batch in micro_batches:
            loss = micro_loss(self.engine, batch, num_items, self.device)
            self.engine.backward(loss, scale_wrt_gas=False)  # already divided by the step's tokens
            self.engine.step()
            total += float(loss.detach())
        norm = self.engine.get_global_grad_norm()
        return StepStats(loss=total, label_tokens=num_items, grad_norm=float(norm or 0.0), micro_batches=len(micro_batches))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Full trainable weights; under ZeRO-3 every rank must call this (it gathers)."""
        params = _trainable(self.module)
        if self.stage < 3:
            return {k: v.detach().cpu().contiguous() for k, v in params.items()}
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(params.values()), modifier_rank=None):
            return {k: v.detach().cpu().clone().contiguous() for k, v in params.items()}

    def save(self, directory: str | Path, rank: int) -> None:
        """Every rank writes its optimizer partition; rank 0 also the trainable weights."""
        weights = self.trainable_state()
        self.engine.save_checkpoint(os.path.join(directory, DS_DIR), tag=DS_TAG, exclude_frozen_parameters=True)
        if rank == 0:
            save_file(weights, os.path.join(directory, TRAINABLE_FILE))

    def load(self, directory: str | Path) -> None:
        path, _ = self.engine.load_checkpoint(
            os.path.join(directory, DS_DIR), tag=DS_TAG, load_module_strict=False,
            load_optimizer_states=True, load_lr_scheduler_states=True,
        )
        if path is None:
            raise FileNotFoundError(f"no DeepSpeed checkpoint under {directory}")


Engine = DDPEngine | DeepSpeedEngine


def build_engine(model: nn.Module, settings: EngineSettings, device: torch.device) -> Engine:
    """The engine of ``settings.strategy`` (``deepspeed`` or ``ddp``)."""
    if settings.strategy == "deepspeed":
        return DeepSpeedEngine(model, settings, device)
    if settings.strategy == "ddp":
        return DDPEngine(model, settings, device)
    raise ValueError(f"unknown strategy {settings.strategy!r}")


def load_trainable(model: nn.Module, path: str | Path) -> None:
    """Copy saved trainable weights into ``model``; every trainable parameter must be there."""
    state = load_file(str(path))
    params = _trainable(model)
    missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
    if missing or unexpected:
        raise ValueError(f"trainable weights in {path} do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(state[name])


def read_ds_config(path: str | Path) -> dict[str, Any]:
    """A DeepSpeed JSON config file."""
    with open(path) as f:
        return json.load(f)


def _ds_safe_globals() -> list[Any]:
    """The non-tensor classes DeepSpeed puts in its checkpoints (allowed for weights_only)."""
    from deepspeed.runtime.fp16.loss_scaler import LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [LossScaler, ZeroStageEnum, fragment_address]


def _safe_torch_load(path: str, map_location: Any = None) -> Any:
    """DeepSpeed's checkpoint reader, but with ``weights_only=True`` (no arbitrary unpickling)."""
    with torch.serialization.safe_globals(_ds_safe_globals()):
        return torch.load(path, map_location=map_location, weights_only=True)
