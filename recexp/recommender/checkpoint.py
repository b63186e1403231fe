"""Optimizer / scheduler state for resumable checkpoints, without pickle.

Tensors go to ``optimizer.safetensors`` (key ``state.<param index>.<name>``); everything
else (param groups, non-tensor state, scheduler state, caller's ``extra``) to
``training_state.json``. Model weights are saved separately with ``export.save``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

TENSORS_FILE = "optimizer.safetensors"
STATE_FILE = "training_state.json"


def _split_state(state: dict[int, dict[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, Any]]]:
    """Optimizer per-parameter state -> (flat tensors, JSON-able remainder)."""
    tensors: dict[str, torch.Tensor] = {}
    rest: dict[str, dict[str, Any]] = {}
    for index, entries in state.items():
        rest[str(index)] = {}
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{index}.{name}"] = value.detach().cpu().contiguous()
            else:
                rest[str(index)][name] = value
    return tensors, rest


def _restore_tuples(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples (e.g. AdamW ``betas``) into lists; give them back their type."""
    return {k: tuple(v) if isinstance(current.get(k), tuple) and isinstance(v, list) else v for k, v in saved.items()}


def save_training_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the optimizer (and scheduler) state plus JSON-able ``extra`` (epoch, step...)."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    opt = optimizer.state_dict()
    tensors, rest = _split_state(opt["state"])
    save_file(tensors, str(out / TENSORS_FILE))
    payload = {
        "optimizer": {"state": rest, "param_groups": opt["param_groups"]},
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "extra": extra or {},
    }
    try:
        text = json.dumps(payload, indent=2)
    except TypeError as err:
        raise TypeError(f"training state is not JSON-serialisable (a custom scheduler lambda?): {err}") from err
    (out / STATE_FILE).write_text(text)
    return out


def load_training_state(
    directory: str | Path,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> dict[str, Any]:
    """Restore what ``save_training_state`` wrote into ``optimizer`` / ``scheduler``;
    returns the saved ``extra``."""
    path = Path(directory)
    payload = json.loads((path / STATE_FILE).read_text())
    tensors = load_file(str(path / TENSORS_FILE))
    state: dict[int, dict[str, Any]] = {int(i): dict(v) for i, v in payload["optimizer"]["state"].items()}
    for key, value in tensors.items():
        _, index, name = key.split(".", 2)
        state.setdefault(int(index), {})[name] = value
    groups = [_restore_tuples(saved, current) for saved, current in zip(payload["optimizer"]["param_groups"], optimizer.param_groups)]
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scheduler is not None and payload["scheduler"] is not None:
        scheduler.load_state_dict(payload["scheduler"])
    return payload["extra"]
