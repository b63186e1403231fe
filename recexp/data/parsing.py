"""Helpers shared by the source parsers: decoding, field checks, rejects and table building.

Every parser turns one block of raw lines into ``(good rows, rejects)`` (see
:mod:`recexp.data.amazon`, :mod:`recexp.data.recbole`, :mod:`recexp.data.tabular`). The rules
that make them behave alike live here:

* a line is decoded as strict UTF-8 (a trailing ``\\r`` and a leading BOM are removed); a line
  that is not UTF-8 is rejected with :data:`UNDECODABLE`;
* blank (whitespace-only) lines are skipped silently: they are neither rows nor rejects, so
  a trailing empty line or a ``\\r\\n`` file never counts against the reject budget;
* every other line becomes exactly one good row (or several, for RecBole sequence rows) or
  exactly one reject, whose reason is short and names the field at fault;
* per-row checks raise :class:`FieldError`; the block loops catch it and record the reject;
* good rows (interactions and items) carry ``order = order_base + line_no``.

Columns are gathered as Python tuples and turned into Arrow once per block, which is what
keeps the parsers at a few microseconds per line.
"""

from __future__ import annotations

import ast
import csv
import json
import math
import re
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

import pyarrow as pa

from recexp.data.schema import INTERACTIONS, ITEMS, MAX_REJECT_TEXT, REJECTS
from recexp.errors import DataError

UNDECODABLE = "undecodable bytes (not UTF-8)"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
FLOAT32_MAX = 3.4028234663852886e38
CATEGORY_JOIN = " > "
"""Joins the levels of one category path (``Video Games > PC > Games``)."""
CATEGORY_PATHS_JOIN = "; "
"""Joins several category paths (2014 ``categories`` is a list of paths)."""
DESCRIPTION_JOIN = " "
"""Joins the paragraphs of a list-valued description."""
CATEGORY_COLUMNS = ("categories", "category", "class")
"""Column names (RecBole ``.item``, CSV, Parquet) read as the item category, first found wins."""

InteractionRow = tuple[str, str, int, "float | None", int]
ItemRow = tuple[str, "str | None", "str | None", "str | None", "str | None", int]


class FieldError(ValueError):
    """A line that cannot be used; the message is the reject reason."""


def type_name(value: Any) -> str:
    """The JSON-ish name of ``value``'s type, for reasons (``null`` rather than ``NoneType``)."""
    return "null" if value is None else type(value).__name__


def short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, so a reason stays one short line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ----------------------------------------------------------------------------- decoding


def decode_lines(lines: Sequence[bytes]) -> list[str | None]:
    """Decode a block: one ``str`` per line (trailing ``\\r`` removed), ``None`` if not UTF-8.

    The whole block is decoded in one call first (the common, all-valid case); newlines
    never occur inside a UTF-8 multi-byte sequence, so splitting the result maps 1:1 to lines.
    """
    if not lines:
        return []
    try:
        joined = b"\n".join(lines).decode("utf-8")
    except UnicodeDecodeError:
        texts = [_decode_one(raw) for raw in lines]
    else:
        if "\r" in joined:
            # Only the one "\r" of a "\r\n" ending goes; a "\r" inside a line stays.
            joined = (joined + "\n").replace("\r\n", "\n")[:-1]
        texts = joined.split("\n")  # type: ignore[assignment]
    first = texts[0]
    if first is not None and first.startswith("\ufeff"):
        texts[0] = first[1:]  # a BOM can only start the file; json.loads would refuse it
    return texts


