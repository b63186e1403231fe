"""Parsers for RecBole atomic files (``.inter``, ``.item``), one block of lines at a time.

Atomic files are tab-separated with a header naming each column ``name:type`` (types
``token``, ``token_seq``, ``float``, ``float_seq``; ``token_seq`` values are space-separated).
Column names come from :class:`~recexp.config.DataConfig` (``user_field``, ``item_field``,
``time_field``, ``rating_field``, ``title_field``).

``.inter`` files come in two layouts, told apart by the header:

* one interaction per row: ``user_id:token item_id:token [rating:float] [timestamp:float]``;
  a float timestamp is floored to whole seconds; without a time column the line number is
  the timestamp (file order is time order); an empty rating is null;
* one sequence per row: ``user_id:token item_id_list:token_seq item_id:token`` (the list
  column is ``item_field + "_list"``): exploded into one interaction per history item plus
  the target, with timestamp = position in the sequence (0, 1, 2, ...) and the line's
  ``order`` shared by all of them.

``.item`` files: id and title columns are required; ``brand``, ``categories``/``category``/
``class`` and ``description`` are read when present. Text is kept as written (a
``token_seq`` such as ``Animation Children's Comedy`` stays space-separated, since its tokens
may not be words); only surrounding whitespace is stripped.

A required column missing from the header is a :class:`~recexp.errors.DataError` (the whole
file is unusable); a bad line is a reject. Blank lines are skipped silently.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

from recexp.config import DataConfig
from recexp.data.parsing import (
    FieldError,
    InteractionRow,
    Rejects,
    delimited_interactions,
    delimited_items,
    header_columns,
    interactions_table,
    iter_fields,
    require_column,
    split_tab,
    text_id,
    text_number_time,
)

LIST_SUFFIX = "_list"
"""RecBole's default suffix of sequence columns (``item_id_list``)."""


def recbole_columns(header: bytes | None, source: str) -> list[str]:
    """Column names of an atomic-file header, without their ``:type``."""
    names = []
    for column in header_columns(header, source, split_tab):
        name, sep, _type = column.rpartition(":")
        names.append(name if sep else column)
    return names


def parse_recbole_inter(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, header: bytes | None, cfg: DataConfig, order_base: int
) -> tuple[pa.Table, pa.Table]:
    """``.inter`` lines -> (INTERACTIONS, REJECTS), either layout (see the module doc)."""
    columns = recbole_columns(header, source)
    if cfg.item_field + LIST_SUFFIX in columns:
        return parse_sequences(lines, line_nos, source, columns, cfg, order_base)
    fields = (cfg.user_field, cfg.item_field, cfg.time_field, cfg.rating_field)
    return delimited_interactions(lines, line_nos, source, order_base, split_tab, columns, fields, text_number_time)


def parse_sequences(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, columns: list[str], cfg: DataConfig, order_base: int
) -> tuple[pa.Table, pa.Table]:
    """Sequence rows (``user, item_list, item``) exploded into one interaction per item."""
    list_name = cfg.item_field + LIST_SUFFIX
    ui = require_column(columns, cfg.user_field, source, "user id")
    li = require_column(columns, list_name, source, "item sequence")
    ii = require_column(columns, cfg.item_field, source, "target item id")
    rejects, rows = Rejects(source), []
    for no, text, row in iter_fields(lines, line_nos, rejects, split_tab, len(columns)):
        try:
            user, target = text_id(row, ui, cfg.user_field), text_id(row, ii, cfg.item_field)
        except FieldError as exc:
            rejects.add(no, str(exc), text)
            continue
        rows.extend(sequence_rows(user, row[li].split() + [target], order_base + no))
    return interactions_table(rows), rejects.table()


def sequence_rows(user: str, items: list[str], order: int) -> list[InteractionRow]:
    """One interaction per item; the timestamp is the position, the rating null."""
    return [(user, item, position, None, order) for position, item in enumerate(items)]


def parse_recbole_item(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, header: bytes | None, cfg: DataConfig, order_base: int
) -> tuple[pa.Table, pa.Table]:
    """``.item`` lines -> (ITEMS, REJECTS); an empty title gives a row with a null title."""
    columns = recbole_columns(header, source)
    return delimited_items(lines, line_nos, source, order_base, split_tab, columns, cfg.item_field, cfg.title_field)
