"""T4 item discrimination over the whole catalog.

Sub-tasks per item: ``iid2title`` (``<item>`` -> title; intention and hybrid only, and hybrid
renders like intention since its title would be the answer), ``iid2sim`` (-> title of the
first neighbour in ``item_neighbors``, i.e. the most similar by the recommender's item
embeddings), ``iid2brand`` / ``iid2category`` / ``iid2description`` only where the item's
metadata has a (non-empty, sanitised) value. All forms otherwise.

Split: every item is in train; a seeded ``ITEM_TEST_FRACTION`` (10%) of items also gets a test
row per sub-task with an independent template draw (a paraphrase of what was trained). T4
measures how well the aligned model knows the catalog, so test items are train items too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import pyarrow as pa

from recexp.tasks.context import BuildContext, task_rng
from recexp.tasks.forms import item_piece
from recexp.tasks.rows import RowBuffer, emit

ITEM_SUBTASKS = ("iid2title", "iid2sim", "iid2brand", "iid2category", "iid2description")


def item_answer(subtask: str, item_id: int, neighbor: int | None, ctx: BuildContext) -> str | None:
    """The response of ``subtask`` for an item, None when the item has no such fact."""
    catalog = ctx.catalog
    if subtask == "iid2title":
        return catalog.titles[item_id]
    if subtask == "iid2sim":
        return None if neighbor is None else catalog.titles[neighbor]
    return catalog.meta[subtask.removeprefix("iid2")][item_id]


def item_rows(item_id: int, neighbor: int | None, ctx: BuildContext, out: RowBuffer) -> None:
    """The T4 rows of one item."""
    p = ctx.params
    rng = task_rng(p.seed, "t4", item_id)
    in_test = rng.random() < p.item_test_fraction
    draws = rng.random((len(ITEM_SUBTASKS), 2))  # (train, test) template draw per sub-task
    for k, subtask in enumerate(ITEM_SUBTASKS):
        answer = item_answer(subtask, item_id, neighbor, ctx)
        if answer is None:
            continue
        titled = subtask != "iid2title"
        forms = p.forms if titled else p.slot_forms
        splits = [("train", draws[k, 0])] + ([("test", draws[k, 1])] if in_test else [])
        for split, u in splits:
            emit(
                out, ctx, task="t4", subtask=subtask, forms=forms, split=split, user_id=-1, position=-1,
                u=float(u), pieces=lambda form: {"item": item_piece(form, item_id, ctx.catalog, titles=titled)},
                response=answer, item_id=item_id,
                **({"neighbor": neighbor} if subtask == "iid2sim" else {}),
            )


def build_items(item_ids: Iterable[int], neighbors: Mapping[int, int], ctx: BuildContext) -> pa.Table:
    """The T4 rows of ``item_ids`` (``neighbors``: item -> most similar item), sorted."""
    out = RowBuffer(ctx.templates.system)
    for item_id in item_ids:
        item_rows(int(item_id), neighbors.get(int(item_id)), ctx, out)
    return out.table()
