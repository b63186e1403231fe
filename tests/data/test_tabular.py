"""CSV line parsers and the Arrow (Parquet) converters."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

from recexp.config import DataConfig
from recexp.data import tabular
from recexp.data.schema import INTERACTIONS, ITEMS, REJECTS
from recexp.errors import DataError

CFG = DataConfig()
SOURCE = "s3://bucket/ratings.csv"
MAY_1 = 1588291200  # 2020-05-01T00:00:00Z


def run(parser, lines, header, first_line=2, order_base=0):
    line_nos = list(range(first_line, first_line + len(lines)))
    good, rejects = parser(lines, line_nos, SOURCE, header, CFG, order_base)
    assert rejects.schema == REJECTS
    return good, good.to_pylist(), rejects.to_pylist()


# ----------------------------------------------------------------------------- CSV


def test_csv_interactions_time_forms():
    header = b"user_id,item_id,rating,timestamp\r"
    lines = [
        b"u1,i1,5,1588291200",
        b"u1,i2,,1588291200.9",
        b'"u,2","i ""3""",3.5,2020-05-01',
        b"u2,i4,1,2020-05-01T12:30:00Z\r",
        b"u2,i5,1,2020-05-01 12:30:00+02:00",
        b" u3 , i6 ,2,2020-05-01T12:30:00.250",
    ]
    good, rows, rejects = run(tabular.parse_csv_interactions, lines, header, order_base=10)
    assert good.schema == INTERACTIONS and rejects == []
    assert rows == [
        {"user": "u1", "item": "i1", "timestamp": MAY_1, "rating": 5.0, "order": 12},
        {"user": "u1", "item": "i2", "timestamp": MAY_1, "rating": None, "order": 13},
        {"user": "u,2", "item": 'i "3"', "timestamp": MAY_1, "rating": 3.5, "order": 14},
        {"user": "u2", "item": "i4", "timestamp": MAY_1 + 45000, "rating": 1.0, "order": 15},
        {"user": "u2", "item": "i5", "timestamp": MAY_1 + 45000 - 7200, "rating": 1.0, "order": 16},
        {"user": "u3", "item": "i6", "timestamp": MAY_1 + 45000, "rating": 2.0, "order": 17},
    ]


def test_csv_without_time_or_rating_columns():
    _, rows, _ = run(tabular.parse_csv_interactions, [b"i1,u1", b"", b"i2,u1"], b"item_id,user_id")
    assert rows == [
        {"user": "u1", "item": "i1", "timestamp": 2, "rating": None, "order": 2},
        {"user": "u1", "item": "i2", "timestamp": 4, "rating": None, "order": 4},
    ]


def test_csv_bad_lines_are_rejects():
    header = b"user_id,item_id,rating,timestamp"
    lines = [
        b"u1,i1,5",
        b'u1,"i1,5,1',
        b'u1,i1,5,"multi',  # a quoted field spanning lines: not supported
        b'line",1',
        b",i1,5,1",
        b"u1,i1,five,1",
        b"u1,i1,5,yesterday",
        b"u1,i1,5,2020-13-01",
        b"\xff\xfe,i1,5,1",
        b" \t ",
    ]
    _, rows, rejects = run(tabular.parse_csv_interactions, lines, header)
    assert rows == []
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "wrong number of columns: expected 4, got 3"),
        (3, "malformed CSV: unexpected end of data (quoted fields spanning lines are not supported)"),
        (4, "malformed CSV: unexpected end of data (quoted fields spanning lines are not supported)"),
        (5, "wrong number of columns: expected 4, got 2"),
        (6, "empty value for 'user_id'"),
        (7, "non-numeric value for 'rating': 'five'"),
        (8, "unparseable time for 'timestamp': 'yesterday'"),
        (9, "unparseable time for 'timestamp': '2020-13-01' (month must be in 1..12)"),
        (10, "undecodable bytes (not UTF-8)"),
    ]


