"""Two-turn explanations in batches, turn 2 continued from turn 1's KV cache.

Turn 2's prompt is turn 1's prompt + the answer word + the follow-up question: the chat
template appends turns, so turn 1's token ids are a prefix of turn 2's. Per length-sorted batch:

1. :meth:`AlignedLM.prefill` runs one forward over the turn-1 prompts (slots injected): the
   logits at the answer position give the margins, and its KV cache is kept. The token prefix
   all prompts of the batch share (the system message and the template text before the first
   slot, :func:`shared_prefix`: about 40 of an intention prompt's 70 tokens) is computed once
   and its cache repeated for every row; the rest of each prompt ``(B, T - P)`` is left-padded
   after it (the padding between the two is masked, positions count real tokens);
2. each row's turn-2 suffix (``answer<end>user\\n<follow-up><end>assistant\\n``, ~25 tokens) is
   left-padded inside the batch ``(B, S)`` and :meth:`AlignedLM.continue_generate` prefills only
   those ``S`` tokens on top of the cache and decodes the explanation.

Re-prefilling the whole turn-2 prompt (the :func:`~recexp.explain.generate.generate_batched`
path) costs a second full prefill; prefill is compute-bound on a CPU, so it was most of the
cost. The tokens, positions and slot vectors the model sees are the same in both paths (padding
inside a row is masked), so the answers and explanations are the same (tested).

A batch whose turn-2 ids do not start with its turn-1 ids (a chat template that rewrites earlier
turns) is answered by re-prefilling instead, as is any decoding with several sequences per row.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from recexp.explain.generate import decode_new, decoding_options, generate_batched, length_sorted_batches
from recexp.llm.aligned import AlignedLM
from recexp.llm.collate import Collator, left_pad_prompts
from recexp.llm.encode import Encoded

MIN_SHARING_ROWS = 2
"""Batches of at least this many rows compute their shared prompt prefix once."""
Row = Mapping[str, Any]
TurnTwo = Callable[[Row, float], Row]
"""(turn-1 row, margin) -> turn-2 row."""


def continuable(decoding: Mapping[str, Any]) -> bool:
    """Whether ``decoding`` asks for one sequence per row (beams and repeats reshape the cache)."""
    return int(decoding.get("num_beams") or 1) == 1 and int(decoding.get("num_return_sequences") or 1) == 1


def suffix_ids(first: Encoded, second: Encoded) -> list[int] | None:
    """``second``'s ids after ``first``'s when ``first`` is their prefix with the same slots, else None."""
    n = len(first)
    same_slots = (second.histories, second.items) == (first.histories, first.items)
    return list(second.input_ids[n:]) if same_slots and second.input_ids[:n] == first.input_ids else None


def shared_prefix(prompts: Sequence[Encoded], slot_ids: Sequence[int]) -> int:
    """Length of the token prefix all ``prompts`` share, cut before the first slot token (its KV
    differs per row) and one token short of the shortest prompt (the last position's logits are
    read from each row's own forward)."""
    head, stops = prompts[0].input_ids, set(slot_ids)
    limit = min(len(p) for p in prompts) - 1
    n = 0
    while n < limit and head[n] not in stops and all(p.input_ids[n] == head[n] for p in prompts):
        n += 1
    return n


Answered = tuple[list[float], list[str], list[int]]
"""Per row: margin logit(Yes) - logit(No), explanation text, tokens it generated."""


def _batch(
    model: AlignedLM, collator: Collator, rows: Sequence[Row], firsts: Sequence[Encoded], turn_two: TurnTwo,
    yes_no_ids: Sequence[int], kwargs: dict[str, Any],
) -> Answered:
    """Margins, explanations and their token counts for one batch of rows."""
    device = next(model.parameters()).device
    shared = shared_prefix(firsts, model.slots.ids) if len(firsts) >= MIN_SHARING_ROWS else 0
    prefix = torch.tensor(firsts[0].input_ids[:shared], dtype=torch.long, device=device)  # (P,)
    rests = [Encoded(f.input_ids[shared:], [], f.histories, f.items) for f in firsts]
    batch = left_pad_prompts(rests, collator.pad_id).to(device)  # (B, T - P)
    logits, cache = model.prefill(batch.input_ids, batch.attention_mask, batch.history_ids, batch.item_slot_ids,
                                  prefix=prefix)
    margins = (logits[:, yes_no_ids[0]] - logits[:, yes_no_ids[1]]).tolist()  # (B,)
    seconds = [turn_two(row, m) for row, m in zip(rows, margins)]
    suffixes = [suffix_ids(f, collator.encoder.encode_prompt(s)) for f, s in zip(firsts, seconds)]
    if any(s is None for s in suffixes):  # the template rewrote turn 1: prefill turn 2 whole
        gen = generate_batched(model, collator, seconds, batch_size=len(seconds), **kwargs)
        return margins, [t[0] for t in gen.texts], [c[0] for c in gen.new_tokens]
    tail = left_pad_prompts([Encoded(s, []) for s in suffixes], collator.pad_id).to(device)  # (B, S), no slots
    rows_prefix = prefix.expand(len(firsts), -1)  # (B, P)
    new = model.continue_generate(cache, torch.cat([rows_prefix, batch.input_ids, tail.input_ids], 1),
                                  torch.cat([torch.ones_like(rows_prefix), batch.attention_mask, tail.attention_mask], 1),
                                  **kwargs)
    return margins, *decode_new(collator.encoder.tokenizer, new.cpu(), kwargs["eos_token_id"])


def answer_then_follow_up(
    model: AlignedLM, collator: Collator, rows: Sequence[Row], turn_two: TurnTwo, *, batch_size: int,
    max_new_tokens: int, yes_no_ids: Sequence[int], **decoding: Any,
) -> Answered:
    """Margins, explanations and token counts of ``rows`` in input order (see the module doc);
    ``turn_two(row, margin)`` builds a row's second turn; ``decoding``: one sequence per row."""
    if not continuable(decoding):
        raise ValueError("answer_then_follow_up decodes one sequence per row (no num_beams / num_return_sequences)")
    firsts = [collator.encoder.encode_prompt(row) for row in rows]  # errors name the row
    kwargs, _ = decoding_options(collator, 1, {"max_new_tokens": max_new_tokens, **decoding})
    margins, texts, counts = [0.0] * len(rows), [""] * len(rows), [0] * len(rows)
    for indices in length_sorted_batches([len(f) for f in firsts], batch_size):
        answered = _batch(model, collator, [rows[i] for i in indices], [firsts[i] for i in indices], turn_two,
                          yes_no_ids, dict(kwargs))
        for k, i in enumerate(indices):
            margins[i], texts[i], counts[i] = (column[k] for column in answered)
    return margins, texts, counts
