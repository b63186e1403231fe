"""Hand-made evaluation rows (the shape ``build-alignment-data`` writes) and an oracle LM.

The oracle answers every prompt with what the test wants (by default the row's own response),
through the same ``generate`` interface as ``AlignedLM``: new token ids, and the scores of the
first step passed to the logits processors (where the evaluation reads the Yes/No logits).
So a test can check that a model known to be right scores exactly 1.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from recexp.llm.collate import Collator
from recexp.tasks.forms import LIST_SEPARATOR

TITLES = ["Space Quest", "Mario Kart 8", "Zelda: Breath of the Wild", "Tetris", "Doom", "Myst", "Halo 3", "Portal"]
SYSTEM = "You are an assistant that explains a recommender system."


def row(task: str, subtask: str, prompt: str, response: str, *, user_id: int = 0, position: int = 3,
        form: str = "behaviour", **meta: Any) -> dict[str, Any]:
    return {
        "task": task, "form": form, "split": "test", "user_id": user_id, "position": position,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
        "response": response, "history_ids": [], "item_slot_ids": [],
        "meta": json.dumps({"subtask": subtask, **meta}, sort_keys=True, separators=(",", ":")),
    }


def titles_of(ids: Sequence[int]) -> str:
    return LIST_SEPARATOR.join(TITLES[i] for i in ids)


def rows_by_task(form: str = "behaviour") -> dict[str, list[dict[str, Any]]]:
    """A few rows per evaluated task; answers are item ids into :data:`TITLES`."""
    return {
        "t1": [row("t1", "uid2next", f"User {u}: which item next?", TITLES[u + 1], user_id=u, item_id=u + 1, form=form)
               for u in range(3)],
        "t2": [row("t2", "uidiid2rank", "Rank Tetris, Space Quest, Mario Kart 8.", titles_of([1, 0, 3]),
                   shown=[3, 0, 1], ranked=[1, 0, 3], form=form)],
        "t3": [row("t3", "uidiid2binary", "Will user 4 like Doom?", "Yes", user_id=4, item_id=4, form=form),
               row("t3", "uidiid2binary", "Will user 4 like Myst?", "No", user_id=4, item_id=5, form=form)],
        "t6": [row("t6", "uid2hist", "What did user 5 see?", titles_of([0, 2, 6]), user_id=5, shown=[0, 2, 6], form=form)],
        "item-recovery": [row("t4", "iid2title", "What is item 7 called?", TITLES[7], user_id=-1, position=-1,
                              item_id=7, form=form)],
    }


Answerer = Callable[[dict[str, Any]], list[str]]


class OracleLM(nn.Module):
    """Answers each prompt with ``answer(row)`` (the first answer for greedy decoding, all of them
    as beams); the first step's scores favour the first token of the first answer."""

    def __init__(self, collator: Collator, rows: Sequence[dict[str, Any]], answer: Answerer | None = None) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # gives the generation code a device
        self.tokenizer = collator.encoder.tokenizer
        answer = answer or (lambda r: [r["response"]])
        self.answers = {tuple(collator.encoder.encode_prompt(r).input_ids): answer(r) for r in rows}
        self.calls = 0

    def _ids(self, text: str, eos: int) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + [eos]

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, history_ids: Any = None,
                 item_slot_ids: Any = None, *, logits_processor: Any = None, max_new_tokens: int = 8,
                 num_return_sequences: int = 1, pad_token_id: int = 0, eos_token_id: Any = None,
                 **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        eos = eos_token_id[0] if isinstance(eos_token_id, (list, tuple)) else int(eos_token_id)
        answers = []
        for ids, mask in zip(input_ids, attention_mask):
            texts = self.answers[tuple(ids[mask.bool()].tolist())]
            answers += [self._ids(t, eos)[:max_new_tokens] for t in texts[:num_return_sequences]]
        scores = torch.zeros(len(answers), len(self.tokenizer))
        scores[torch.arange(len(answers)), torch.tensor([a[0] for a in answers])] = 10.0
        for processor in logits_processor or []:
            scores = processor(input_ids, scores)
        width = max(len(a) for a in answers)
        return torch.tensor([a + [pad_token_id] * (width - len(a)) for a in answers])