def _decode_one(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text[:-1] if text.endswith("\r") else text


def decode_header(header: bytes | None, source: str) -> str:
    """The header line as text (BOM and ``\\r`` removed); a missing/undecodable one is a file error."""
    if header is None:
        raise DataError(f"{source}: this format needs a header line, got none")
    try:
        return header.decode("utf-8-sig").rstrip("\r\n")
    except UnicodeDecodeError:
        raise DataError(f"{source}: header line is not UTF-8") from None


def is_blank(text: str) -> bool:
    """Whitespace-only lines (including empty ones) are skipped without a reject."""
    return not text or text.isspace()


# ----------------------------------------------------------------------------- rejects


class Rejects:
    """The reject rows of one block; :meth:`table` builds the ``REJECTS`` table."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.line_nos: list[int] = []
        self.reasons: list[str] = []
        self.texts: list[str] = []

    def __len__(self) -> int:
        return len(self.line_nos)

    def add(self, line_no: int, reason: str, text: str | bytes) -> None:
        """Record line ``line_no``; bytes are decoded with replacement characters."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", "replace")
            text = text[:-1] if text.endswith("\r") else text
        self.line_nos.append(line_no)
        self.reasons.append(reason)
        self.texts.append(text[:MAX_REJECT_TEXT])

    def table(self) -> pa.Table:
        n = len(self.line_nos)
        arrays = [
            pa.array([self.source] * n, pa.string()),
            pa.array(self.line_nos, pa.int64()),
            pa.array(self.reasons, pa.string()),
            pa.array(self.texts, pa.string()),
        ]
        return pa.Table.from_arrays(arrays, schema=REJECTS)


# ----------------------------------------------------------------------------- tables


def interactions_table(rows: Sequence[InteractionRow]) -> pa.Table:
    """``INTERACTIONS`` table from ``(user, item, timestamp, rating, order)`` tuples."""
    columns = list(zip(*rows)) if rows else [()] * len(INTERACTIONS)
    arrays = [pa.array(col, field.type) for col, field in zip(columns, INTERACTIONS)]
    return pa.Table.from_arrays(arrays, schema=INTERACTIONS)


def items_table(rows: Sequence[ItemRow]) -> pa.Table:
    """``ITEMS`` table from ``(item, title, brand, category, description, order)`` tuples."""
    columns = list(zip(*rows)) if rows else [()] * len(ITEMS)
    arrays = [pa.array(col, field.type) for col, field in zip(columns, ITEMS)]
    return pa.Table.from_arrays(arrays, schema=ITEMS)


LONE_SURROGATE = "invalid string: lone surrogate escape (not encodable as UTF-8)"


def build_or_reject_surrogates(
    build: Callable[[list], pa.Table],
    rows: list,
    row_nos: Callable[[], Sequence[int]],
    lines: Sequence[bytes],
    line_nos: Sequence[int],
    rejects: Rejects,
) -> pa.Table:
    """``build(rows)``; rows holding a lone surrogate become rejects instead of failing the block.

    JSON allows escapes such as ``"\\ud800"`` that decode to strings UTF-8 cannot encode, so
    Arrow refuses the whole column. That is rare, so the rows are only inspected when it happens.
    ``row_nos`` gives the line number of each row (called on that slow path only).
    """
    try:
        return build(rows)
    except UnicodeEncodeError:
        pass
    texts = dict(zip(line_nos, decode_lines(lines)))
    keep = []
    for row, no in zip(rows, row_nos()):
        if all(type(value) is not str or _encodable(value) for value in row):
            keep.append(row)
        else:
            rejects.add(no, LONE_SURROGATE, texts[no] or "")
    return build(keep)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ----------------------------------------------------------------------------- JSON lines


_SCAN_ONCE = json.JSONDecoder().scan_once
_SKIP = object()  # _load_slow's "no record": a blank line, or a reject already recorded


def iter_json_records(
    lines: Sequence[bytes], line_nos: Sequence[int], rejects: Rejects, literal_fallback: bool = False
) -> Iterator[tuple[int, str, dict]]:
    """Yield ``(line_no, text, record)`` per JSON-object line; reject the rest, skip blanks.

    ``literal_fallback`` also accepts Python dict literals (the single-quoted 2014 Amazon
    metadata), parsed with :func:`ast.literal_eval`, which evaluates no code.
    """
    scan = _SCAN_ONCE
    for raw, text, no in zip(lines, decode_lines(lines), line_nos):
        if text is None:
            if raw.strip():
                rejects.add(no, UNDECODABLE, raw)
            continue
        try:
            # The decoder's scanner, called directly, skips json.loads' two whitespace regex
            # matches (~10% of the time per line); anything unusual takes the json.loads path.
            record, end = scan(text, 0)
            if end != len(text):
                raise ValueError("trailing text")
        except (StopIteration, ValueError, RecursionError):
            record = _load_slow(no, text, rejects, literal_fallback)
            if record is _SKIP:
                continue
        if type(record) is not dict:
            rejects.add(no, f"not a JSON object: got {type_name(record)}", text)
            continue
        yield no, text, record


