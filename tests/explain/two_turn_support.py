"""Shared by the two-turn tests: explanation prompt rows over a tiny catalog, a tiny aligned
model, and the by-hand references (a plain forward for the margin, a plain ``generate``)."""

from __future__ import annotations

import functools

import llm_tiny
import pyarrow as pa
import torch

from recexp.explain.two_turn import answer_token_ids
from recexp.llm.collate import Collator
from recexp.tasks.catalog import build_catalog
from recexp.tasks.online import explain_rows
from recexp.tasks.templates import load_templates

MAX_NEW = 6
PAIRS = [([1, 2, 3], 4), ([5, 6], 7), ([8, 9, 10, 11, 12], 13), ([0], 19), ([14, 15, 16, 17], 2), ([3, 18], 9),
         ([7, 7, 1], 11), ([12, 2, 4, 6, 8, 10, 19], 5)]


@functools.cache
def templates():
    return load_templates()


@functools.cache
def catalog():
    titles = [f"Game {i}" for i in range(llm_tiny.N_ITEMS)]
    return build_catalog(pa.table({"item_id": pa.array(range(len(titles)), pa.int32()), "title": titles}))


def prompt_rows(form: str = "hybrid", pairs=PAIRS) -> list[dict]:
    histories, items = [h for h, _ in pairs], [i for _, i in pairs]
    return explain_rows(catalog(), histories, items, form=form, max_hist=3, max_len=8, templates=templates())


def setup(parts, mode: str = "input_add"):
    model = parts.aligned(mode).eval()
    collator = Collator(parts.tokenizer, parts.slots, 1024)
    return model, collator, answer_token_ids(parts.tokenizer)


def by_hand(model, collator: Collator, row: dict, ids) -> float:
    """logit(Yes) - logit(No) at the last prompt position of a plain forward over one prompt."""
    with torch.no_grad():
        logits = model(**collator.prompts([row]).model_inputs()).logits[0, -1]
    return float(logits[ids[0]] - logits[ids[1]])


def generate_one(model, collator: Collator, row: dict) -> str:
    """Greedy reply to one prompt with a plain ``generate`` call (no batching, no padding)."""
    batch = collator.prompts([row])
    new = model.generate(batch.input_ids, batch.attention_mask, batch.history_ids, batch.item_slot_ids,
                         max_new_tokens=MAX_NEW, do_sample=False, pad_token_id=collator.pad_id,
                         eos_token_id=sorted(collator.encoder.ends))
    return collator.encoder.tokenizer.decode(new[0], skip_special_tokens=True).strip()
