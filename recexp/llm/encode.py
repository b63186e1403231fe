"""Task rows -> token ids and labels, with the slot and special-token checks.

A row (``recexp.tasks.rows.ROW_SCHEMA``) has ``messages`` (the prompt turns), ``response``
(the assistant answer), ``history_ids`` (one id list per ``<user>`` slot) and
``item_slot_ids`` (one id per ``<item>`` slot).

The prompt is the tokenizer's chat template with the generation prompt; the completion is
what the template adds for the assistant turn. Prompt and completion are tokenised
separately and concatenated, so the boundary is exact. Labels are ``-100`` on the prompt
and on whatever the template puts after the end-of-turn token (a newline for ChatML);
they cover the response and its end-of-turn token.

Hostile text: slot tokens may only come from the slot markers, and no other special token
may come from data. So a row is refused (:class:`SlotError`) when a message or the response
contains the text of a control token (``<|im_end|>``...), when the response contains a slot
marker, or when the number of slot tokens differs from the number of slot ids (e.g. a title
carrying a literal, unescaped ``<user>``). ``recexp.tasks.sanitize`` escapes such text
upstream; this is the last line of defence.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from recexp.llm.errors import ContextLengthError, SlotError
from recexp.llm.slots import SLOT_TOKENS, SlotTokens

IGNORE_INDEX = -100
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|end|>", "</s>")
"""Tokens that close an assistant turn in common chat templates (plus the tokenizer's eos)."""


@dataclass
class Encoded:
    """One tokenised example."""

    input_ids: list[int]
    labels: list[int]
    histories: list[list[int]] = field(default_factory=list)
    """One chronological id list per ``<user>`` token, in order of appearance."""
    items: list[int] = field(default_factory=list)
    """One item id per ``<item>`` token, in order of appearance."""

    def __len__(self) -> int:
        return len(self.input_ids)


def control_tokens(tokenizer: PreTrainedTokenizerBase) -> list[str]:
    """Texts of the tokenizer's special tokens other than the slots (never allowed in data)."""
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    specials.update(t for t in tokenizer.all_special_tokens if t)
    return sorted(specials - set(SLOT_TOKENS))


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Ids that end an assistant turn: the eos token and known end-of-turn tokens in the vocab."""
    vocab = tokenizer.get_vocab()
    ids = {vocab[t] for t in END_OF_TURN_TOKENS if t in vocab}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids


def check_text(messages: Sequence[Mapping[str, str]], response: str | None, forbidden: Sequence[str]) -> None:
    """Refuse control-token text anywhere and slot markers in the response."""
    texts = [m["content"] for m in messages] + ([response] if response is not None else [])
    for text in texts:
        for token in forbidden:
            if token in text:
                raise SlotError(f"text contains the control token {token!r} (escape it upstream): {text[:200]!r}")
    if response is not None and any(slot in response for slot in SLOT_TOKENS):
        raise SlotError(f"response contains a slot marker: {response[:200]!r}")


def render(tokenizer: PreTrainedTokenizerBase, messages: Sequence[Mapping[str, str]], response: str) -> tuple[str, str]:
    """``(prompt, completion)`` texts: the chat with the generation prompt, then the assistant turn."""
    turns = [dict(m) for m in messages]
    prompt = tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template([*turns, {"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(prompt):
        raise SlotError("the chat template renders the prompt differently with and without the answer")
    return prompt, full[len(prompt) :]


def completion_labels(ids: list[int], ends: set[int]) -> list[int]:
    """``ids`` up to and including the first end-of-turn token; ``-100`` after it."""
    for i, token in enumerate(ids):
        if token in ends:
            return ids[: i + 1] + [IGNORE_INDEX] * (len(ids) - i - 1)
    return list(ids)


def check_slots(input_ids: Sequence[int], slots: SlotTokens, histories: Sequence[Any], items: Sequence[int]) -> None:
    """The token ids must hold exactly one slot token per history / item id."""
    n_users, n_items = input_ids.count(slots.user_id), input_ids.count(slots.item_id)
    if n_users != len(histories) or n_items != len(items):
        raise SlotError(
            f"row has {n_users} <user> / {n_items} <item> slot tokens but {len(histories)} history_ids / "
            f"{len(items)} item_slot_ids (a title with a literal slot marker?)"
        )


class RowEncoder:
    """Encodes task rows (or prompts alone) for one tokenizer, with all checks."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, slots: SlotTokens, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.slots = slots
        self.max_length = int(max_length)
        self.forbidden = control_tokens(tokenizer)
        self.ends = end_of_turn_ids(tokenizer)

    def _ids(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _check_length(self, n: int, row: Mapping[str, Any]) -> None:
        if n > self.max_length:
            where = ", ".join(f"{k}={row[k]}" for k in ("task", "form", "user_id", "position") if k in row)
            raise ContextLengthError(f"example ({where}) has {n} tokens, more than max_length {self.max_length}")

    def encode(self, row: Mapping[str, Any]) -> Encoded:
        """A training example: prompt + response with labels on the response only."""
        messages, response = row["messages"], str(row["response"])
        histories, items = _histories(row), _items(row)
        check_text(messages, response, self.forbidden)
        prompt, completion = render(self.tokenizer, messages, response)
        prompt_ids, completion_ids = self._ids(prompt), self._ids(completion)
        input_ids = prompt_ids + completion_ids
        check_slots(input_ids, self.slots, histories, items)
        self._check_length(len(input_ids), row)
        labels = [IGNORE_INDEX] * len(prompt_ids) + completion_labels(completion_ids, self.ends)
        return Encoded(input_ids, labels, histories, items)

    def encode_prompt(self, row: Mapping[str, Any]) -> Encoded:
        """A generation prompt (no response; labels all ``-100``)."""
        messages, histories, items = row["messages"], _histories(row), _items(row)
        check_text(messages, None, self.forbidden)
        turns = [dict(m) for m in messages]
        prompt = self.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        input_ids = self._ids(prompt)
        check_slots(input_ids, self.slots, histories, items)
        self._check_length(len(input_ids), row)
        return Encoded(input_ids, [IGNORE_INDEX] * len(input_ids), histories, items)


def _histories(row: Mapping[str, Any]) -> list[list[int]]:
    """``history_ids`` as Python ints (rows may hold lists or numpy arrays); [] when absent."""
    value = row.get("history_ids")
    return [] if value is None else [[int(i) for i in ids] for ids in value]


def _items(row: Mapping[str, Any]) -> list[int]:
    """``item_slot_ids`` as Python ints; [] when absent."""
    value = row.get("item_slot_ids")
    return [] if value is None else [int(i) for i in value]
