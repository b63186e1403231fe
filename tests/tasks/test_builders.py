"""The builders follow the protocol exactly and are deterministic and partition-independent."""

from __future__ import annotations

import json

import pyarrow as pa
import pytest
import torch

from tasks_data import Data, make_ctx
from recexp.tasks import BuildContext
from recexp.tasks.counts import protocol_counts, table_counts
from recexp.tasks.forms import shown_titles
from recexp.tasks.history import build_history
from recexp.tasks.interest import build_explain, build_interest, interest_pairs, model_scorer, select_explain
from recexp.tasks.io import first_neighbors
from recexp.tasks.items import build_items
from recexp.tasks.next_item import build_next_item


def rows(table: pa.Table) -> list[dict]:
    return table.to_pylist()


def canonical(tables: list[pa.Table]) -> list[str]:
    """Rows as sorted JSON strings: equal for equal row multisets, whatever the file split."""
    return sorted(json.dumps(r, sort_keys=True) for t in tables for r in t.to_pylist())


def pairs_of(data: Data, ctx: BuildContext, users: list | None = None) -> list:
    pairs, skipped = interest_pairs(users or data.users, ctx, model_scorer(data.model), data.model.pad_id)
    assert skipped == 0
    return pairs


def test_counts_follow_the_protocol_exactly(data: Data, ctx: BuildContext) -> None:
    users, interactions = len(data.lengths), int(data.lengths.sum())
    counts = {}
    for table in (build_next_item(data.users, ctx), build_history(data.users, ctx), build_interest(pairs_of(data, ctx), data.users, ctx)):
        counts.update(table_counts(table))
    for form in ("behaviour", "intention", "hybrid"):
        assert counts[f"t1/train/{form}"] == counts[f"t2/train/{form}"] == interactions - 2 * users
        assert counts[f"t1/test/{form}"] == counts[f"t2/test/{form}"] == users
        assert counts[f"t3/train/{form}"] == 2 * users
    for form in ("intention", "hybrid"):
        assert counts[f"t6/train/{form}"] == interactions - users and counts[f"t6/test/{form}"] == users
        assert counts[f"t7/train/{form}"] == interactions - 2 * users and counts[f"t7/test/{form}"] == users
    assert not any(k.startswith(("t6/", "t7/")) and k.endswith("/behaviour") for k in counts)
    predicted = protocol_counts(data.lengths, ctx.params)
    assert {k: counts[k] for k in predicted} == predicted
    test_users = counts["t3/test/behaviour"] // 2
    assert 0.1 * users <= test_users <= 0.5 * users  # t3_test_fraction = 0.3, seeded


def test_builders_are_deterministic_and_seeded(data: Data, ctx: BuildContext) -> None:
    assert build_next_item(data.users, ctx).equals(build_next_item(data.users, ctx))
    assert build_history(data.users, ctx).equals(build_history(data.users, ctx))
    other = make_ctx(data, seed=1)
    assert not build_next_item(data.users, other).equals(build_next_item(data.users, ctx))


@pytest.mark.parametrize("split_at", [1, 17, 39])
def test_partitioning_does_not_change_rows(data: Data, ctx: BuildContext, split_at: int) -> None:
    head, tail = data.users[:split_at], data.users[split_at:]
    for build in (build_next_item, build_history):
        assert canonical([build(head, ctx), build(tail, ctx)]) == canonical([build(data.users, ctx)])
    whole = [(p.user_id, p.position, p.label, p.item_id) for p in pairs_of(data, ctx)]
    parts = [(p.user_id, p.position, p.label, p.item_id) for p in pairs_of(data, ctx, head) + pairs_of(data, ctx, tail)]
    assert parts == whole
    assert canonical([build_items(range(0, 70), {}, ctx), build_items(range(70, 200), {}, ctx)]) == canonical(
        [build_items(range(200), {}, ctx)]
    )


def test_t1_and_t2_mimic_the_recommender(data: Data, ctx: BuildContext) -> None:
    users = {u.user_id: u for u in data.users}
    table = build_next_item(data.users, ctx)
    for row in rows(table):
        user = users[row["user_id"]]
        ids, _ = user.ranking(row["position"])
        meta = json.loads(row["meta"])
        assert row["split"] == ("test" if row["position"] == user.n - 1 else "train")
        if row["task"] == "t1":
            assert meta["item_id"] == ids[0] and row["response"] == ctx.catalog.titles[ids[0]]
        else:
            assert sorted(meta["shown"]) == sorted(meta["ranked"]) and len(meta["shown"]) == 5
            assert meta["ranked"] == ids[meta["ranks"]].tolist() and meta["ranks"] == sorted(meta["ranks"])
            assert row["response"] == "; ".join(ctx.catalog.titles[i] for i in meta["ranked"])
            if row["form"] != "behaviour":
                assert row["item_slot_ids"] == meta["shown"]
        if row["form"] != "behaviour":
            assert row["history_ids"] == [user.item_ids[: row["position"]][-8:].tolist()]


