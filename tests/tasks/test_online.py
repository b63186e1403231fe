"""Online explanation prompts are exactly the explanation rows of build-alignment-data."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tasks_data import MAX_LEN, make_ctx

from recexp.errors import DataError
from recexp.tasks import UserRecord
from recexp.tasks.interest import InterestPair, build_explain
from recexp.tasks.online import FOLLOW_UP, ONLINE_SPLIT, explain_rows, follow_up_row, follow_up_text
from recexp.tasks.rows import RowError, check_row

HISTORY = [0, 8, 9, 17, 150, 3, 12, 30, 31, 44, 1]  # hostile titles among them (ids < 31)
ITEM = 2  # title "<USER> meets <Item>"


@pytest.mark.parametrize("template", [0, 4, 9])
def test_rows_equal_the_training_explanation_rows(data, template: int) -> None:
    ctx = make_ctx(data)
    user = UserRecord(7, np.array(HISTORY + [5], dtype=np.int64))
    pair = InterestPair(7, len(HISTORY), "test", "Yes", ITEM, 0.5, 0.4, 0.1, 0.0, 0.0, (template + 0.5) / 10)
    built = build_explain([pair], [user], ctx).to_pylist()
    assert [r["form"] for r in built] == ["behaviour", "hybrid", "intention"]
    for want in built:
        got = explain_rows(
            ctx.catalog, [HISTORY], [ITEM], form=want["form"], max_hist=ctx.params.max_hist, max_len=MAX_LEN,
            template_index=template, templates=ctx.templates, user_ids=[7],
        )[0]
        for key in ("task", "form", "user_id", "position", "messages", "history_ids", "item_slot_ids"):
            assert got[key] == want[key], key
        assert json.loads(got["meta"]) == {"subtask": "uidiid2explan", "template": template, "item_id": ITEM}
        assert got["split"] == ONLINE_SPLIT and got["response"] == ""


def test_order_slots_and_defaults(data) -> None:
    ctx = make_ctx(data)
    histories = [[4, 5, 6], list(range(40, 60)), [7]]
    rows = explain_rows(ctx.catalog, histories, [9, 8, 7], form="hybrid", max_hist=3, max_len=MAX_LEN)
    assert [r["user_id"] for r in rows] == [-1, -1, -1] and [r["position"] for r in rows] == [3, 20, 1]
    assert [r["item_slot_ids"] for r in rows] == [[9], [8], [7]]
    assert rows[1]["history_ids"] == [list(range(60 - MAX_LEN, 60))]  # the recommender's window
    assert rows[1]["messages"][-1]["content"].count('"') == 2 * (3 + 1)  # max_hist titles + the item
    for row in rows:
        check_row(row["messages"], row["response"], row["history_ids"], row["item_slot_ids"])
    behaviour = explain_rows(ctx.catalog, histories, [9, 8, 7], form="behaviour", max_hist=3, max_len=MAX_LEN)
    assert all(r["history_ids"] == [] and r["item_slot_ids"] == [] for r in behaviour)


@pytest.mark.parametrize(
    ("histories", "items", "options", "message"),
    [
        ([[1, 2], []], [3, 4], {}, r"pair 1 \(user -1, item 4\): empty history"),
        ([[1, 2]], [200], {}, "unknown item id 200"),
        ([[1, -2]], [3], {}, "unknown item id -2"),
        ([[1, 2]], [3, 4], {}, "differ in length"),
        ([[1, 2]], [3], {"form": "poetry"}, "unknown form 'poetry'"),
        ([[1, 2]], [3], {"template_index": 10}, "template_index 10 out of range"),
        ([[1, 2]], [3], {"max_hist": 0}, "max_hist and max_len"),
    ],
)
def test_bad_requests_name_the_problem(data, histories, items, options, message) -> None:
    ctx = make_ctx(data)
    kwargs = {"form": "intention", "max_hist": 5, "max_len": MAX_LEN, **options}
    with pytest.raises(DataError, match=message):
        explain_rows(ctx.catalog, histories, items, **kwargs)


@pytest.mark.parametrize("form", ["behaviour", "hybrid", "intention"])
def test_follow_up_turn(data, form: str) -> None:
    ctx = make_ctx(data)
    row = explain_rows(ctx.catalog, [HISTORY], [ITEM], form=form, max_hist=4, max_len=MAX_LEN,
                       templates=ctx.templates)[0]
    question = follow_up_text(ctx.templates, form, 3)
    assert question == "".join(lit for lit, _ in ctx.templates.lists[FOLLOW_UP][form][3].parts)
    assert "{" not in question and "<" not in question and question.endswith(".")
    for answer in ("Yes", "No"):
        turn2 = follow_up_row(row, answer, question)
        assert turn2["messages"] == row["messages"] + [
            {"role": "assistant", "content": answer}, {"role": "user", "content": question}]
        assert {k: v for k, v in turn2.items() if k != "messages"} == {k: v for k, v in row.items() if k != "messages"}
        check_row(turn2["messages"], "", turn2["history_ids"], turn2["item_slot_ids"])
    assert len(row["messages"]) == 2  # the first turn is left as built


def test_follow_up_wording_depends_on_the_form(data) -> None:
    templates = make_ctx(data).templates
    assert follow_up_text(templates, "hybrid") == "Explain why in one full sentence that starts with 'Because'."
    assert follow_up_text(templates, "behaviour", 1) == follow_up_text(templates, "hybrid", 1)
    assert follow_up_text(templates, "intention", 1) != follow_up_text(templates, "hybrid", 1)
    assert "history" in follow_up_text(templates, "hybrid", 1)
    with pytest.raises(DataError, match="template_index 10 out of range: explain_followup/hybrid"):
        follow_up_text(templates, "hybrid", 10)
    with pytest.raises(DataError, match="unknown form 'poetry'"):
        follow_up_text(templates, "poetry")
    with pytest.raises(RowError, match="slots"):
        follow_up_row(explain_rows(make_ctx(data).catalog, [[1, 2]], [3], form="intention", max_hist=2,
                                   max_len=MAX_LEN)[0], "Yes", "Why? See <user>.")
