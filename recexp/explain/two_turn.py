"""Yes / No answers and explanations of explanation prompt rows, shared by the explain stage and Serve.

An aligned model trained on short answers (T1 titles, T3 ``Yes`` / ``No``) answers the
``uidiid2explan`` prompt with ``Yes`` and stops, so the explanation is asked for in a second turn:

1. **turn 1**: the prompt row as :mod:`recexp.tasks.online` builds it (the prompt the model was
   aligned on, unchanged); one forward over it (a one-token :func:`generate_batched`, greedy)
   gives the ``Yes`` and ``No`` logits at the answer position: ``margin`` = logit(Yes) -
   logit(No), the answer ``Yes`` when ``margin >= 0`` (the RecExplainer T3 reading);
2. **turn 2**: the same turns + the assistant's answer word + the user's ``follow_up`` ("Why? ...",
   :func:`recexp.tasks.online.follow_up_row`); the explanation is generated from it with the
   decoding options and ``max_new_tokens``. With one sequence per row, turn 2 goes on from turn
   1's KV cache (:mod:`recexp.explain.continuation`: only the ~25 new tokens are prefilled);
   otherwise (beams, several samples) :func:`generate_batched` prefills the whole turn-2 prompt.
   The slot tokens stay in the first user turn, so the row's ``history_ids`` / ``item_slot_ids``
   still apply.

``follow_up`` None or empty keeps the one-pass reading: the explanation is generated from the
prompt itself and the margin read at its first generated token (after the decoding's logits
processors, e.g. the repetition penalty).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from transformers import PreTrainedTokenizerBase

from recexp.explain.continuation import answer_then_follow_up, continuable
from recexp.explain.generate import Generation, generate_batched
from recexp.llm.aligned import AlignedLM
from recexp.llm.collate import Collator
from recexp.llm.errors import SlotError
from recexp.tasks.interest import LABELS
from recexp.tasks.online import follow_up_row


class Explanations(NamedTuple):
    """Per row, in input order."""

    margins: list[float]
    """logit(Yes) - logit(No) at the answer position."""
    texts: list[str]
    """The explanation (special tokens skipped, whitespace stripped)."""
    new_tokens: list[int]
    """Tokens the explanation generated (up to and including its end-of-turn token)."""
    total_new_tokens: int
    """Sum of ``new_tokens`` (the answer token of turn 1 is not counted)."""

    @property
    def answers(self) -> list[str]:
        """``yes`` / ``no`` per row."""
        return [answer_word(m).lower() for m in self.margins]


def answer_token_ids(tokenizer: PreTrainedTokenizerBase) -> tuple[int, int]:
    """First token ids of ``Yes`` and ``No`` as an answer starts (right after the generation prompt)."""
    yes, no = (tokenizer(word, add_special_tokens=False)["input_ids"] for word in LABELS)
    if not yes or not no or yes[0] == no[0]:
        raise SlotError("the tokenizer does not give 'Yes' and 'No' distinct first tokens")
    return int(yes[0]), int(no[0])


def answer_word(margin: float) -> str:
    """``Yes`` for ``margin >= 0``, else ``No`` (as the T3 training responses spell them)."""
    return LABELS[0] if margin >= 0 else LABELS[1]


def _margins(generation: Generation) -> list[float]:
    return [yes - no for yes, no in generation.first_scores or []]


def _explanations(margins: list[float], generation: Generation) -> Explanations:
    counts = [c[0] for c in generation.new_tokens]
    return Explanations(margins, [t[0] for t in generation.texts], counts, sum(counts))


def answer_and_explain(
    model: AlignedLM,
    collator: Collator,
    rows: Sequence[Mapping[str, Any]],
    *,
    batch_size: int,
    max_new_tokens: int,
    yes_no_ids: Sequence[int],
    follow_up: str | None,
    **decoding: Any,
) -> Explanations:
    """Answers and explanations of explanation prompt ``rows`` (see the module doc); ``decoding``:
    extra ``generate`` keywords for the explanation (``do_sample``, ``num_beams``...)."""
    common = {"batch_size": batch_size}
    if not follow_up:
        gen = generate_batched(model, collator, rows, max_new_tokens=max_new_tokens, score_ids=yes_no_ids,
                               **common, **decoding)
        return _explanations(_margins(gen), gen)
    if continuable(decoding):  # turn 2 goes on from turn 1's KV cache
        margins, texts, counts = answer_then_follow_up(
            model, collator, rows, lambda row, m: follow_up_row(row, answer_word(m), follow_up),
            max_new_tokens=max_new_tokens, yes_no_ids=yes_no_ids, **common, **decoding)
        return Explanations(margins, texts, counts, sum(counts))
    margins = _margins(generate_batched(model, collator, rows, max_new_tokens=1, score_ids=yes_no_ids, **common))
    turns = [follow_up_row(row, answer_word(m), follow_up) for row, m in zip(rows, margins)]
    gen = generate_batched(model, collator, turns, max_new_tokens=max_new_tokens, **common, **decoding)
    return _explanations(margins, gen)