def test_t3_pairs_respect_thresholds_and_history(data: Data, ctx: BuildContext) -> None:
    users = {u.user_id: u for u in data.users}
    pairs = pairs_of(data, ctx)
    for pair in pairs:
        user = users[pair.user_id]
        assert pair.item_id not in user.item_ids[: pair.position]
        if pair.label == "Yes":
            assert pair.score >= pair.interested and pair.position in (user.n - 2, user.n - 1)
        else:
            assert pair.score <= pair.not_interested
        assert pair.split == ("train" if pair.position == user.n - 2 else "test")
    history = torch.tensor([users[0].item_ids[: users[0].n - 2].tolist()])
    scores = data.model.full_scores(history)[0].detach().numpy()
    first = [p for p in pairs if p.user_id == 0 and p.split == "train"]
    assert [p.score for p in first] == pytest.approx([float(scores[p.item_id]) for p in first], abs=1e-5)


def test_explain_selection_is_global_exact_and_partition_free(data: Data, ctx: BuildContext) -> None:
    pairs = pairs_of(data, ctx)
    chosen = select_explain(pairs, 20, 5)
    assert [p.split for p in chosen].count("train") == 20 and [p.split for p in chosen].count("test") == 5
    by_part = select_explain(pairs[:31], 20, 5) + select_explain(pairs[31:], 20, 5)
    assert select_explain(by_part, 20, 5) == chosen
    table = build_explain(chosen, data.users, ctx)
    assert table_counts(table)["explain/train/hybrid"] == 20
    for row in rows(table):
        meta = json.loads(row["meta"])
        assert row["response"] in ("Yes", "No") and "score" in meta and meta["subtask"] == "uidiid2explan"
    everything = select_explain(pairs, 10**6, 10**6)
    assert len(everything) == len(pairs)


def test_t6_and_t7_answers(data: Data, ctx: BuildContext) -> None:
    users = {u.user_id: u for u in data.users}
    for row in rows(build_history(data.users, ctx)):
        user, t = users[row["user_id"]], row["position"]
        if row["task"] == "t6":
            assert row["response"] == "; ".join(ctx.catalog.titles[i] for i in user.item_ids[:t][-9:])
            assert row["history_ids"] == [user.item_ids[:t][-8:].tolist()]
            assert row["split"] == ("test" if t == user.n else "train")
        else:
            assert row["response"] == ctx.catalog.titles[user.item_ids[t]]
            template = ctx.templates.lists["uid2added"][row["form"]][json.loads(row["meta"])["template"]]
            states = {"before": user.item_ids[:t][-8:].tolist(), "after": user.item_ids[: t + 1][-8:].tolist()}
            assert row["history_ids"] == [states[field] for field in template.fields]  # in slot order
            assert row["split"] == ("test" if t == user.n - 1 else "train")
        assert '"' not in row["messages"][-1]["content"]  # no titles shown: they are the answer


def test_t4_uses_metadata_only_where_present(data: Data, ctx: BuildContext) -> None:
    neighbors = first_neighbors(data.outputs["item_neighbors.parquet"])
    table = build_items(range(200), neighbors, ctx)
    subtasks = {}
    for row in rows(table):
        meta = json.loads(row["meta"])
        subtasks.setdefault((meta["subtask"], row["form"], row["split"]), []).append(meta["item_id"])
        assert row["user_id"] == -1 and row["position"] == -1
    train = lambda s, f: subtasks.get((s, f, "train"), [])  # noqa: E731
    assert train("iid2title", "intention") == list(range(200)) and not train("iid2title", "behaviour")
    assert train("iid2sim", "behaviour") == list(range(200))
    has = {name: [i for i in range(200) if ctx.catalog.meta[name][i] is not None] for name in ("brand", "category", "description")}
    for name, items in has.items():
        assert train(f"iid2{name}", "hybrid") == items
    tested = subtasks[("iid2title", "intention", "test")]
    assert 5 <= len(tested) <= 40 and set(tested) <= set(range(200))  # ~10%, seeded
    sim = [r for r in rows(table) if json.loads(r["meta"])["subtask"] == "iid2sim"]
    assert all(r["response"] == ctx.catalog.titles[neighbors[json.loads(r["meta"])["item_id"]]] for r in sim)


def test_subsets_of_tasks_and_forms(data: Data) -> None:
    ctx = make_ctx(data, tasks=["t2", "t7"], forms=["behaviour"], max_hist=3, rank_candidates=3)
    assert set(table_counts(build_next_item(data.users, ctx))) == {"t2/train/behaviour", "t2/test/behaviour"}
    assert build_history(data.users, ctx).num_rows == 0  # T7 has no behaviour form
    user = data.users[0]
    row = rows(build_next_item([user], ctx))[0]  # sorted: the test row (t = n-1) comes first
    assert len(json.loads(row["meta"])["shown"]) == 3 and row["position"] == user.n - 1
    assert shown_titles(user.item_ids[: user.n - 1], ctx.catalog, 3) in row["messages"][-1]["content"]
    assert ctx.catalog.quoted[user.item_ids[user.n - 5]] not in row["messages"][-1]["content"]
