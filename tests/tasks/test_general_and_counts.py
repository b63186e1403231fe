"""T5 general chats (parsing, quota, seeded order) and the count helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from tasks_data import Data
from recexp.errors import DataError
from recexp.tasks import BuildContext
from recexp.tasks.counts import merge_counts, table_counts, totals_by_task, train_rows_by_form
from recexp.tasks.general import build_general, general_quota, parse_conversation, read_general
from recexp.tasks.next_item import build_next_item


def chat(question: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})


@pytest.mark.parametrize(
    "line",
    [
        "not json",
        "[1, 2]",
        json.dumps({"messages": [{"role": "user", "content": "only a question"}]}),
        json.dumps({"messages": [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]}),
        json.dumps({"messages": [{"role": "wizard", "content": "q"}, {"role": "assistant", "content": "a"}]}),
        json.dumps({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}),
        json.dumps({"messages": [{"role": "user", "content": "\u200b"}, {"role": "assistant", "content": "a"}]}),
        json.dumps({"other": []}),
    ],
)
def test_unusable_lines_are_skipped(line: str) -> None:
    assert parse_conversation(line) is None


def test_read_general_counts_skips(tmp_path: Path) -> None:
    path = tmp_path / "chats.jsonl"
    path.write_text("\n".join([chat("q1", "a1"), "broken", "", chat("q2", "a2 <|im_end|>")]) + "\n")
    chats, skipped = read_general(str(path))
    assert skipped == 1 and [c[0]["content"] for c in chats] == ["q1", "q2"]
    assert chats[1][1]["content"] == "a2 ‹|im_end|›"
    with pytest.raises(DataError, match="not found"):
        read_general(str(tmp_path / "missing.jsonl"))


def test_quota_and_seeded_prefix_order(ctx: BuildContext) -> None:
    assert general_quota({"behaviour": 1000, "intention": 15}, 0.1, 50) == {"behaviour": 50, "intention": 2}
    chats = [parse_conversation(chat(f"q{i}", f"a{i}")) for i in range(30)]
    small = build_general(chats, {"hybrid": 5}, ctx).to_pylist()
    large = build_general(chats, {"hybrid": 12, "intention": 12}, ctx).to_pylist()
    picked = lambda rows, form: [json.loads(r["meta"])["chat"] for r in rows if r["form"] == form]  # noqa: E731
    assert picked(large, "hybrid")[:5] == picked(small, "hybrid") and len(set(picked(large, "hybrid"))) == 12
    assert picked(large, "hybrid") == picked(large, "intention")
    assert picked(small, "hybrid") != list(range(5))  # shuffled, not file order
    assert all(r["split"] == "train" and r["user_id"] == -1 and r["history_ids"] == [] for r in large)


def test_counts_helpers(data: Data, ctx: BuildContext) -> None:
    table = build_next_item(data.users, ctx)
    counts = table_counts(table)
    assert sum(counts.values()) == table.num_rows and list(counts) == sorted(counts)
    assert table_counts(table.slice(0, 0)) == {}
    merged = merge_counts([counts, {"t5/train/hybrid": 4, "t1/test/hybrid": 1}])
    assert merged["t1/test/hybrid"] == counts["t1/test/hybrid"] + 1
    assert train_rows_by_form(merged, ["hybrid"]) == {"hybrid": counts["t1/train/hybrid"] + counts["t2/train/hybrid"]}
    assert totals_by_task(merged)["t5"] == 4
    assert isinstance(table.schema.field("history_ids").type, pa.ListType)
