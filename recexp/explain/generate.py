"""Batched generation with an :class:`~recexp.llm.aligned.AlignedLM`.

:func:`generate_batched` encodes every prompt once, sorts the prompts by token length
(longest first, so a batch that does not fit shows up at once), cuts them into batches of
``batch_size``, left-pads each batch (:func:`recexp.llm.collate.left_pad_prompts`) and runs
``AlignedLM.generate`` with the KV cache; the slot vectors enter in the prefill. Results come
back in input order. Sorting keeps padding small: a batch's prompts have similar lengths.

What comes back (:class:`Generation`):

* ``texts[i]``: the ``num_return_sequences`` decoded answers of row ``i`` (special tokens
  skipped, surrounding whitespace stripped);
* ``new_tokens[i]``: the tokens each answer generated, up to and including the end-of-turn
  token (the padding after it is not counted): the numerator of tokens/s;
* ``first_scores[i]``: with ``score_ids``, the scores of those token ids at the first
  generated position (after the slot-token suppression, before temperature / top-k / top-p):
  e.g. ``Yes`` vs ``No`` at the answer position.

Decoding defaults: greedy (``do_sample=False``), stop at the tokenizer's end-of-turn ids,
``pad_token_id`` = the collator's. Any ``generate`` keyword overrides them.

Several answers per row: with sampling or greedy decoding each prompt is repeated
``num_return_sequences`` times in its batch (so every injection mode sees a prefill of the
shape it injected, see :mod:`recexp.llm.inject`); with beam search (``num_beams > 1``) the
count goes to ``generate``, which returns the best beams.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList, PreTrainedTokenizerBase

from recexp.llm.aligned import AlignedLM
from recexp.llm.collate import Collator, left_pad_prompts
from recexp.llm.encode import Encoded


@dataclass
class Generation:
    """Answers of a list of rows, in input order (see the module doc)."""

    texts: list[list[str]]
    new_tokens: list[list[int]]
    first_scores: list[list[float]] | None = None
    """Per row, the first-step score of each of ``score_ids`` (None when none were asked)."""
    prompt_tokens: list[int] = field(default_factory=list)
    """Prompt length in tokens per row."""

    @property
    def total_new_tokens(self) -> int:
        """Generated tokens over all rows and answers."""
        return sum(sum(counts) for counts in self.new_tokens)


class FirstStepScores(LogitsProcessor):
    """Records the scores of ``ids`` at the first generation step (leaves the scores unchanged)."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        self.scores: torch.Tensor | None = None  # (B', len(ids)) float32

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.scores is None:
            self.scores = scores[:, self.ids].float().cpu()
        return scores


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices sorted by length, longest first (ties: input order), cut into batches."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def count_new_tokens(new_ids: torch.Tensor, stop_ids: int | Sequence[int]) -> list[int]:
    """Per row of ``new_ids`` ``(B, N)``: tokens up to and including the first stop id, else N
    (what follows the stop is padding)."""
    stop_ids = [stop_ids] if isinstance(stop_ids, int) else list(stop_ids)
    stops = torch.isin(new_ids, torch.tensor(stop_ids, dtype=new_ids.dtype))  # (B, N)
    first = stops.int().argmax(1) + 1  # (B,) one past the first stop (meaningless without a stop)
    return torch.where(stops.any(1), first, new_ids.shape[1]).tolist()


def decode_new(
    tokenizer: PreTrainedTokenizerBase, new_ids: torch.Tensor, stop_ids: int | Sequence[int]
) -> tuple[list[str], list[int]]:
    """Texts of new token ids ``(B, N)`` (special tokens skipped, whitespace stripped) and
    their token counts (:func:`count_new_tokens`)."""
    texts = tokenizer.batch_decode(new_ids, skip_special_tokens=True)
    return [t.strip() for t in texts], count_new_tokens(new_ids, stop_ids)


def decoding_options(collator: Collator, num_return_sequences: int, kwargs: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """``generate`` keywords with the defaults filled in, and how often to repeat each prompt."""
    out = {"do_sample": False, "use_cache": True, "pad_token_id": collator.pad_id,
           "eos_token_id": sorted(collator.encoder.ends), **kwargs}
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences must be >= 1, got {num_return_sequences}")
    if int(out.get("num_beams") or 1) > 1:
        out["num_return_sequences"] = num_return_sequences
        return out, 1
    return out, num_return_sequences


def _run_batch(
    model: AlignedLM, prompts: Sequence[Encoded], pad_id: int, repeat: int, kwargs: dict[str, Any],
    score_ids: Sequence[int] | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """New token ids ``(B * R, N)`` of one batch (R answers per prompt, adjacent) and the
    first-step scores ``(B, len(score_ids))``."""
    device = next(model.parameters()).device
    batch = left_pad_prompts([p for p in prompts for _ in range(repeat)], pad_id).to(device)
    recorder = FirstStepScores(score_ids) if score_ids else None
    processors = LogitsProcessorList([*kwargs.pop("logits_processor", []), *([recorder] if recorder else [])])
    new_ids = model.generate(
        batch.input_ids, batch.attention_mask, batch.history_ids, batch.item_slot_ids,
        logits_processor=processors, **kwargs,
    ).cpu()
    scores = None
    if recorder is not None and recorder.scores is not None:
        scores = recorder.scores[:: recorder.scores.shape[0] // len(prompts)]  # one row per prompt
    return new_ids, scores


def generate_batched(
    model: AlignedLM,
    collator: Collator,
    rows: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    num_return_sequences: int = 1,
    score_ids: Sequence[int] | None = None,
    **generate_kwargs: Any,
) -> Generation:
    """Answers to ``rows`` (task rows; ``response`` ignored), see the module doc."""
    prompts = [collator.encoder.encode_prompt(row) for row in rows]  # errors name the row
    kwargs, repeat = decoding_options(collator, num_return_sequences, {"max_new_tokens": max_new_tokens, **generate_kwargs})
    per_row = num_return_sequences
    tokenizer = collator.encoder.tokenizer
    texts: list[list[str]] = [[] for _ in rows]
    counts: list[list[int]] = [[] for _ in rows]
    scores: list[list[float]] = [[] for _ in rows]
    for indices in length_sorted_batches([len(p) for p in prompts], batch_size):
        new_ids, first = _run_batch(model, [prompts[i] for i in indices], collator.pad_id, repeat, dict(kwargs), score_ids)
        decoded, lengths = decode_new(tokenizer, new_ids, kwargs["eos_token_id"])
        for k, i in enumerate(indices):
            texts[i] = decoded[k * per_row : (k + 1) * per_row]
            counts[i] = lengths[k * per_row : (k + 1) * per_row]
            scores[i] = first[k].tolist() if first is not None else []
    return Generation(texts, counts, scores if score_ids else None, [len(p) for p in prompts])


def generate_texts(
    model: AlignedLM,
    collator: Collator,
    rows: Sequence[Mapping[str, Any]],
    *,
    batch_size: int = 8,
    max_new_tokens: int = 64,
    num_return_sequences: int = 1,
    **generate_kwargs: Any,
) -> list[list[str]]:
    """``num_return_sequences`` decoded answers per row, in input order (:func:`generate_batched`
    gives token counts and first-step scores as well)."""
    return generate_batched(
        model, collator, rows, batch_size=batch_size, max_new_tokens=max_new_tokens,
        num_return_sequences=num_return_sequences, **generate_kwargs,
    ).texts
