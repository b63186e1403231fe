"""Training curves: per-epoch records as JSON lines and a PNG of loss and valid NDCG@10."""

from __future__ import annotations

import json
from typing import Any

from recexp.plots import png_bytes, subplots


def epochs_jsonl(history: list[dict[str, Any]]) -> str:
    """One JSON object per epoch, in order."""
    return "".join(json.dumps(row, sort_keys=True) + "\n" for row in history)


def curves_png(history: list[dict[str, Any]], title: str) -> bytes:
    """PNG bytes: training loss (left axis) and valid NDCG@10 (right axis) per epoch."""
    fig, ax = subplots()
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["loss"] for row in history], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss", color="tab:blue")
    right = ax.twinx()
    right.plot(epochs, [row["valid/full/ndcg@10"] for row in history], "s-", color="tab:orange", label="valid NDCG@10")
    right.set_ylabel("valid NDCG@10 (full ranking)", color="tab:orange")
    ax.set_title(title)
    return png_bytes(fig)
