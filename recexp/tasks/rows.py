"""The row schema of every alignment data set, row building, and the slot check.

A row is one chat example: ``messages`` (system? + user turn, or a longer chat for T5) is the
prompt and ``response`` the assistant answer. ``history_ids`` has one id list per ``<user>``
slot and ``item_slot_ids`` one id per ``<item>`` slot, in the order the slots appear in the
prompt; :func:`check_row` asserts exactly that for every row, so a row whose text and slot
ids disagree can never be written.

Rows are collected column-wise in a :class:`RowBuffer`, converted to Arrow every
``CHUNK_ROWS`` rows (bounding the Python objects alive), and finally stable-sorted by
``SORT_KEYS``, so a file's content depends only on which rows it holds.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from recexp.tasks.context import BuildContext
from recexp.tasks.forms import Piece, fill
from recexp.tasks.sanitize import ITEM_SLOT, USER_SLOT

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string())])

ROW_SCHEMA = pa.schema(
    [
        ("task", pa.string()),
        ("form", pa.string()),
        ("split", pa.string()),
        ("user_id", pa.int32()),
        ("position", pa.int32()),
        ("messages", pa.list_(MESSAGE)),
        ("response", pa.string()),
        ("history_ids", pa.list_(pa.list_(pa.int32()))),
        ("item_slot_ids", pa.list_(pa.int32())),
        ("meta", pa.string()),
    ]
)
"""``task`` t1..t7 or explain; ``form`` behaviour/intention/hybrid; ``split`` train/test;
``user_id`` -1 for item and general rows; ``position`` the history length t (-1 where none);
``meta`` a JSON object (sub-task, template index, scores, candidate order...)."""

SORT_KEYS = [(name, "ascending") for name in ("task", "form", "split", "user_id", "position")]
CHUNK_ROWS = 20_000


class RowError(ValueError):
    """A row whose slots and ids disagree, or whose response contains a slot token."""


def check_row(messages: Sequence[dict[str, str]], response: str, users: Sequence[Any], items: Sequence[int]) -> None:
    """Slot tokens in the prompt must match the slot ids exactly; none may be in the response."""
    text = "\n".join(m["content"] for m in messages)
    if text.count(USER_SLOT) != len(users) or text.count(ITEM_SLOT) != len(items):
        raise RowError(
            f"prompt has {text.count(USER_SLOT)} {USER_SLOT} / {text.count(ITEM_SLOT)} {ITEM_SLOT} slots "
            f"but {len(users)} history id lists / {len(items)} item ids: {text[:300]!r}"
        )
    if USER_SLOT in response or ITEM_SLOT in response:
        raise RowError(f"response contains a slot token: {response[:300]!r}")


def meta_json(**fields: Any) -> str:
    """Compact, key-sorted JSON: identical input gives identical bytes."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def prompt_messages(system: str, prompt: str) -> list[dict[str, str]]:
    """``[system?, user]`` chat turns of a single-turn prompt."""
    turns = [{"role": "system", "content": system}] if system else []
    return turns + [{"role": "user", "content": prompt}]


