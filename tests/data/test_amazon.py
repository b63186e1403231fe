"""Amazon review/metadata parsers: exact rows, exact rejects, and the shared line rules."""

from __future__ import annotations

import json

import pytest

from recexp.config import DataConfig
from recexp.data import amazon
from recexp.data.schema import INTERACTIONS, ITEMS, MAX_REJECT_TEXT, REJECTS

SOURCE = "s3://bucket/Video_Games_5.json"
CFG = DataConfig()


def run(parser, lines: list[bytes], first_line: int = 1, order_base: int = 0):
    """Parse ``lines`` numbered from ``first_line``; check the schemas; return both tables as dicts."""
    line_nos = list(range(first_line, first_line + len(lines)))
    good, rejects = parser(lines, line_nos, SOURCE, None, CFG, order_base)
    assert rejects.schema == REJECTS
    return good, good.to_pylist(), rejects.to_pylist()


def review(**fields) -> bytes:
    return json.dumps(fields).encode()


# ----------------------------------------------------------------------------- 2018 reviews


def test_2018_reviews_good_rows():
    lines = [
        b'{"overall": 5.0, "verified": true, "reviewTime": "10 17, 2015", "reviewerID": "A1HP7NVNPFMA4N", '
        b'"asin": "0700026657", "reviewerName": "Ambrosia075", "reviewText": "This game is a bit hard", '
        b'"summary": "but when you do it\'s great.", "unixReviewTime": 1445040000}',
        review(reviewerID="A2", asin="B00", overall=3, unixReviewTime=1400000000),
        review(reviewerID="A3", asin="B01", unixReviewTime=1.4e9),  # integral float: accepted
        review(reviewerID="A4", asin="B02", overall=None, unixReviewTime=7),
    ]
    good, rows, rejects = run(amazon.parse_amazon2018_reviews, lines)
    assert good.schema == INTERACTIONS
    assert rejects == []
    assert rows == [
        {"user": "A1HP7NVNPFMA4N", "item": "0700026657", "timestamp": 1445040000, "rating": 5.0, "order": 1},
        {"user": "A2", "item": "B00", "timestamp": 1400000000, "rating": 3.0, "order": 2},
        {"user": "A3", "item": "B01", "timestamp": 1400000000, "rating": None, "order": 3},
        {"user": "A4", "item": "B02", "timestamp": 7, "rating": None, "order": 4},
    ]


BAD_REVIEWS = [
    (b'\xff\xfe{"a":', "undecodable bytes (not UTF-8)"),
    (b'{"reviewerID": "A1" "asin": "B1"}', "malformed JSON: Expecting ',' delimiter"),
    (b'{"reviewerID": "A1", "asin": "B1", "unixReviewTime": 1', "malformed JSON: Expecting ',' delimiter"),
    (b'{"reviewerID": "A1"} extra', "malformed JSON: Extra data"),
    (b"[1, 2]", "not a JSON object: got list"),
    (b"  null", "not a JSON object: got null"),
    (review(asin="B1", unixReviewTime=1), "missing field 'reviewerID'"),
    (review(reviewerID="A1", unixReviewTime=1), "missing field 'asin'"),
    (review(reviewerID="A1", asin="B1"), "missing field 'unixReviewTime'"),
    (review(reviewerID="", asin="B1", unixReviewTime=1), "empty value for 'reviewerID'"),
    (review(reviewerID="A1", asin="", unixReviewTime=1), "empty value for 'asin'"),
    (review(reviewerID=None, asin="B1", unixReviewTime=1), "null value for 'reviewerID'"),
    (review(reviewerID=17, asin="B1", unixReviewTime=1), "wrong type for 'reviewerID': expected string, got int"),
    (review(reviewerID="A1", asin="B1", unixReviewTime="1445040000"),
     "wrong type for 'unixReviewTime': expected integer, got str"),
    (review(reviewerID="A1", asin="B1", unixReviewTime=True),
     "wrong type for 'unixReviewTime': expected integer, got bool"),
    (review(reviewerID="A1", asin="B1", unixReviewTime=1.5), "wrong value for 'unixReviewTime': 1.5 is not an integer"),
    (review(reviewerID="A1", asin="B1", unixReviewTime=2**70), "out of range for 'unixReviewTime'"),
    (review(reviewerID="A1", asin="B1", unixReviewTime=1, overall="5"),
     "wrong type for 'overall': expected number, got str"),
    (b'{"reviewerID": "A1", "asin": "B1", "unixReviewTime": 1, "overall": NaN}', "out of range for 'overall': nan"),
    (b'{"reviewerID": "A\\ud800", "asin": "B1", "unixReviewTime": 1}', "invalid string: lone surrogate escape"),
]


