"""What the alignment training logs: throughput, peak memory, an MFU estimate, a loss curve."""

from __future__ import annotations

import resource
import sys
from typing import Any

import torch

from recexp.plots import png_bytes, subplots

GPU_PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}
"""Dense bf16 peak FLOP/s by GPU name fragment (for the MFU estimate)."""


def peak_memory_mb(device: torch.device) -> float:
    """Peak allocated CUDA memory on a GPU; peak resident set size of this process on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)


def flops_per_token(n_params: int, n_layers: int, hidden: int, seq_len: int) -> float:
    """Training FLOPs per token (PaLM appendix B / nanoGPT): 6N + 12 L H T.

    With LoRA the frozen weights get no weight gradients, so this overstates the work by up
    to a third; the MFU below is therefore an upper-bound estimate, labelled as such."""
    return 6.0 * n_params + 12.0 * n_layers * hidden * seq_len


def mfu(tokens_per_s: float, n_params: int, n_layers: int, hidden: int, seq_len: int, device: torch.device) -> float | None:
    """Model FLOPs utilisation on a known GPU; ``None`` on CPU or an unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    peak = next((flops for key, flops in GPU_PEAK_FLOPS.items() if key in name), None)
    if peak is None:
        return None
    return tokens_per_s * flops_per_token(n_params, n_layers, hidden, seq_len) / peak


def loss_png(history: list[dict[str, Any]], title: str) -> bytes:
    """PNG bytes: training loss per optimizer step."""
    fig, ax = subplots()
    ax.plot([row["step"] for row in history], [row["loss"] for row in history], "-", color="tab:blue")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train loss (response tokens)")
    ax.set_title(title)
    return png_bytes(fig)