def test_csv_header_missing_column():
    with pytest.raises(DataError, match=r"s3://bucket/ratings\.csv: no item id column 'item_id'"):
        run(tabular.parse_csv_interactions, [b"u1,i1"], b"user_id,product")
    with pytest.raises(DataError, match=r"ratings\.csv: no title column 'title'.*columns: item_id, name"):
        run(tabular.parse_csv_items, [b"i1,x"], b"item_id,name")


def test_csv_items():
    header = b"\xef\xbb\xbfitem_id,title,brand,categories,description,price"
    lines = [
        b'i1,"Mario Kart 8, Deluxe",Nintendo,Games > Switch,"<p>Race, drift.</p>",59.99',
        b"i2,,,,,",
        b",No id,,,,",
    ]
    good, rows, rejects = run(tabular.parse_csv_items, lines, header, order_base=7)
    assert good.schema == ITEMS
    assert rows == [
        {"item": "i1", "title": "Mario Kart 8, Deluxe", "brand": "Nintendo", "category": "Games > Switch",
         "description": "<p>Race, drift.</p>", "order": 9},
        {"item": "i2", "title": None, "brand": None, "category": None, "description": None, "order": 10},
    ]
    assert [(r["line"], r["reason"]) for r in rejects] == [(4, "empty value for 'item_id'")]


# ----------------------------------------------------------------------------- Arrow


def test_arrow_interactions_vectorised_types():
    table = pa.table(
        {
            "user_id": pa.array([1, 2, 3, 4], pa.int64()),
            "item_id": ["a", "b", "c", "d"],
            "timestamp": pa.array([dt.datetime(2020, 5, 1, 0, 0, 0, 900000)] * 4, pa.timestamp("us", tz="UTC")),
            "rating": pa.array([5.0, None, float("nan"), 2.5], pa.float64()),
            "extra": ["x"] * 4,
        }
    )
    good, rejects = tabular.from_arrow_interactions(table, "ratings.parquet", CFG, order_base=100, first_row=11)
    assert good.schema == INTERACTIONS and rejects.num_rows == 0
    assert good.to_pylist() == [
        {"user": "1", "item": "a", "timestamp": MAY_1, "rating": 5.0, "order": 111},
        {"user": "2", "item": "b", "timestamp": MAY_1, "rating": None, "order": 112},
        {"user": "3", "item": "c", "timestamp": MAY_1, "rating": None, "order": 113},  # NaN = missing
        {"user": "4", "item": "d", "timestamp": MAY_1, "rating": 2.5, "order": 114},
    ]


@pytest.mark.parametrize(
    "times",
    [
        pa.array([MAY_1, MAY_1 + 1], pa.int32()),
        pa.array([MAY_1 + 0.5, MAY_1 + 1.0]),
        pa.array([str(MAY_1), str(MAY_1 + 1)]),
        pa.array(["2020-05-01", "2020-05-01 00:00:01"]),
        pa.array(["2020-05-01T00:00:00Z", "2020-05-01T02:00:01+02:00"]),
        pa.array([dt.date(2020, 5, 1), dt.date(2020, 5, 1)], pa.date32()),
    ],
)
def test_arrow_time_column_types(times):
    table = pa.table({"user_id": ["u", "u"], "item_id": ["a", "b"], "timestamp": times})
    good, rejects = tabular.from_arrow_interactions(table, "t.parquet", CFG, 0, 1)
    assert rejects.num_rows == 0
    expected = [MAY_1, MAY_1] if pa.types.is_date(times.type) else [MAY_1, MAY_1 + 1]
    assert good.column("timestamp").to_pylist() == expected


def test_arrow_interactions_without_time_use_row_number():
    table = pa.table({"user_id": ["u", "u"], "item_id": ["a", "b"]})
    good, _ = tabular.from_arrow_interactions(table, "t.parquet", CFG, 0, 5)
    assert good.column("timestamp").to_pylist() == [5, 6] and good.column("rating").null_count == 2


