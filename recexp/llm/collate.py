"""Encoded examples -> model tensors: padded batches, packed rows, generation prompts.

* :func:`pad_batch`: one example per row, right padding, ``(B, T)`` padding mask.
* :func:`pack_rows`: several examples per row; ``position_ids`` restart at 0 for every
  example and a boolean block-diagonal causal mask ``(B, 1, T, T)`` keeps examples from
  attending to each other (works with eager and sdpa attention, fp32 on CPU).
* :func:`left_pad_prompts`: prompts for ``AlignedLM.generate`` (left padding).

For attention kernels that take no 4-D mask (flash-attention), pass ``attention_mask=None``
with the packed ``position_ids``: transformers then rebuilds the example boundaries from the
positions restarting at 0 (tested to give the same logits as the block mask).

Slot ids travel with the tokens: ``history_ids`` ``(S_u, L)`` has one right-aligned history
per ``<user>`` token in row-major order of ``input_ids`` (left-padded with ``HISTORY_PAD``,
which ``AlignedLM`` maps to the recommender's pad id), ``item_slot_ids`` ``(S_i,)`` one id per
``<item>`` token. Row-major order is example order, because examples are laid out left to
right in the order they are listed.

:class:`Collator` bundles a :class:`recexp.llm.encode.RowEncoder` with these functions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from recexp.llm.encode import IGNORE_INDEX, Encoded, RowEncoder
from recexp.llm.errors import ContextLengthError
from recexp.llm.slots import SlotTokens

HISTORY_PAD = -1


@dataclass
class AlignBatch:
    """Tensors of one (micro-)batch; ``model_inputs()`` are the keyword arguments of ``AlignedLM``."""

    input_ids: torch.Tensor  # (B, T) int64
    attention_mask: torch.Tensor  # (B, T) int64 padding mask, or (B, 1, T, T) bool block mask
    labels: torch.Tensor  # (B, T) int64, -100 where not trained
    position_ids: torch.Tensor  # (B, T) int64
    history_ids: torch.Tensor  # (S_u, L) int64, left-padded with HISTORY_PAD
    item_slot_ids: torch.Tensor  # (S_i,) int64
    label_weights: torch.Tensor | None = None
    """``(B, T)`` float32 weight of each label (``per_example``: 1 / the example's labelled
    tokens); None: every labelled token weighs 1."""

    @property
    def num_label_tokens(self) -> int:
        """Tokens the loss is computed on (labels after the one-step shift)."""
        return int((self.labels[:, 1:] != IGNORE_INDEX).sum())

    @property
    def loss_weight(self) -> float:
        """The loss divisor of this batch alone: its labelled tokens, or with per-example
        weights its examples (each example's weights sum to 1)."""
        if self.label_weights is None:
            return float(self.num_label_tokens)
        return float(self.label_weights[:, 1:].sum())

    def to(self, device: torch.device | str) -> AlignBatch:
        """The same batch on ``device``."""
        return AlignBatch(**{k: v.to(device) if v is not None else None for k, v in self.model_inputs().items()})

    def model_inputs(self) -> dict[str, torch.Tensor]:
        """Keyword arguments for ``AlignedLM.forward`` (``label_weights`` only when set)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.label_weights is None:
            del values["label_weights"]
        return values


def history_tensor(histories: Sequence[Sequence[int]]) -> torch.Tensor:
    """Right-aligned ``(S_u, L)`` histories, left-padded with ``HISTORY_PAD`` (L >= 1)."""
    width = max([len(h) for h in histories] + [1])
    out = torch.full((len(histories), width), HISTORY_PAD, dtype=torch.long)
    for row, ids in enumerate(histories):
        if ids:
            out[row, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
    return out


def _slot_tensors(examples: Sequence[Encoded]) -> tuple[torch.Tensor, torch.Tensor]:
    """Histories and item ids of ``examples`` concatenated in order."""
    histories = [h for e in examples for h in e.histories]
    items = [i for e in examples for i in e.items]
    return history_tensor(histories), torch.tensor(items, dtype=torch.long)


def example_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-example label weights of one example's labels ``(n,)``: 1 / its labelled tokens at each
    labelled position, 0 elsewhere (so every example counts once in the loss)."""
    labelled = (labels != IGNORE_INDEX).float()
    return labelled / labelled.sum().clamp(min=1.0)


def pad_batch(examples: Sequence[Encoded], pad_id: int, per_example: bool = False) -> AlignBatch:
    """One example per row, right-padded to the longest; ``(B, T)`` padding mask;
    ``per_example``: label weights that make each example count once."""
    width = max(len(e) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    mask = torch.zeros_like(ids)
    for row, e in enumerate(examples):
        ids[row, : len(e)] = torch.tensor(e.input_ids)
        labels[row, : len(e)] = torch.tensor(e.labels)
        mask[row, : len(e)] = 1
    positions = torch.arange(width).expand(len(examples), width).clone()
    weights = torch.stack([example_weights(row) for row in labels]) if per_example else None
    return AlignBatch(ids, mask, labels, positions, *_slot_tensors(examples), label_weights=weights)


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """``(B, T)`` segment ids -> boolean ``(B, 1, T, T)``: attend causally within a segment only."""
    width = segments.shape[1]
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # (T, T)
    same = segments[:, :, None] == segments[:, None, :]  # (B, T, T)
    return (same & causal)[:, None]  # (B, 1, T, T)


def pack_rows(
    rows: Sequence[Sequence[Encoded]], pad_id: int, max_length: int | None = None, per_example: bool = False
) -> AlignBatch:
    """Several examples per row, laid out left to right; block-diagonal mask, per-example positions;
    ``per_example``: label weights that make each example count once."""
    lengths = [sum(len(e) for e in row) for row in rows]
    width = max(lengths)
    if max_length is not None and width > max_length:
        raise ContextLengthError(f"a packed row has {width} tokens, more than max_length {max_length}")
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full_like(ids, IGNORE_INDEX)
    positions = torch.arange(width).expand(len(rows), width).clone()  # padding tail: its own segment
    segments = torch.full_like(ids, -1)
    weights = torch.zeros(ids.shape) if per_example else None
    for r, row in enumerate(rows):
        start = 0
        for s, e in enumerate(row):
            end = start + len(e)
            ids[r, start:end], labels[r, start:end] = torch.tensor(e.input_ids), torch.tensor(e.labels)
            positions[r, start:end], segments[r, start:end] = torch.arange(len(e)), s
            if weights is not None:
                weights[r, start:end] = example_weights(labels[r, start:end])
            start = end
        positions[r, start:] = torch.arange(width - start)
    slot_tensors = _slot_tensors([e for row in rows for e in row])
    return AlignBatch(ids, block_causal_mask(segments), labels, positions, *slot_tensors, label_weights=weights)


def left_pad_prompts(prompts: Sequence[Encoded], pad_id: int) -> AlignBatch:
    """Generation prompts, left-padded (what ``generate`` expects); positions count real tokens."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, p in enumerate(prompts):
        ids[row, width - len(p) :] = torch.tensor(p.input_ids)
        mask[row, width - len(p) :] = 1
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    return AlignBatch(ids, mask, torch.full_like(ids, IGNORE_INDEX), positions, *_slot_tensors(prompts))


class Collator:
    """Task rows -> :class:`AlignBatch` for one tokenizer and context length."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, slots: SlotTokens, max_length: int) -> None:
        self.encoder = RowEncoder(tokenizer, slots, max_length)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id)
        self.max_length = int(max_length)

    def encode(self, rows: Sequence[Mapping[str, Any]]) -> list[Encoded]:
        """Tokenise and check every row (errors name the offending row)."""
        return [self.encoder.encode(row) for row in rows]

    def pad(self, rows: Sequence[Mapping[str, Any]], per_example: bool = False) -> AlignBatch:
        """One row per example (right padding)."""
        return pad_batch(self.encode(rows), self.pad_id, per_example)

    def pack(self, rows: Sequence[Sequence[Mapping[str, Any]]], per_example: bool = False) -> AlignBatch:
        """Packed rows: ``rows[r]`` lists the task rows that share batch row ``r``."""
        return pack_rows([self.encode(group) for group in rows], self.pad_id, self.max_length, per_example)

    def prompts(self, rows: Sequence[Mapping[str, Any]]) -> AlignBatch:
        """Left-padded generation prompts (the ``response`` column, if any, is ignored)."""
        return left_pad_prompts([self.encoder.encode_prompt(row) for row in rows], self.pad_id)