def test_2018_reviews_every_bad_line_is_one_reject():
    good_line = review(reviewerID="A9", asin="B9", unixReviewTime=9)
    lines = [good_line] + [line for line, _ in BAD_REVIEWS] + [good_line]
    good, rows, rejects = run(amazon.parse_amazon2018_reviews, lines)
    assert [r["order"] for r in rows] == [1, len(lines)]
    assert sorted(r["line"] for r in rejects) == list(range(2, len(lines)))
    by_line = {r["line"]: r for r in rejects}
    for line_no, (line, reason) in enumerate(BAD_REVIEWS, start=2):
        reject = by_line[line_no]
        assert reject["reason"].startswith(reason), (line, reject["reason"])
        assert reject["source"] == SOURCE
        assert reject["text"] == line.decode("utf-8", "replace")


def test_undecodable_text_is_replaced_and_long_text_cut():
    long_line = b'{"reviewerID": "' + b"x" * 2000
    _, _, rejects = run(amazon.parse_amazon2018_reviews, [b'\xff\xfe{"a":', long_line])
    assert rejects[0]["text"] == '\ufffd\ufffd{"a":'
    assert rejects[1]["reason"].startswith("malformed JSON: Unterminated string")
    assert rejects[1]["text"] == long_line.decode()[:MAX_REJECT_TEXT]


def test_crlf_blank_lines_and_order():
    lines = [
        review(reviewerID="A1", asin="B1", unixReviewTime=1).replace(b"}", b"}\r"),
        b"",
        b"   \t\r",
        b'{"reviewerID": "A1"\r',
        review(reviewerID="A2", asin="B2", overall=4.0, unixReviewTime=2),
    ]
    _, rows, rejects = run(amazon.parse_amazon2018_reviews, lines, first_line=1001, order_base=10**9)
    # Blank lines are neither rows nor rejects; the others keep their own line numbers.
    assert [(r["user"], r["order"]) for r in rows] == [("A1", 10**9 + 1001), ("A2", 10**9 + 1005)]
    assert [(r["line"], r["text"]) for r in rejects] == [(1004, '{"reviewerID": "A1"')]


def test_empty_block():
    good, rows, rejects = run(amazon.parse_amazon2018_reviews, [])
    assert good.schema == INTERACTIONS and rows == [] and rejects == []
    good, rows, rejects = run(amazon.parse_amazon2018_meta, [])
    assert good.schema == ITEMS and rows == [] and rejects == []


# ----------------------------------------------------------------------------- 2018 / 2014 metadata


def test_2018_meta_json():
    lines = [
        json.dumps(
            {
                "asin": "0042000742",
                "title": " Reversi Sensory Challenger ",
                "brand": "Fidelity Electronics",
                "category": ["Video Games", "PC", " Games ", ""],
                "description": ["Chess & <b>reversi</b>.", " Two players. "],
                "price": "$9.99",
            }
        ).encode(),
        json.dumps({"asin": "B1", "title": "", "description": "  "}).encode(),  # no title: kept, null
        json.dumps({"asin": "B2"}).encode(),
    ]
    good, rows, rejects = run(amazon.parse_amazon2018_meta, lines, order_base=100)
    assert good.schema == ITEMS and rejects == []
    assert rows == [
        {
            "item": "0042000742",
            "title": "Reversi Sensory Challenger",
            "brand": "Fidelity Electronics",
            "category": "Video Games > PC > Games",
            "description": "Chess & <b>reversi</b>. Two players.",
            "order": 101,
        },
        {"item": "B1", "title": None, "brand": None, "category": None, "description": None, "order": 102},
        {"item": "B2", "title": None, "brand": None, "category": None, "description": None, "order": 103},
    ]


