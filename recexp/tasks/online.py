"""Explanation prompts for arbitrary (history, item) pairs, at explain or serve time.

The rows are built exactly like the explanation rows of ``build-alignment-data``
(:mod:`recexp.tasks.interest`): the same ``uidiid2explan`` templates, the same form rendering
(:func:`~recexp.tasks.forms.history_piece`, :func:`~recexp.tasks.forms.item_piece`), the same
sanitised catalog, the same system message and the same slot check, so the aligned model
sees prompts of the kind it was trained on. Only the template choice differs: a fixed
``template_index`` (default 0) instead of a seeded draw, so the same request always gives the
same prompt (and the same ``prompt_hash`` downstream).

A row has the columns of :data:`~recexp.tasks.rows.ROW_SCHEMA` with ``split`` = ``"online"``,
``position`` = the history length and an empty ``response``; ``meta`` records the sub-task,
the template index and the item id.

The catalog can be the one ``build-alignment-data`` committed: ``build_catalog`` of
``catalog.parquet`` gives back the same titles (sanitising is idempotent).

Two-turn explanations (:mod:`recexp.explain.two_turn`) add a second turn to such a row:
:func:`follow_up_row` appends the model's answer word (``Yes`` / ``No``, spelt as the T3
responses) as an assistant turn and a plain-text user follow-up asking why
(:func:`follow_up_text`: the ``explain_followup`` template of the same index and form).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recexp.config import FORMS
from recexp.errors import DataError
from recexp.tasks.catalog import Catalog
from recexp.tasks.forms import fill, history_piece, item_piece
from recexp.tasks.interest import LABELS
from recexp.tasks.rows import check_row, meta_json, prompt_messages
from recexp.tasks.templates import TemplateSet, load_templates

SUBTASK = "uidiid2explan"
FOLLOW_UP = "explain_followup"
ONLINE_SPLIT = "online"


def check_request(catalog: Catalog, history: Sequence[int], item_id: int, where: str) -> np.ndarray:
    """The history as int64 ids; a :class:`DataError` naming ``where`` for empty or unknown ids."""
    ids = np.asarray(history, dtype=np.int64).reshape(-1)
    if not len(ids):
        raise DataError(f"{where}: empty history (an explanation needs at least one item)")
    unknown = [int(i) for i in ids.tolist() + [int(item_id)] if not 0 <= int(i) < len(catalog)]
    if unknown:
        raise DataError(f"{where}: unknown item id {unknown[0]} (the catalog has ids 0..{len(catalog) - 1})")
    return ids


def explain_row(
    catalog: Catalog, templates: TemplateSet, history: Sequence[int], item_id: int, *, form: str, max_hist: int,
    max_len: int, template_index: int = 0, user_id: int = -1, where: str = "request",
) -> dict[str, Any]:
    """One explanation prompt row (see the module doc); ``where`` names it in errors."""
    ids = check_request(catalog, history, item_id, where)
    template = templates.lists[SUBTASK][form][template_index]
    piece = fill(template, {
        "history": history_piece(form, ids, catalog, max_hist, max_len),
        "item": item_piece(form, int(item_id), catalog),
    })
    messages = prompt_messages(templates.system, piece.text)
    check_row(messages, "", piece.users, piece.items)
    return {
        "task": "explain", "form": form, "split": ONLINE_SPLIT, "user_id": int(user_id), "position": len(ids),
        "messages": messages, "response": "", "history_ids": [list(u) for u in piece.users],
        "item_slot_ids": list(piece.items),
        "meta": meta_json(subtask=SUBTASK, template=template.index, item_id=int(item_id)),
    }


def _check_options(templates: TemplateSet, form: str, template_index: int, max_hist: int, max_len: int) -> None:
    """Clear errors for a bad form, template index or window before any row is built."""
    if form not in FORMS:
        raise DataError(f"unknown form {form!r} (known: {', '.join(FORMS)})")
    count = len(templates.lists[SUBTASK][form])
    if not 0 <= template_index < count:
        raise DataError(f"template_index {template_index} out of range: {SUBTASK}/{form} has {count} templates")
    if max_hist < 1 or max_len < 1:
        raise DataError(f"max_hist and max_len must be >= 1, got {max_hist}, {max_len}")


def explain_rows(
    catalog: Catalog,
    histories: Sequence[Sequence[int]],
    item_ids: Sequence[int],
    *,
    form: str,
    max_hist: int,
    max_len: int,
    template_index: int = 0,
    templates: TemplateSet | None = None,
    user_ids: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """One row per ``(histories[i], item_ids[i])``, in order.

    ``max_hist``: titles shown (``tasks.max_hist``); ``max_len``: the recommender's history
    window (what a ``<user>`` slot carries); ``templates``: default the built-in set;
    ``user_ids``: recorded in the rows (default -1). Errors name the offending pair."""
    templates = templates or load_templates()
    _check_options(templates, form, template_index, max_hist, max_len)
    users = list(user_ids) if user_ids is not None else [-1] * len(histories)
    if not len(histories) == len(item_ids) == len(users):
        raise DataError(
            f"histories, item_ids and user_ids differ in length: {len(histories)}, {len(item_ids)}, {len(users)}"
        )
    return [
        explain_row(
            catalog, templates, history, item, form=form, max_hist=max_hist, max_len=max_len,
            template_index=template_index, user_id=user, where=f"pair {i} (user {user}, item {item})",
        )
        for i, (history, item, user) in enumerate(zip(histories, item_ids, users))
    ]


def follow_up_text(templates: TemplateSet, form: str, template_index: int = 0) -> str:
    """The plain-text "why?" turn asked after the answer: ``explain_followup`` template
    ``template_index`` of ``form`` (a clear error when there is none)."""
    if form not in FORMS:
        raise DataError(f"unknown form {form!r} (known: {', '.join(FORMS)})")
    options = templates.lists[FOLLOW_UP][form]
    if not 0 <= template_index < len(options):
        raise DataError(f"template_index {template_index} out of range: {FOLLOW_UP}/{form} has {len(options)} templates")
    return fill(options[template_index], {}).text


def follow_up_row(row: Mapping[str, Any], answer: str, follow_up: str) -> dict[str, Any]:
    """``row`` continued: its turns + the assistant's ``answer`` (one of ``LABELS``) + the user's
    ``follow_up``; slot ids unchanged (the slots stay in the first user turn)."""
    if answer not in LABELS:
        raise DataError(f"answer must be one of {LABELS}, got {answer!r}")
    messages = [*row["messages"], {"role": "assistant", "content": answer}, {"role": "user", "content": follow_up}]
    check_row(messages, "", row["history_ids"], row["item_slot_ids"])  # a follow-up with slot text fails here
    return {**row, "messages": messages}
