"""Parsers for the Amazon review data sets (JSON lines), one block of lines at a time.

* Amazon Review Data 2014 / 2018 (McAuley lab): reviews with ``reviewerID``, ``asin``,
  ``overall``, ``unixReviewTime`` (seconds); metadata with ``asin``, ``title``, ``brand``,
  ``category`` (2018: one path, a list of str) or ``categories`` (2014: a list of paths) and
  ``description`` (str or list of str). The 2014 metadata files are Python dict literals
  (single quotes), not JSON: those lines are read with :func:`ast.literal_eval`.
* Amazon Reviews 2023: reviews with ``user_id``, ``parent_asin`` (the item), ``rating``,
  ``timestamp`` (milliseconds, kept as given); metadata with ``parent_asin``, ``title``,
  ``store`` (the brand), ``categories`` (a path; empty lists are common) or else
  ``main_category``, ``description`` (list of str).

Category paths are joined with ``" > "`` (several paths with ``"; "``), list descriptions with
``" "``; text is stripped, HTML kept as is, empty text is null. An item without a title is
returned with a null title (the ingest drops and counts those); a missing item id is a reject.
Items, like interactions, carry ``order = order_base + line_no`` (the first row of an id wins).
Blank lines are skipped silently; see :mod:`recexp.data.parsing` for the common rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa

from recexp.config import DataConfig
from recexp.data.parsing import (
    FLOAT32_MAX,
    INT64_MAX,
    INT64_MIN,
    FieldError,
    ItemRow,
    Rejects,
    build_or_reject_surrogates,
    interactions_table,
    items_table,
    iter_json_records,
    json_category,
    json_id,
    json_int,
    json_rating,
    json_text,
)


@dataclass(frozen=True)
class ReviewKeys:
    """JSON keys of one review format."""

    user: str
    item: str
    rating: str
    time: str


@dataclass(frozen=True)
class MetaKeys:
    """JSON keys of one metadata format; the first category key with a value wins."""

    item: str
    title: str
    brand: str
    categories: tuple[str, ...]
    description: str


REVIEWS_2018 = ReviewKeys(user="reviewerID", item="asin", rating="overall", time="unixReviewTime")
REVIEWS_2023 = ReviewKeys(user="user_id", item="parent_asin", rating="rating", time="timestamp")
META_2018 = MetaKeys(
    item="asin", title="title", brand="brand", categories=("category", "categories"), description="description"
)
META_2023 = MetaKeys(
    item="parent_asin",
    title="title",
    brand="store",
    categories=("categories", "main_category"),
    description="description",
)


def parse_amazon2018_reviews(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, header: bytes | None, cfg: DataConfig, order_base: int
) -> tuple[pa.Table, pa.Table]:
    """2014/2018 review lines -> (INTERACTIONS, REJECTS); timestamps in seconds."""
    return parse_reviews(lines, line_nos, source, order_base, REVIEWS_2018)


def parse_amazon2023_reviews(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, header: bytes | None, cfg: DataConfig, order_base: int
) -> tuple[pa.Table, pa.Table]:
    """2023 review lines -> (INTERACTIONS, REJECTS); timestamps in milliseconds, as given."""
    return parse_reviews(lines, line_nos, source, order_base, REVIEWS_2023)


def parse_amazon2018_meta(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, header: bytes | None, cfg: DataConfig, order_base: int
) -> tuple[pa.Table, pa.Table]:
    """2014/2018 metadata lines (JSON, or 2014 Python dict literals) -> (ITEMS, REJECTS)."""
    return parse_meta(lines, line_nos, source, order_base, META_2018, literal_fallback=True)


def parse_amazon2023_meta(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, header: bytes | None, cfg: DataConfig, order_base: int
) -> tuple[pa.Table, pa.Table]:
    """2023 metadata lines -> (ITEMS, REJECTS)."""
    return parse_meta(lines, line_nos, source, order_base, META_2023, literal_fallback=False)


def parse_reviews(
    lines: Sequence[bytes], line_nos: Sequence[int], source: str, order_base: int, keys: ReviewKeys
) -> tuple[pa.Table, pa.Table]:
    """Review lines with the given keys: user/item non-empty strings, time an integer
    (an integral float is accepted, a numeric string is not), rating an optional number."""
    rejects, rows = Rejects(source), []
    append = rows.append
    user_key, item_key, time_key, rating_key = keys.user, keys.item, keys.time, keys.rating
    for no, text, record in iter_json_records(lines, line_nos, rejects):
        user, item = record.get(user_key), record.get(item_key)
        ts, rating = record.get(time_key), record.get(rating_key)
        # The common, valid row is checked inline (the helper calls would cost ~15% of the time);
        # anything else goes through the helpers, which raise the precise reason.
        if (
            type(user) is str
            and user
            and type(item) is str
            and item
            and type(ts) is int
            and INT64_MIN <= ts <= INT64_MAX
            and (
                rating is None
                or ((type(rating) is float or type(rating) is int) and -FLOAT32_MAX <= rating <= FLOAT32_MAX)
            )
        ):
            append((user, item, ts, rating, order_base + no))
            continue
        try:
            append((json_id(record, user_key), json_id(record, item_key), json_int(record, time_key),
                    json_rating(record, rating_key), order_base + no))
        except FieldError as exc:
            rejects.add(no, str(exc), text)
    good = build_or_reject_surrogates(
        interactions_table, rows, lambda: [row[4] - order_base for row in rows], lines, line_nos, rejects
    )
    return good, rejects.table()


def parse_meta(
    lines: Sequence[bytes],
    line_nos: Sequence[int],
    source: str,
    order_base: int,
    keys: MetaKeys,
    literal_fallback: bool,
) -> tuple[pa.Table, pa.Table]:
    """Metadata lines with the given keys -> one item row per line (title may be null)."""
    rejects, rows = Rejects(source), []
    for no, text, record in iter_json_records(lines, line_nos, rejects, literal_fallback):
        try:
            rows.append(meta_row(record, keys, order_base + no))
        except FieldError as exc:
            rejects.add(no, str(exc), text)
    good = build_or_reject_surrogates(
        items_table, rows, lambda: [row[5] - order_base for row in rows], lines, line_nos, rejects
    )
    return good, rejects.table()


def meta_row(record: dict, keys: MetaKeys, order: int) -> ItemRow:
    """``(item, title, brand, category, description, order)`` of one metadata record."""
    category = None
    for key in keys.categories:
        category = json_category(record, key)
        if category is not None:
            break
    return (
        json_id(record, keys.item),
        json_text(record, keys.title),
        json_text(record, keys.brand),
        category,
        json_text(record, keys.description),
        order,
    )
