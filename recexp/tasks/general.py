"""T5 general instructions: chats from a JSON-lines file, mixed into every form's train split.

Each line is ``{"messages": [{"role": ..., "content": ...}, ...]}`` (roles system/user/assistant)
or ShareGPT's ``{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}``; the last
turn must be the assistant's (it becomes ``response``), at least one user turn must come
before it. Every content is escaped like a title (newlines kept), so a chat cannot create
slots or turns either. Unusable lines are skipped and counted.

Quota per form: ``round(general_ratio * train rows of the other tasks in that form)``, capped
by the usable lines. Lines are taken in one seeded order, so a smaller quota is a prefix of a
larger one and every form gets the same chats first.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from recexp.errors import DataError
from recexp.tasks.context import BuildContext, task_rng
from recexp.tasks.rows import RowBuffer, meta_json
from recexp.tasks.sanitize import escape_text

Conversation = list[dict[str, str]]
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def parse_conversation(line: str) -> Conversation | None:
    """The escaped turns of one JSON line, or None when the line is not a usable chat."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(record, dict):
        return None
    turns = _turns(record)
    if turns is None or len(turns) < 2 or turns[-1]["role"] != "assistant":
        return None
    if not any(t["role"] == "user" for t in turns[:-1]) or not all(t["content"] for t in turns):
        return None
    return turns


def _turns(record: dict[str, Any]) -> Conversation | None:
    """``[{"role", "content"}]`` from either supported layout; None on any malformed turn."""
    if isinstance(record.get("messages"), list):
        raw = [(m.get("role"), m.get("content")) for m in record["messages"] if isinstance(m, dict)]
        expected = len(record["messages"])
    elif isinstance(record.get("conversations"), list):
        raw = [(_SHAREGPT_ROLES.get(m.get("from")), m.get("value")) for m in record["conversations"] if isinstance(m, dict)]
        expected = len(record["conversations"])
    else:
        return None
    if len(raw) != expected or any(role not in ("system", "user", "assistant") or not isinstance(text, str) for role, text in raw):
        return None
    return [{"role": role, "content": escape_text(text)} for role, text in raw]


def read_general(path: str, endpoint_url: str | None = None) -> tuple[list[Conversation], int]:
    """``(usable chats in file order, skipped lines)`` of the JSON-lines file at ``path``."""
    from recexp.store import open_fs

    fs, fs_path = open_fs(path, endpoint_url)
    try:
        with fs.open(fs_path, "r", encoding="utf-8", errors="replace") as f:
            lines = [line for line in f if line.strip()]
    except FileNotFoundError:
        raise DataError(f"tasks.general_instructions: file not found: {path}") from None
    chats = [parse_conversation(line) for line in lines]
    usable = [c for c in chats if c is not None]
    return usable, len(chats) - len(usable)


def general_quota(train_rows: Mapping[str, int], ratio: float, available: int) -> dict[str, int]:
    """General rows per form: ``ratio`` times that form's other train rows, capped."""
    return {form: min(available, int(round(ratio * rows))) for form, rows in sorted(train_rows.items())}


def build_general(chats: Sequence[Conversation], quota: Mapping[str, int], ctx: BuildContext) -> pa.Table:
    """T5 rows: for each form, the first ``quota[form]`` chats in the seeded order."""
    out = RowBuffer()
    order = task_rng(ctx.params.seed, "t5").permutation(len(chats))
    for form, n in quota.items():
        for index in order[:n].tolist():
            chat = chats[index]
            out.add_messages(
                task="t5", form=form, split="train", user_id=-1, position=-1, messages=chat[:-1],
                response=chat[-1]["content"], history_ids=(), item_slot_ids=(),
                meta=meta_json(subtask="general", chat=index),
            )
    return out.table()
