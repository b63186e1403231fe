"""RecBole atomic-file parsers, on lines copied from the real data sets and on the whole ml-100k."""

from __future__ import annotations

from pathlib import Path

import pytest

from recexp.config import DataConfig
from recexp.data import recbole
from recexp.data.schema import INTERACTIONS, ITEMS, REJECTS
from recexp.errors import DataError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
CFG = DataConfig()
ML_HEADER = b"user_id:token\titem_id:token\trating:float\ttimestamp:float"
GAMES_HEADER = b"user_id:token\titem_id_list:token_seq\titem_id:token"


def run(parser, lines, header, cfg=CFG, first_line=2, order_base=0, source="data/ml-100k.inter"):
    """Parse ``lines`` numbered from ``first_line`` (line 1 is the header); return both as dicts."""
    line_nos = list(range(first_line, first_line + len(lines)))
    good, rejects = parser(lines, line_nos, source, header, cfg, order_base)
    assert rejects.schema == REJECTS
    return good, good.to_pylist(), rejects.to_pylist()


def test_one_interaction_per_row_ml100k_lines():
    lines = [
        b"196\t242\t3\t881250949",
        b"186\t302\t3\t891717742\r",
        b"22\t377\t1\t878887116",
        b"244\t51\t2\t880606923.7",
    ]
    good, rows, rejects = run(recbole.parse_recbole_inter, lines, ML_HEADER, order_base=1000)
    assert good.schema == INTERACTIONS and rejects == []
    assert rows == [
        {"user": "196", "item": "242", "timestamp": 881250949, "rating": 3.0, "order": 1002},
        {"user": "186", "item": "302", "timestamp": 891717742, "rating": 3.0, "order": 1003},
        {"user": "22", "item": "377", "timestamp": 878887116, "rating": 1.0, "order": 1004},
        {"user": "244", "item": "51", "timestamp": 880606923, "rating": 2.0, "order": 1005},  # float time floored
    ]


def test_no_time_column_uses_line_number_and_empty_rating_is_null():
    header = b"user_id:token\titem_id:token\trating:float"
    _, rows, rejects = run(recbole.parse_recbole_inter, [b"u1\ti1\t4.5", b"", b"u1\ti2\t"], header)
    assert rejects == []
    assert rows == [
        {"user": "u1", "item": "i1", "timestamp": 2, "rating": 4.5, "order": 2},
        {"user": "u1", "item": "i2", "timestamp": 4, "rating": None, "order": 4},
    ]


def test_custom_column_names_from_config():
    cfg = DataConfig(format="recbole", path="x", user_field="uid", item_field="iid", time_field="ts", rating_field="r")
    header = b"r:float\tts:float\tiid:token\tuid:token"
    _, rows, _ = run(recbole.parse_recbole_inter, [b"5\t10\tB\tA"], header, cfg=cfg)
    assert rows == [{"user": "A", "item": "B", "timestamp": 10, "rating": 5.0, "order": 2}]


def test_bad_rows_are_rejects():
    lines = [
        b"196\t242\t3",
        b"196\t242\t3\t881250949\textra",
        b"\t242\t3\t881250949",
        b"196\t \t3\t881250949",
        b"196\t242\tgood\t881250949",
        b"196\t242\t3\tyesterday",
        b"196\t242\t3\t",
        b"196\t242\tinf\t1",
        b"196\t242\t3\tnan",
        b"\xff\xfe\t242",
        b"   ",
    ]
    _, rows, rejects = run(recbole.parse_recbole_inter, lines, ML_HEADER)
    assert rows == []
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "wrong number of columns: expected 4, got 3"),
        (3, "wrong number of columns: expected 4, got 5"),
        (4, "empty value for 'user_id'"),
        (5, "empty value for 'item_id'"),
        (6, "non-numeric value for 'rating': 'good'"),
        (7, "non-numeric value for 'timestamp': 'yesterday'"),
        (8, "non-numeric value for 'timestamp': ''"),
        (9, "out of range for 'rating': 'inf'"),
        (10, "out of range for 'timestamp': 'nan'"),
        (11, "undecodable bytes (not UTF-8)"),
    ]
    assert rejects[0]["text"] == "196\t242\t3" and rejects[0]["source"] == "data/ml-100k.inter"