def test_arrow_interactions_rejects():
    table = pa.table(
        {
            "user_id": ["u1", None, "u3", "u4", "u5", " "],
            "item_id": ["a", "b", None, "d", "e", "f"],
            "timestamp": ["2020-05-01", "1", "1", "someday", None, "1"],
            "rating": ["4", "4", "4", "4", "x", "4"],
        }
    )
    good, rejects = tabular.from_arrow_interactions(table, "s3://b/r.parquet", CFG, 0, 1)
    assert good.to_pylist() == [{"user": "u1", "item": "a", "timestamp": MAY_1, "rating": 4.0, "order": 1}]
    assert [(r["source"], r["line"], r["reason"]) for r in rejects.to_pylist()] == [
        ("s3://b/r.parquet", 2, "null value for 'user_id'"),
        ("s3://b/r.parquet", 3, "null value for 'item_id'"),
        ("s3://b/r.parquet", 4, "unparseable time for 'timestamp': 'someday'"),
        ("s3://b/r.parquet", 5, "null value for 'timestamp'"),
        ("s3://b/r.parquet", 6, "empty value for 'user_id'"),
    ]
    first_text = json.loads(rejects.column("text")[0].as_py())
    assert first_text == {"user_id": None, "item_id": "b", "timestamp": "1", "rating": "4"}


def test_arrow_float_time_and_rating_out_of_range():
    table = pa.table(
        {
            "user_id": ["u", "u", "u"],
            "item_id": ["a", "b", "c"],
            "timestamp": [1.0, float("inf"), 2.0],
            "rating": [1.0, 1.0, 1e39],
        }
    )
    good, rejects = tabular.from_arrow_interactions(table, "t.parquet", CFG, 0, 1)
    assert good.column("item").to_pylist() == ["a"]
    assert [(r["line"], r["reason"]) for r in rejects.to_pylist()] == [
        (2, "out of range for 'timestamp'"),
        (3, "out of range for 'rating'"),
    ]


def test_arrow_missing_columns_name_them_and_the_file():
    table = pa.table({"user": ["u"], "item_id": ["a"]})
    with pytest.raises(DataError, match=r"s3://b/x\.parquet: missing column\(s\) 'user_id' \(columns: user, item_id\)"):
        tabular.from_arrow_interactions(table, "s3://b/x.parquet", CFG, 0, 1)
    with pytest.raises(DataError, match=r"x\.parquet: missing column\(s\) 'item_id', 'title'"):
        tabular.from_arrow_items(pa.table({"name": ["n"]}), "x.parquet", CFG, 0, 1)


def test_arrow_items_with_list_columns():
    table = pa.table(
        {
            "item_id": pa.array([10, 11, None], pa.int64()),
            "title": [" Halo ", "", "Orphan"],
            "categories": [["Video Games", "Xbox"], [], ["x"]],
            "description": [["Fight.", " <b>Win</b> "], None, None],
        }
    )
    good, rejects = tabular.from_arrow_items(table, "items.parquet", CFG, order_base=3, first_row=1)
    assert good.schema == ITEMS
    assert good.to_pylist() == [
        {"item": "10", "title": "Halo", "brand": None, "category": "Video Games > Xbox",
         "description": "Fight. <b>Win</b>", "order": 4},
        {"item": "11", "title": None, "brand": None, "category": None, "description": None, "order": 5},
    ]
    assert [(r["line"], r["reason"]) for r in rejects.to_pylist()] == [(3, "null value for 'item_id'")]


def test_arrow_empty_and_chunked_tables():
    empty = pa.table({"user_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string())})
    good, rejects = tabular.from_arrow_interactions(empty, "e.parquet", CFG, 0, 1)
    assert good.num_rows == 0 and good.schema == INTERACTIONS and rejects.schema == REJECTS
    chunked = pa.concat_tables([pa.table({"user_id": ["u"], "item_id": ["a"]})] * 3)
    good, _ = tabular.from_arrow_interactions(chunked, "c.parquet", CFG, 0, 1)
    assert good.column("order").to_pylist() == [1, 2, 3]