def _load_slow(no: int, text: str, rejects: Rejects, literal_fallback: bool) -> Any:
    """``json.loads`` (exact semantics and messages), then the literal fallback, else ``_SKIP``."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; so is a huge int
        if is_blank(text):
            return _SKIP
        record = _literal_dict(text) if literal_fallback else None
        if record is None:
            rejects.add(no, _json_error(exc, literal_fallback), text)
            return _SKIP
        return record


def _json_error(exc: Exception, literal_fallback: bool) -> str:
    if isinstance(exc, json.JSONDecodeError):
        reason = f"malformed JSON: {exc.msg} (char {exc.pos})"
    else:
        reason = f"malformed JSON: {type(exc).__name__}: {str(exc)[:80]}"
    return reason + (", nor a Python dict literal" if literal_fallback else "")


def _literal_dict(text: str) -> dict | None:
    """``text`` as a Python dict literal, or None (any other literal or a syntax error)."""
    try:
        value = ast.literal_eval(text.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None
    return value if type(value) is dict else None


def json_id(record: dict, key: str) -> str:
    """A required non-empty string id (kept verbatim: ids are compared, never cleaned)."""
    value = record.get(key)
    if type(value) is str and value:
        return value
    if value is None:
        raise FieldError(f"missing field '{key}'" if key not in record else f"null value for '{key}'")
    if type(value) is not str:
        raise FieldError(f"wrong type for '{key}': expected string, got {type_name(value)}")
    raise FieldError(f"empty value for '{key}'")


def json_int(record: dict, key: str) -> int:
    """A required integer (an integral float such as ``1.4e9`` is accepted; strings are not)."""
    value = record.get(key)
    if type(value) is int and INT64_MIN <= value <= INT64_MAX:
        return value
    if value is None:
        raise FieldError(f"missing field '{key}'" if key not in record else f"null value for '{key}'")
    if type(value) is float and value.is_integer():
        value = int(value)
    elif type(value) is float:
        raise FieldError(f"wrong value for '{key}': {short(value)} is not an integer")
    elif type(value) is not int:
        raise FieldError(f"wrong type for '{key}': expected integer, got {type_name(value)}")
    if not INT64_MIN <= value <= INT64_MAX:
        raise FieldError(f"out of range for '{key}': {short(value)}")
    return value


def json_rating(record: dict, key: str) -> float | None:
    """An optional finite number (``None`` when absent or null)."""
    value = record.get(key)
    if value is None or ((type(value) is float or type(value) is int) and -FLOAT32_MAX <= value <= FLOAT32_MAX):
        return value
    if type(value) is float or type(value) is int:
        # NaN fails every comparison, so it lands here with the infinities and huge ints.
        raise FieldError(f"out of range for '{key}': {short(value)}")
    raise FieldError(f"wrong type for '{key}': expected number, got {type_name(value)}")


def json_text(record: dict, key: str, join: str = DESCRIPTION_JOIN) -> str | None:
    """An optional text field of a JSON record (see :func:`text_value`)."""
    return text_value(record.get(key), key, join)


def text_value(value: Any, key: str, join: str = DESCRIPTION_JOIN) -> str | None:
    """Optional text: a string, a number, or a list of strings joined with ``join``.

    Surrounding whitespace is stripped; empty text becomes ``None``; HTML stays as it is.
    """
    if value is None:
        return None
    if type(value) is str:
        return value.strip() or None
    if type(value) in (list, tuple):
        return join_parts(value, key, join)
    if type(value) in (int, float):
        return str(value)
    raise FieldError(f"wrong type for '{key}': expected string or list, got {type_name(value)}")


def json_category(record: dict, key: str) -> str | None:
    """The category of a JSON record (see :func:`category_value`)."""
    return category_value(record.get(key), key)


def category_value(value: Any, key: str) -> str | None:
    """A category: a string, one path (list of str, joined with ``" > "``), or a list of paths
    (2014 ``categories``; each joined with ``" > "``, the paths with ``"; "``)."""
    if type(value) in (list, tuple) and any(type(p) in (list, tuple) for p in value):
        paths = [join_parts(p, key, CATEGORY_JOIN) if type(p) in (list, tuple) else clean_part(p, key) for p in value]
        return CATEGORY_PATHS_JOIN.join(p for p in paths if p) or None
    return text_value(value, key, CATEGORY_JOIN)


def join_parts(values: Sequence[Any], key: str, join: str) -> str | None:
    """The non-empty elements of a list-valued text field joined with ``join``, or None."""
    parts = [clean_part(value, key) for value in values]
    return join.join(p for p in parts if p) or None


def clean_part(value: Any, key: str) -> str | None:
    """One element of a list-valued text field: stripped text, or None for null/empty."""
    if value is None:
        return None
    if type(value) is str:
        return value.strip() or None
    if type(value) in (int, float):
        return str(value)
    raise FieldError(f"wrong type for '{key}': expected a list of strings, found {type_name(value)}")


# ----------------------------------------------------------------------------- delimited text


Splitter = Callable[[str], list[str]]


def split_tab(text: str) -> list[str]:
    """RecBole atomic files: fields are tab-separated, no quoting."""
    return text.split("\t")


def split_csv(text: str) -> list[str]:
    """One CSV line (excel dialect). Lines without quotes take the fast ``str.split`` path.

    Parsing is strict and per line, so a quoted field left open at the end of the line
    (a field spanning lines, not supported) is an error instead of swallowing the next line.
    """
    if '"' not in text:
        return text.split(",")
    try:
        return next(csv.reader((text,), strict=True))
    except csv.Error as exc:
        raise FieldError(f"malformed CSV: {exc} (quoted fields spanning lines are not supported)") from None


def header_columns(header: bytes | None, source: str, split: Splitter) -> list[str]:
    """Column names of a header line, stripped."""
    try:
        return [name.strip() for name in split(decode_header(header, source))]
    except FieldError as exc:
        raise DataError(f"{source}: cannot parse the header: {exc}") from None


def require_column(columns: Sequence[str], name: str, source: str, what: str) -> int:
    """Index of column ``name``; a missing one is a file error naming the file and the columns."""
    try:
        return list(columns).index(name)
    except ValueError:
        raise DataError(
            f"{source}: no {what} column '{name}' in the header (columns: {', '.join(columns) or 'none'})"
        ) from None


def optional_column(columns: Sequence[str], *names: str) -> int | None:
    """Index of the first of ``names`` present in ``columns``, else None."""
    for name in names:
        if name in columns:
            return list(columns).index(name)
    return None


def iter_fields(
    lines: Sequence[bytes], line_nos: Sequence[int], rejects: Rejects, split: Splitter, ncols: int
) -> Iterator[tuple[int, str, list[str]]]:
    """Yield ``(line_no, text, fields)`` for lines with exactly ``ncols`` fields; reject the rest."""
    for raw, text, no in zip(lines, decode_lines(lines), line_nos):
        if text is None:
            if raw.strip():
                rejects.add(no, UNDECODABLE, raw)
            continue
        if is_blank(text):
            continue
        try:
            fields = split(text)
        except FieldError as exc:
            rejects.add(no, str(exc), text)
            continue
        if len(fields) != ncols:
            rejects.add(no, f"wrong number of columns: expected {ncols}, got {len(fields)}", text)
            continue
        yield no, text, fields


def text_id(fields: Sequence[str], index: int, name: str) -> str:
    """A required id from a delimited row (surrounding whitespace removed)."""
    value = fields[index].strip()
    if not value:
        raise FieldError(f"empty value for '{name}'")
    return value


def text_rating(value: str, name: str) -> float | None:
    """An optional rating from text: empty is null, otherwise a finite number."""
    value = value.strip()
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        raise FieldError(f"non-numeric value for '{name}': {short(value)}") from None
    if not -FLOAT32_MAX <= number <= FLOAT32_MAX:
        raise FieldError(f"out of range for '{name}': {short(value)}")
    return number


def text_number_time(value: str, name: str) -> int:
    """A required integer or float time (float seconds are floored to whole seconds)."""
    value = value.strip()
    try:
        return _int64(int(value), value, name)
    except ValueError:
        pass
    try:
        number = float(value)
    except ValueError:
        raise FieldError(f"non-numeric value for '{name}': {short(value)}") from None
    if not math.isfinite(number):
        raise FieldError(f"out of range for '{name}': {short(value)}")
    return _int64(math.floor(number), value, name)


def text_time(value: str, name: str) -> int:
    """A number (as :func:`text_number_time`) or an ISO-8601 date/datetime -> epoch seconds.

    ISO forms: ``YYYY-MM-DD``, optionally ``[T ]HH[:MM[:SS[.fraction]]]`` and ``Z`` or ``±HH[:MM]``;
    a time without an offset is taken as UTC. Parsed by one regex, so the accepted forms do not
    depend on the Python version (``datetime.fromisoformat`` grew a lot in 3.11).
    """
    try:
        return text_number_time(value, name)
    except FieldError:
        match = _ISO.match(value.strip())
    if match is None:
        raise FieldError(f"unparseable time for '{name}': {short(value.strip())}")
    return _iso_seconds(match, value, name)


_ISO = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2})(?::(\d{2})(?::(\d{2})(?:[.,]\d+)?)?)?)?"
    r"\s*(Z|[+-]\d{2}(?::?\d{2})?)?$"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _iso_seconds(match: re.Match, value: str, name: str) -> int:
    year, month, day, hour, minute, second, zone = match.groups()
    offset = timedelta(0)
    if zone and zone != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:] or 0))
    try:
        moment = datetime(int(year), int(month), int(day), int(hour or 0), int(minute or 0), int(second or 0))
    except ValueError as exc:  # e.g. month 13, 25:00
        raise FieldError(f"unparseable time for '{name}': {short(value.strip())} ({exc})") from None
    # Fractions of a second are dropped: timestamps are whole seconds.
    return int((moment.replace(tzinfo=timezone.utc) - offset - _EPOCH).total_seconds())


def _int64(number: int, value: str, name: str) -> int:
    if not INT64_MIN <= number <= INT64_MAX:
        raise FieldError(f"out of range for '{name}': {short(value)}")
    return number


# ----------------------------------------------------------------------------- delimited drivers


def delimited_interactions(
    lines: Sequence[bytes],
    line_nos: Sequence[int],
    source: str,
    order_base: int,
    split: Splitter,
    columns: Sequence[str],
    fields: tuple[str, str, str, str],
    parse_time: Callable[[str, str], int],
) -> tuple[pa.Table, pa.Table]:
    """One interaction per row of a delimited file with a header.

    ``fields`` = (user, item, time, rating) column names; user and item are required (a
    missing one is a :class:`DataError`), time and rating optional. Without a time column
    the line number is the timestamp, so file order is time order.
    """
    user_name, item_name, time_name, rating_name = fields
    ui = require_column(columns, user_name, source, "user id")
    ii = require_column(columns, item_name, source, "item id")
    ti, ri = optional_column(columns, time_name), optional_column(columns, rating_name)
    rejects, rows = Rejects(source), []
    for no, text, row in iter_fields(lines, line_nos, rejects, split, len(columns)):
        try:
            user, item = text_id(row, ui, user_name), text_id(row, ii, item_name)
            ts = no if ti is None else parse_time(row[ti], time_name)
            rating = None if ri is None else text_rating(row[ri], rating_name)
        except FieldError as exc:
            rejects.add(no, str(exc), text)
            continue
        rows.append((user, item, ts, rating, order_base + no))
    return interactions_table(rows), rejects.table()


def delimited_items(
    lines: Sequence[bytes],
    line_nos: Sequence[int],
    source: str,
    order_base: int,
    split: Splitter,
    columns: Sequence[str],
    item_name: str,
    title_name: str,
) -> tuple[pa.Table, pa.Table]:
    """One item per row: id and title columns required, brand/category/description optional.

    Text is kept as written (only surrounding whitespace is stripped); empty text is null.
    A row with an empty title is kept with a null title: the ingest drops and counts those.
    """
    ii = require_column(columns, item_name, source, "item id")
    if title_name not in columns:
        raise DataError(f"{source}: no title column '{title_name}' in the header (columns: {', '.join(columns)})")
    optional = [
        columns.index(title_name),
        optional_column(columns, "brand"),
        optional_column(columns, *CATEGORY_COLUMNS),
        optional_column(columns, "description"),
    ]
    rejects, rows = Rejects(source), []
    for no, text, row in iter_fields(lines, line_nos, rejects, split, len(columns)):
        try:
            item = text_id(row, ii, item_name)
        except FieldError as exc:
            rejects.add(no, str(exc), text)
            continue
        texts = [None if i is None else (row[i].strip() or None) for i in optional]
        rows.append((item, *texts, order_base + no))
    return items_table(rows), rejects.table()