def test_sequence_rows_are_exploded_games6k_lines():
    lines = [b"0\t0 1 2 3 4 5 6 7 8 9 10 11 12 13\t14", b"1\t15 16 17 18 19 20 21 22 23\t24\r", b"7\t\t99"]
    good, rows, rejects = run(
        recbole.parse_recbole_inter, lines, GAMES_HEADER, order_base=50, source="Games-6k.test.inter"
    )
    assert good.schema == INTERACTIONS and rejects == []
    expected = [{"user": "0", "item": str(i), "timestamp": i, "rating": None, "order": 52} for i in range(15)]
    expected += [{"user": "1", "item": str(15 + i), "timestamp": i, "rating": None, "order": 53} for i in range(10)]
    expected += [{"user": "7", "item": "99", "timestamp": 0, "rating": None, "order": 54}]
    assert rows == expected


def test_sequence_bad_rows():
    lines = [b"0\t1 2", b"\t1 2\t3", b"0\t1 2\t ", b"\xffx\t1\t2"]
    _, rows, rejects = run(recbole.parse_recbole_inter, lines, GAMES_HEADER)
    assert rows == []
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (2, "wrong number of columns: expected 3, got 2"),
        (3, "empty value for 'user_id'"),
        (4, "empty value for 'item_id'"),
        (5, "undecodable bytes (not UTF-8)"),
    ]


@pytest.mark.parametrize(
    "header, missing",
    [
        (b"user_id:token\trating:float\ttimestamp:float", "item_id"),
        (b"item_id:token\trating:float", "user_id"),
        (b"item_id_list:token_seq\titem_id:token", "user_id"),
    ],
)
def test_missing_column_is_a_file_error(header, missing):
    with pytest.raises(DataError, match=rf"data/broken\.inter: .*'{missing}'"):
        run(recbole.parse_recbole_inter, [b"1\t2"], header, source="data/broken.inter")


def test_missing_header_is_a_file_error():
    with pytest.raises(DataError, match="x.inter"):
        run(recbole.parse_recbole_inter, [b"1\t2"], None, source="x.inter")


def test_item_file_ml100k_lines():
    header = b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
    lines = [
        b"1\tToy Story\t1995\tAnimation Children's Comedy",
        b"2\tGoldenEye\t1995\tAction Adventure Thriller",
        b"3\t \t1995\t",
    ]
    cfg = DataConfig(format="recbole", path="x", title_field="movie_title")
    good, rows, rejects = run(recbole.parse_recbole_item, lines, header, cfg=cfg, source="ml-100k.item")
    assert good.schema == ITEMS and rejects == []
    assert rows == [
        {"item": "1", "title": "Toy Story", "brand": None, "category": "Animation Children's Comedy",
         "description": None, "order": 2},
        {"item": "2", "title": "GoldenEye", "brand": None, "category": "Action Adventure Thriller",
         "description": None, "order": 3},
        {"item": "3", "title": None, "brand": None, "category": None, "description": None, "order": 4},
    ]


def test_item_file_games6k_lines_and_rejects():
    header = b"item_id:token\ttitle:token_seq"
    lines = [
        b"0\tFire Emblem: The Sacred Stones",
        b"1\tGBA 6-Pak Care Case - Game Boy Advance\r",
        b"\tNo id",
        b"5\ttoo\tmany",
        b"",
    ]
    _, rows, rejects = run(recbole.parse_recbole_item, lines, header, source="Games-6k.item")
    assert [(r["item"], r["title"]) for r in rows] == [
        ("0", "Fire Emblem: The Sacred Stones"),
        ("1", "GBA 6-Pak Care Case - Game Boy Advance"),
    ]
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (4, "empty value for 'item_id'"),
        (5, "wrong number of columns: expected 2, got 3"),
    ]


def test_item_file_without_title_column_lists_the_columns():
    header = b"item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"
    with pytest.raises(DataError) as info:
        run(recbole.parse_recbole_item, [b"1\tToy Story\t1995\tComedy"], header, source="s3://b/ml-100k.item")
    message = str(info.value)
    assert "s3://b/ml-100k.item" in message and "'title'" in message
    assert "item_id, movie_title, release_year, class" in message


def test_whole_ml100k_inter():
    path = SHARED / "ml-100k" / "ml-100k.inter"
    if not path.exists():
        pytest.skip(f"{path} not available")
    header, *lines = path.read_bytes().split(b"\n")
    good, rejects = recbole.parse_recbole_inter(lines, range(2, len(lines) + 2), str(path), header, CFG, 0)
    assert good.num_rows == 100_000 and rejects.num_rows == 0
    assert len(set(good.column("user").to_pylist())) == 943
    assert len(set(good.column("item").to_pylist())) == 1682
    assert good.column("rating").to_pylist()[:2] == [3.0, 3.0]
