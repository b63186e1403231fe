"""torch.distributed helpers shared by the training recipes (identity without a process group),
and the fault injection their tests use."""

from __future__ import annotations

import os
import time

import torch

_OPS = {"sum": torch.distributed.ReduceOp.SUM, "max": torch.distributed.ReduceOp.MAX, "min": torch.distributed.ReduceOp.MIN}


def all_reduce(values: dict[str, float], op: str = "sum") -> dict[str, float]:
    """Sum / max / min of ``values`` over the workers; ``values`` itself without a process group."""
    if not torch.distributed.is_initialized():
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    torch.distributed.all_reduce(tensor, op=_OPS[op])
    return dict(zip(keys, tensor.tolist()))


def maybe_fail(spec: str | None, at: int, rank: int, pause_s: float = 5.0) -> None:
    """Fault injection for tests. ``spec`` is ``"<at>:<rank>:<marker file>"``: that worker dies
    (``os._exit``) once, when it reaches ``at`` (an epoch or a step), leaving the marker file.

    It pauses first: Ray Train collects reports at its health checks (every 2 s), so a worker
    that died right after reporting could lose that checkpoint (the run would then resume from
    the one before, also correct, but not what a test of resuming wants to see)."""
    if not spec:
        return
    at_value, at_rank, marker = spec.split(":", 2)
    if at == int(at_value) and rank == int(at_rank) and not os.path.exists(marker):
        open(marker, "w").close()
        time.sleep(pause_s)
        os._exit(1)