class RowBuffer:
    """Collects checked rows column-wise; :meth:`table` returns them sorted.

    Nested columns are kept flat (values + offsets) and assembled into Arrow list arrays in
    bulk, which is much cheaper than converting one Python dict per message."""

    _SCALARS = ("task", "form", "split", "user_id", "position", "response", "meta")

    def __init__(self, system: str = "") -> None:
        self.system = system
        self._batches: list[pa.RecordBatch] = []
        self._rows = 0
        self._reset()

    def _reset(self) -> None:
        self._scalars: dict[str, list[Any]] = {name: [] for name in self._SCALARS}
        self._roles: list[str] = []
        self._contents: list[str] = []
        self._message_offsets = [0]
        self._history_values: list[int] = []
        self._history_inner = [0]  # offsets of each id list into the values
        self._history_outer = [0]  # offsets of each row into the id lists
        self._item_values: list[int] = []
        self._item_offsets = [0]

    def __len__(self) -> int:
        return self._rows

    def add_prompt(
        self, *, task: str, form: str, split: str, user_id: int, position: int, prompt: Piece, response: str, meta: str
    ) -> None:
        """A single-turn row whose user turn is ``prompt`` (slots taken from the piece)."""
        messages = prompt_messages(self.system, prompt.text)
        self.add_messages(
            task=task, form=form, split=split, user_id=user_id, position=position, messages=messages,
            response=response, history_ids=prompt.users, item_slot_ids=prompt.items, meta=meta,
        )

    def add_messages(
        self,
        *,
        task: str,
        form: str,
        split: str,
        user_id: int,
        position: int,
        messages: list[dict[str, str]],
        response: str,
        history_ids: Sequence[Sequence[int]],
        item_slot_ids: Sequence[int],
        meta: str,
    ) -> None:
        """Any row; checked before it is kept."""
        check_row(messages, response, history_ids, item_slot_ids)
        for name, value in zip(self._SCALARS, (task, form, split, user_id, position, response, meta)):
            self._scalars[name].append(value)
        for message in messages:
            self._roles.append(message["role"])
            self._contents.append(message["content"])
        self._message_offsets.append(len(self._roles))
        for ids in history_ids:
            self._history_values.extend(ids)
            self._history_inner.append(len(self._history_values))
        self._history_outer.append(len(self._history_inner) - 1)
        self._item_values.extend(item_slot_ids)
        self._item_offsets.append(len(self._item_values))
        self._rows += 1
        if len(self._scalars["task"]) >= CHUNK_ROWS:
            self._flush()

    def _lists(self, offsets: list[int], values: pa.Array) -> pa.Array:
        return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), values)

    def _flush(self) -> None:
        if not self._scalars["task"]:
            return
        contents = [pa.array(self._roles, pa.string()), pa.array(self._contents, pa.string())]
        columns = {name: pa.array(values, ROW_SCHEMA.field(name).type) for name, values in self._scalars.items()}
        columns["messages"] = self._lists(self._message_offsets, pa.StructArray.from_arrays(contents, fields=list(MESSAGE)))
        inner = self._lists(self._history_inner, pa.array(self._history_values, pa.int32()))
        columns["history_ids"] = self._lists(self._history_outer, inner)
        columns["item_slot_ids"] = self._lists(self._item_offsets, pa.array(self._item_values, pa.int32()))
        self._batches.append(pa.RecordBatch.from_arrays([columns[n] for n in ROW_SCHEMA.names], schema=ROW_SCHEMA))
        self._reset()

    def table(self) -> pa.Table:
        """All rows, stable-sorted by ``SORT_KEYS`` (generation order breaks ties)."""
        self._flush()
        table = pa.Table.from_batches(self._batches, schema=ROW_SCHEMA)
        if table.num_rows:
            table = table.take(pc.sort_indices(table, sort_keys=SORT_KEYS))
        return table.combine_chunks()


def emit(
    out: RowBuffer,
    ctx: BuildContext,
    *,
    task: str,
    subtask: str,
    forms: Iterable[str],
    split: str,
    user_id: int,
    position: int,
    u: float,
    pieces: Callable[[str], Mapping[str, Piece]],
    response: str,
    **meta: Any,
) -> None:
    """One row per form of the same example: the template drawn by ``u``, filled with that
    form's ``pieces(form)``; ``meta`` gets the sub-task and template index added."""
    metas: dict[int, str] = {}  # forms usually share the template index: encode once
    for form in forms:
        template = ctx.templates.pick(subtask, form, u)
        if template.index not in metas:
            metas[template.index] = meta_json(subtask=subtask, template=template.index, **meta)
        out.add_prompt(
            task=task, form=form, split=split, user_id=user_id, position=position,
            prompt=fill(template, pieces(form)), response=response, meta=metas[template.index],
        )
