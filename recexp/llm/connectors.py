"""Connectors: recommender vectors -> LLM hidden space (RecExplainer eq. 1).

One MLP for user vectors and one for item vectors, each
``Linear(rec_dim, hidden/2) -> GELU -> Linear(hidden/2, hidden)``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Connector(nn.Module):
    """``(N, rec_dim) -> (N, hidden)``: Linear, GELU, Linear with a hidden/2 bottleneck."""

    def __init__(self, rec_dim: int, hidden: int) -> None:
        super().__init__()
        if rec_dim < 1 or hidden < 2:
            raise ValueError(f"connector needs rec_dim >= 1 and hidden >= 2, got {rec_dim}, {hidden}")
        self.net = nn.Sequential(nn.Linear(rec_dim, hidden // 2), nn.GELU(), nn.Linear(hidden // 2, hidden))

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.net(vectors)  # (N, rec_dim) -> (N, hidden)


class Connectors(nn.Module):
    """The user and item connectors of one aligned model."""

    def __init__(self, rec_dim: int, hidden: int) -> None:
        super().__init__()
        self.rec_dim = int(rec_dim)
        self.hidden = int(hidden)
        self.user = Connector(rec_dim, hidden)
        self.item = Connector(rec_dim, hidden)

    def config(self) -> dict[str, Any]:
        """What :func:`from_config` needs to rebuild the module (weights apart)."""
        return {"rec_dim": self.rec_dim, "hidden": self.hidden}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Connectors:
        """Inverse of :meth:`config`."""
        return cls(int(config["rec_dim"]), int(config["hidden"]))
