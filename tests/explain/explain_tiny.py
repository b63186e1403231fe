"""Tiny models for the explain tests whose answers depend on the prompt."""

from __future__ import annotations

import torch
from torch import nn


def lively(model: nn.Module, seed: int = 5, std: float = 0.5) -> nn.Module:
    """Re-draw every weight matrix of ``model`` from N(0, std^2), seeded, in place.

    A randomly initialised tiny LM (std 0.1) predicts nearly the same token whatever the
    prompt, so equal outputs would prove little; with larger weights its answers differ from
    prompt to prompt and its logits are peaked (ties, which float noise could break either
    way, are unlikely)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model