def test_2014_meta_python_literals():
    lines = [
        b"{'asin': '0078764343', 'related': {'also_bought': ['B000TI836G']}, 'title': 'Medal of Honor: Airborne', "
        b"'salesRank': {'Video Games': 28655}, 'imUrl': 'http://ecx.images-amazon.com/images/I/51.jpg', "
        b"'categories': [['Video Games', 'Xbox 360', 'Games'], ['Video Games', 'Retro Gaming']], "
        b"'description': \"Hero's journey\"}",
        b"{'asin': 'B1', 'title': 'T', 'price': 1.5}\r",
        b"['not', 'a', 'dict']",
        b"{'asin': 'B2', 'title': __import__('os').getcwd()}",
        b"{'title': 'no asin'}",
    ]
    _, rows, rejects = run(amazon.parse_amazon2018_meta, lines)
    assert rows == [
        {
            "item": "0078764343",
            "title": "Medal of Honor: Airborne",
            "brand": None,
            "category": "Video Games > Xbox 360 > Games; Video Games > Retro Gaming",
            "description": "Hero's journey",
            "order": 1,
        },
        {"item": "B1", "title": "T", "brand": None, "category": None, "description": None, "order": 2},
    ]
    assert [(r["line"], r["reason"].split(" (")[0]) for r in rejects] == [
        (3, "malformed JSON: Expecting value"),
        (4, "malformed JSON: Expecting property name enclosed in double quotes"),  # never evaluated
        (5, "missing field 'asin'"),
    ]
    assert rejects[0]["reason"].endswith("nor a Python dict literal")


def test_2018_meta_wrong_types_are_rejects():
    lines = [
        json.dumps({"asin": 5, "title": "x"}).encode(),
        json.dumps({"asin": "B1", "title": {"a": 1}}).encode(),
        json.dumps({"asin": "B1", "title": "x", "description": [["nested"]]}).encode(),
    ]
    _, rows, rejects = run(amazon.parse_amazon2018_meta, lines)
    assert rows == []
    assert [(r["line"], r["reason"]) for r in rejects] == [
        (1, "wrong type for 'asin': expected string, got int"),
        (2, "wrong type for 'title': expected string or list, got dict"),
        (3, "wrong type for 'description': expected a list of strings, found list"),
    ]


# ----------------------------------------------------------------------------- 2023


def test_2023_reviews_keep_milliseconds():
    lines = [
        b'{"rating": 4.0, "title": "Good", "text": "Fun.", "images": [], "asin": "B07DK1H3H5", '
        b'"parent_asin": "B07DK1H3H5", "user_id": "AGCI7FAH4GL5FI65HYLKWTMFZ2CQ", "timestamp": 1588615855070, '
        b'"helpful_vote": 0, "verified_purchase": true}',
        b'{"user_id": "U2", "parent_asin": "P2", "timestamp": 1588615855071}',
        b'{"user_id": "U3", "asin": "A3", "timestamp": 1}',
    ]
    _, rows, rejects = run(amazon.parse_amazon2023_reviews, lines, order_base=5)
    assert rows == [
        {"user": "AGCI7FAH4GL5FI65HYLKWTMFZ2CQ", "item": "B07DK1H3H5", "timestamp": 1588615855070, "rating": 4.0,
         "order": 6},
        {"user": "U2", "item": "P2", "timestamp": 1588615855071, "rating": None, "order": 7},
    ]
    assert [(r["line"], r["reason"]) for r in rejects] == [(3, "missing field 'parent_asin'")]


def test_2023_meta():
    lines = [
        json.dumps(
            {
                "main_category": "Video Games",
                "title": "Dash 8-300 Professional Add-On",
                "store": "Aerosoft",
                "categories": ["Video Games", "PC", "Games"],
                "description": ["Dash 8-300", "<b>Features</b>"],
                "parent_asin": "B000FH0MHO",
            }
        ).encode(),
        json.dumps({"parent_asin": "P2", "title": "T2", "categories": [], "main_category": "All Electronics"}).encode(),
        json.dumps({"title": "T3", "store": "S"}).encode(),
    ]
    _, rows, rejects = run(amazon.parse_amazon2023_meta, lines)
    assert rows == [
        {
            "item": "B000FH0MHO",
            "title": "Dash 8-300 Professional Add-On",
            "brand": "Aerosoft",
            "category": "Video Games > PC > Games",
            "description": "Dash 8-300 <b>Features</b>",
            "order": 1,
        },
        {"item": "P2", "title": "T2", "brand": None, "category": "All Electronics", "description": None, "order": 2},
    ]
    assert [(r["line"], r["reason"]) for r in rejects] == [(3, "missing field 'parent_asin'")]


@pytest.mark.parametrize(
    "parser", [amazon.parse_amazon2018_reviews, amazon.parse_amazon2023_reviews, amazon.parse_amazon2023_meta]
)
def test_bom_on_first_line_is_ignored(parser):
    line = b'\xef\xbb\xbf{"reviewerID": "A", "user_id": "A", "asin": "B", "parent_asin": "B", ' \
        b'"unixReviewTime": 1, "timestamp": 1}'
    _, rows, rejects = run(parser, [line])
    assert len(rows) == 1 and rejects == []
