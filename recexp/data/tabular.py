"""Parsers for tabular sources: CSV lines (one block at a time) and Parquet (Arrow tables).

Columns are named by :class:`~recexp.config.DataConfig`: ``user_field``, ``item_field``,
``time_field`` and ``rating_field`` for interactions, ``item_field`` and ``title_field`` for
items (plus ``brand``, ``categories``/``category``/``class`` and ``description`` when present).
User and item ids (and the item title) are required columns: a missing one is a
:class:`~recexp.errors.DataError` naming the file. Without a time column the line (row)
number is the timestamp; a rating column is optional and an empty/null rating is null.

Time values: an integer, a float (floored to whole seconds), or an ISO-8601 date/datetime
(``2020-05-01``, ``2020-05-01T12:30:00Z``, ``2020-05-01 12:30:00+02:00``; no offset = UTC),
converted to epoch seconds.

CSV: a header line, excel dialect (``,`` separated, ``"`` quoting, so quoted fields may
contain commas). Each line is parsed on its own, so a quoted field spanning lines is not
supported: its lines are rejected (an unterminated quote, or a wrong number of columns).
Blank lines are skipped silently.

Parquet: :func:`from_arrow_interactions` and :func:`from_arrow_items` convert a batch with
Arrow compute kernels; rows with a null/empty id or an unusable time or rating become rejects
whose text is the row as JSON. A NaN rating is read as null (pandas writes missing floats as
NaN). List-valued item text (``categories``, ``description``) is joined per row in Python;
item catalogs are far smaller than interaction logs.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recexp.config import DataConfig
from recexp.data.parsing import (
    CATEGORY_COLUMNS,
    FLOAT32_MAX,
    FieldError,
    category_value,
    delimited_interactions,
    delimited_items,
    header_columns,
    split_csv,
    text_rating,
    text_time,
    text_value,
)
from recexp.data.schema import INTERACTIONS, ITEMS, MAX_REJECT_TEXT, REJECTS
from recexp.errors import DataError

# Epoch-second floats beyond this do not fit int64 (2**63 ~ 9.22e18).
_MAX_TIME_FLOAT = 9.2e18


def parse_csv_interactions(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, header: bytes | None, cfg: DataConfig, order_base: int
) -> tuple[pa.Table, pa.Table]:
    """CSV interaction lines -> (INTERACTIONS, REJECTS)."""
    columns = header_columns(header, source, split_csv)
    fields = (cfg.user_field, cfg.item_field, cfg.time_field, cfg.rating_field)
    return delimited_interactions(lines, line_nos, source, order_base, split_csv, columns, fields, text_time)


def parse_csv_items(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, header: bytes | None, cfg: DataConfig, order_base: int
) -> tuple[pa.Table, pa.Table]:
    """CSV item lines -> (ITEMS, REJECTS); an empty title gives a row with a null title."""
    columns = header_columns(header, source, split_csv)
    return delimited_items(lines, line_nos, source, order_base, split_csv, columns, cfg.item_field, cfg.title_field)


# ----------------------------------------------------------------------------- Arrow (Parquet)


def from_arrow_interactions(
    table: pa.Table, source: str, cfg: DataConfig, order_base: int, first_row: int
) -> tuple[pa.Table, pa.Table]:
    """A Parquet batch -> (INTERACTIONS, REJECTS).

    ``first_row`` is the 1-based row number of the batch's first row in the file (1 for the
    first batch): row numbers play the part of line numbers (``order = order_base + row``,
    the reject's ``line``, and the timestamp when there is no time column).
    """
    require_arrow_columns(table, (cfg.user_field, cfg.item_field), source)
    n = table.num_rows
    row_nos = pa.array(np.arange(first_row, first_row + n, dtype=np.int64))
    users, user_why = arrow_ids(column(table, cfg.user_field), cfg.user_field, source)
    items, item_why = arrow_ids(column(table, cfg.item_field), cfg.item_field, source)
    times, time_why = row_nos, None
    if cfg.time_field in table.column_names:
        times, time_why = arrow_times(column(table, cfg.time_field), cfg.time_field, source)
    ratings, rating_why = pa.nulls(n, pa.float32()), None
    if cfg.rating_field in table.column_names:
        ratings, rating_why = arrow_ratings(column(table, cfg.rating_field), cfg.rating_field, source)
    orders = pc.add(row_nos, pa.scalar(order_base, pa.int64()))
    good = pa.Table.from_arrays([users, items, times, ratings, orders], schema=INTERACTIONS)
    return split_rejects(good, table, [user_why, item_why, time_why, rating_why], row_nos, source)


def from_arrow_items(
    table: pa.Table, source: str, cfg: DataConfig, order_base: int, first_row: int
) -> tuple[pa.Table, pa.Table]:
    """A Parquet batch of item metadata -> (ITEMS, REJECTS); ``first_row`` as above."""
    require_arrow_columns(table, (cfg.item_field, cfg.title_field), source)
    row_nos = pa.array(np.arange(first_row, first_row + table.num_rows, dtype=np.int64))
    items, item_why = arrow_ids(column(table, cfg.item_field), cfg.item_field, source)
    category = next((name for name in CATEGORY_COLUMNS if name in table.column_names), None)
    texts = [
        arrow_text(table, cfg.title_field, text_value),
        arrow_text(table, "brand", text_value),
        arrow_text(table, category, category_value),
        arrow_text(table, "description", text_value),
    ]
    orders = pc.add(row_nos, pa.scalar(order_base, pa.int64()))
    good = pa.Table.from_arrays([items, *texts, orders], schema=ITEMS)
    return split_rejects(good, table, [item_why], row_nos, source)


def require_arrow_columns(table: pa.Table, names: Sequence[str], source: str) -> None:
    """A file error naming every required column that ``table`` lacks, and the file."""
    missing = [name for name in names if name not in table.column_names]
    if missing:
        raise DataError(
            f"{source}: missing column(s) {', '.join(repr(m) for m in missing)}"
            f" (columns: {', '.join(table.column_names) or 'none'})"
        )


def column(table: pa.Table, name: str) -> pa.Array:
    """One column as a single Array (kernels and ``from_arrays`` then see one chunk)."""
    return table.column(name).combine_chunks()


def _reason_where(condition: pa.Array, reason: str) -> pa.Array:
    """``reason`` where ``condition`` is true, null elsewhere (null condition counts as false)."""
    return pc.if_else(pc.fill_null(condition, False), pa.scalar(reason), pa.scalar(None, pa.string()))


def arrow_ids(values: pa.Array, name: str, source: str) -> tuple[pa.Array, pa.Array]:
    """Ids as stripped strings, with a reason for null or empty ones."""
    text = pc.utf8_trim_whitespace(cast_or_fail(values, pa.string(), name, source))
    why = pc.coalesce(
        _reason_where(pc.is_null(text), f"null value for '{name}'"),
        _reason_where(pc.equal(text, ""), f"empty value for '{name}'"),
    )
    return text, why


def cast_or_fail(values: pa.Array, to: pa.DataType, name: str, source: str) -> pa.Array:
    """Cast a column whose type cannot be anything else; failure is a file error."""
    try:
        return values.cast(to)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise DataError(f"{source}: column '{name}' of type {values.type} cannot be read as {to}") from None


def arrow_times(values: pa.Array, name: str, source: str) -> tuple[pa.Array, pa.Array]:
    """Epoch seconds (int64) from an integer, float, timestamp, date or string column."""
    kind = values.type
    null_why = _reason_where(pc.is_null(values), f"null value for '{name}'")
    if pa.types.is_timestamp(kind):
        # Sub-second parts are truncated; the int64 of a timestamp is UTC whatever its zone.
        return values.cast(pa.timestamp("s", kind.tz), safe=False).cast(pa.int64()), null_why
    if pa.types.is_date(kind):
        return values.cast(pa.timestamp("s")).cast(pa.int64()), null_why
    if pa.types.is_floating(kind):
        return _float_times(values, name, null_why)
    if pa.types.is_integer(kind) or _is_text(kind) or pa.types.is_null(kind):
        for target in (pa.int64(), pa.float64()):
            try:
                cast = values.cast(target)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
            return (cast, null_why) if target == pa.int64() else _float_times(cast, name, null_why)
        if not pa.types.is_integer(kind):
            try:  # naive ISO dates/datetimes (read as UTC), still vectorised
                return values.cast(pa.timestamp("s")).cast(pa.int64()), null_why
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                pass
        # Offsets, fractions, or a mix with unusable values: the per-value parser gives exact reasons.
        return python_column(values, name, lambda v: text_time(str(v), name), pa.int64(), 0)
    raise DataError(f"{source}: time column '{name}' has unsupported type {kind}")


def _is_text(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _float_times(values: pa.Array, name: str, null_why: pa.Array) -> tuple[pa.Array, pa.Array]:
    """Floored float seconds; NaN, infinities and values beyond int64 are rejects."""
    usable = pc.and_(pc.is_finite(values), pc.less_equal(pc.abs(values), _MAX_TIME_FLOAT))
    why = pc.coalesce(null_why, _reason_where(pc.invert(usable), f"out of range for '{name}'"))
    floored = pc.floor(pc.if_else(pc.fill_null(usable, False), values, 0.0))
    return floored.cast(pa.int64()), why


def arrow_ratings(values: pa.Array, name: str, source: str) -> tuple[pa.Array, pa.Array]:
    """float32 ratings: null and NaN -> null; infinities and values beyond float32 -> rejects."""
    try:
        numbers = values.cast(pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        if not _is_text(values.type):
            raise DataError(f"{source}: rating column '{name}' has unsupported type {values.type}") from None
        numbers, why = python_column(values, name, lambda v: text_rating(v, name), pa.float64(), None)
    else:
        why = pa.nulls(len(values), pa.string())
    numbers = pc.if_else(pc.fill_null(pc.is_nan(numbers), False), pa.scalar(None, pa.float64()), numbers)
    too_big = pc.greater(pc.abs(numbers), FLOAT32_MAX)
    why = pc.coalesce(why, _reason_where(too_big, f"out of range for '{name}'"))
    numbers = pc.if_else(pc.fill_null(too_big, False), pa.scalar(None, pa.float64()), numbers)
    return numbers.cast(pa.float32()), why


def python_column(
    values: pa.Array, name: str, convert: Callable[[Any], Any], to: pa.DataType, placeholder: Any
) -> tuple[pa.Array, pa.Array]:
    """Per-value fallback: ``convert`` each value; a :class:`FieldError` becomes the row's reason."""
    out, why = [], []
    for value in values.to_pylist():
        if value is None:
            out.append(placeholder)
            why.append(f"null value for '{name}'")
            continue
        try:
            out.append(convert(value))
            why.append(None)
        except FieldError as exc:
            out.append(placeholder)
            why.append(str(exc))
    return pa.array(out, to), pa.array(why, pa.string())


def arrow_text(table: pa.Table, name: str | None, to_text: Callable[[Any, str], str | None]) -> pa.Array:
    """An optional text column: stripped strings, empty -> null; absent -> all null.

    Lists (and other types Arrow cannot cast to string) are joined per row by ``to_text``
    (:func:`text_value` or :func:`category_value`, as for JSON metadata); a value it cannot
    use becomes null.
    """
    if name is None or name not in table.column_names:
        return pa.nulls(table.num_rows, pa.string())
    values = column(table, name)
    try:
        text = pc.utf8_trim_whitespace(values.cast(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        text = pa.array([_safe_text(to_text, v, name) for v in values.to_pylist()], pa.string())
    return pc.if_else(pc.fill_null(pc.equal(text, ""), False), pa.scalar(None, pa.string()), text)


def _safe_text(to_text: Callable[[Any, str], str | None], value: Any, name: str) -> str | None:
    try:
        return to_text(value, name)
    except FieldError:
        return None


def split_rejects(
    good: pa.Table, original: pa.Table, reasons: list[pa.Array | None], row_nos: pa.Array, source: str
) -> tuple[pa.Table, pa.Table]:
    """Move the rows with a reason (first non-null of ``reasons``) from ``good`` to rejects."""
    present = [r for r in reasons if r is not None]
    reason = pc.coalesce(*present) if len(present) > 1 else present[0]
    bad = pc.is_valid(reason)
    if not pc.any(bad).as_py():
        return good, REJECTS.empty_table()
    rows = original.filter(bad).to_pylist()
    texts = pa.array([json.dumps(row, default=str, ensure_ascii=False)[:MAX_REJECT_TEXT] for row in rows], pa.string())
    lines = row_nos.filter(bad)
    arrays = [pa.array([source] * len(lines), pa.string()), lines, reason.filter(bad), texts]
    return good.filter(pc.invert(bad)), pa.Table.from_arrays(arrays, schema=REJECTS)
