"""LoRA on the base LM (PEFT), with the slot-token embedding rows trainable too.

What trains: LoRA matrices on ``target_modules`` (default q/k/v/o projections), the rows of
the slot tokens in the input embedding (PEFT ``trainable_token_indices``: only those rows,
stored in the adapter; tied output rows follow) and the connectors (plain modules of
``AlignedLM``). The base weights and the recommender stay frozen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from peft import LoraConfig, PeftModel, get_peft_model
from torch import nn
from transformers import PreTrainedModel

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")


@dataclass
class LoraSettings:
    """LoRA hyper-parameters (RecExplainer trains LoRA with r=16, alpha=32 by default here)."""

    r: int = 16
    """Rank of the update matrices."""
    alpha: int = 32
    """Scaling numerator: the update is multiplied by ``alpha / r``."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: Sequence[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))
    """Module name suffixes that get LoRA (``q_proj``...; ``gate_proj/up_proj/down_proj`` for the MLP)."""
    train_slot_tokens: bool = True
    """Train the embedding rows of ``<user>`` / ``<item>``."""

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1 or not 0.0 <= self.dropout < 1.0 or not self.target_modules:
            raise ValueError(f"invalid LoRA settings: {self}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable fields."""
        out = asdict(self)
        out["target_modules"] = list(self.target_modules)
        return out


def apply_lora(model: PreTrainedModel, settings: LoraSettings, slot_ids: Sequence[int] = ()) -> PeftModel:
    """Wrap ``model`` in a LoRA ``PeftModel``; only adapter (and slot-row) weights require grad."""
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=list(settings.target_modules),
        trainable_token_indices=sorted(int(i) for i in slot_ids) if settings.train_slot_tokens and slot_ids else None,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, config)


@dataclass
class ParameterCounts:
    """Trainable / total parameter counts, overall and per top-level part."""

    trainable: int
    total: int
    by_part: dict[str, tuple[int, int]]
    """``{part: (trainable, total)}`` for the direct children of the counted module."""

    def __str__(self) -> str:
        parts = ", ".join(f"{k} {t:,}/{n:,}" for k, (t, n) in self.by_part.items())
        share = 100 * self.trainable / max(self.total, 1)
        return f"trainable {self.trainable:,} of {self.total:,} ({share:.3f}%): {parts}"


def _count(params: Sequence[nn.Parameter], seen: set[int]) -> tuple[int, int]:
    """``(trainable, total)`` of ``params`` not counted yet (tied tensors count once)."""
    trainable = total = 0
    for param in params:
        if id(param) not in seen:
            seen.add(id(param))
            total += param.numel()
            trainable += param.numel() if param.requires_grad else 0
    return trainable, total


def count_parameters(module: nn.Module) -> ParameterCounts:
    """Trainable and total parameters of ``module``, per direct child (e.g. ``base``,
    ``connectors``, ``recommender`` of an ``AlignedLM``)."""
    seen: set[int] = set()
    by_part = {name: _count(list(child.parameters()), seen) for name, child in module.named_children()}
    own = _count(list(module.parameters(recurse=False)), seen)
    if own[1]:
        by_part["(own)"] = own
    trainable = sum(t for t, _ in by_part.values())
    return ParameterCounts(trainable, sum(n for _, n in by_part.values()), by_part)
