"""Injection modes: how projected recommender vectors enter the LLM at the slot positions.

===============  ===========================================================================
``input_add``     RecExplainer: the vector is added to the slot token's input embedding
``input_replace`` LLaRA / CoLLM: the vector replaces the slot token's input embedding
``every_layer``   XRec style: ``input_add``, and in every decoder layer the vector is also
                  added to the input of the q, k and v projections at the slot positions
===============  ===========================================================================

``every_layer`` uses forward pre-hooks on ``self_attn.{q,k,v}_proj`` of Llama-style layers,
so ``q = W_q (x + e)``, ``k = W_k (x + e)``, ``v = W_v (x + e)`` at slot positions: adding in
the projections' input space works for any head layout (grouped-query attention has narrower
k/v than q) and passes through LoRA-wrapped projections. The residual stream is untouched.

The hooks act only while the current input has the shape of the injected batch (``(B, T)``
of the prefill). In training the state stays set after the forward, so activation
checkpointing recomputes the same values during backward; in generation it is cleared as
soon as the prefill forward of the decoder returns, so decoding steps are never touched.
One model instance serves one forward at a time (the state is per instance, not per thread).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from recexp.llm.errors import SlotError

INJECTION_MODES = ("input_add", "input_replace", "every_layer")
QKV_NAMES = ("q_proj", "k_proj", "v_proj")


@dataclass
class SlotVectors:
    """Projected vectors and where they go: ``vectors[s]`` at ``(rows[s], cols[s])``."""

    rows: torch.Tensor  # (S,) int64 batch index
    cols: torch.Tensor  # (S,) int64 position
    vectors: torch.Tensor  # (S, H)

    def __len__(self) -> int:
        return int(self.rows.shape[0])


def expand_rows(slots: SlotVectors, factor: int) -> SlotVectors:
    """The slots of a batch whose every row is repeated ``factor`` times in place (row ``r`` ->
    rows ``r*factor .. r*factor+factor-1``), as ``generate`` expands prompts for beam search
    or several returned sequences."""
    if factor <= 1 or len(slots) == 0:
        return slots
    offsets = torch.arange(factor, device=slots.rows.device)  # (F,)
    rows = (slots.rows[:, None] * factor + offsets).reshape(-1)  # (S*F,)
    return SlotVectors(rows, slots.cols.repeat_interleave(factor), slots.vectors.repeat_interleave(factor, dim=0))


def check_mode(mode: str) -> None:
    """Raise ValueError for an unknown injection mode."""
    if mode not in INJECTION_MODES:
        raise ValueError(f"unknown injection mode {mode!r}; known: {', '.join(INJECTION_MODES)}")


def inject_inputs(embeds: torch.Tensor, slots: SlotVectors, mode: str) -> torch.Tensor:
    """``embeds`` ``(B, T, H)`` with the slot vectors added or written (out of place)."""
    check_mode(mode)
    if len(slots) == 0:
        return embeds
    values = slots.vectors.to(embeds.dtype)  # (S, H)
    accumulate = mode != "input_replace"
    return embeds.index_put((slots.rows, slots.cols), values, accumulate=accumulate)


def attention_modules(model: nn.Module) -> list[nn.Module]:
    """Every attention module that has ``q_proj``, ``k_proj`` and ``v_proj`` children."""
    found = [m for m in model.modules() if all(isinstance(getattr(m, n, None), nn.Module) for n in QKV_NAMES)]
    if not found:
        raise SlotError(
            "injection mode 'every_layer' needs Llama-style attention modules with q_proj/k_proj/v_proj; "
            f"none found in {type(model).__name__}"
        )
    return found


class QKVInjector:
    """Forward pre-hooks that add the slot vectors to the q/k/v projection inputs of every layer."""

    def __init__(self, model: nn.Module, decoder: nn.Module) -> None:
        self._model = model
        self._targets: list[nn.Module] = []
        self._handles: list[RemovableHandle] = []
        self._state: SlotVectors | None = None
        self._shape: tuple[int, int] | None = None
        self._once = False
        decoder.register_forward_hook(self._after_decoder)
        self.attach()

    def attach(self) -> None:
        """(Re)register the hooks on the current projections (e.g. after LoRA wrapped them)."""
        targets = [getattr(attn, name) for attn in attention_modules(self._model) for name in QKV_NAMES]
        if len(targets) == len(self._targets) and all(a is b for a, b in zip(targets, self._targets)):
            return
        for handle in self._handles:
            handle.remove()
        self._targets = targets
        self._handles = [t.register_forward_pre_hook(self._pre_hook) for t in targets]

    def __getstate__(self) -> dict[str, Any]:
        """Copies (``copy.deepcopy`` of the model) start with no injection state: the state may
        hold non-leaf tensors of the last forward, which cannot be deep-copied."""
        return {**self.__dict__, "_state": None, "_shape": None, "_once": False}

    @property
    def num_hooked(self) -> int:
        """How many projections carry a hook (3 per layer)."""
        return len(self._handles)

    def set(self, slots: SlotVectors, shape: tuple[int, int], once: bool = False) -> None:
        """Inject ``slots`` into every input of shape ``shape`` = ``(B, T)``; ``once``: only the
        next decoder forward (the prefill of a generation)."""
        self.attach()
        self._state, self._shape, self._once = (slots if len(slots) else None), tuple(shape), once

    def clear(self) -> None:
        """Stop injecting."""
        self._state, self._shape, self._once = None, None, False

    def _pre_hook(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if self._state is None or not args or tuple(args[0].shape[:2]) != self._shape:
            return None
        x = args[0]  # (B, T, H) normed hidden states entering the projection
        values = self._state.vectors.to(x.dtype)  # (S, H)
        return (x.index_put((self._state.rows, self._state.cols), values, accumulate=True), *args[1:])

    def _after_decoder(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        if self._once:
            self.clear()
