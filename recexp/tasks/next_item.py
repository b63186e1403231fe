"""T1 next-item retrieval (``uid2next``) and T2 item ranking (``uidiid2rank``).

Targets come from the recommender, not the ground truth: T1 answers with the title of the
recommender's top-1 item for the history ``item_ids[:t]``; T2 shows ``rank_candidates`` items
sampled from its top-k list, shuffled, and answers with them in the recommender's order.

Positions: train ``t = 1..n-2`` (one row per training position), test ``t = n-1`` (one per
user), in every requested form. Per user: T1 and T2 train ``n - 2`` rows, test 1.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from recexp.errors import DataError
from recexp.tasks.context import BuildContext, task_rng
from recexp.tasks.forms import history_piece, items_piece, title_list
from recexp.tasks.rows import RowBuffer, emit
from recexp.tasks.users import UserRecord, split_positions


def next_item_rows(user: UserRecord, ctx: BuildContext, out: RowBuffer) -> None:
    """T1: history -> title of the recommender's top-1 item."""
    p, catalog = ctx.params, ctx.catalog
    positions = split_positions(user.n - 1)
    draws = task_rng(p.seed, "t1", user.user_id).random(len(positions))
    for (t, split), u in zip(positions, draws):
        ids, scores = user.ranking(t)
        prefix = user.item_ids[:t]
        emit(
            out, ctx, task="t1", subtask="uid2next", forms=p.forms, split=split,
            user_id=user.user_id, position=t, u=float(u),
            pieces=lambda form: {"history": history_piece(form, prefix, catalog, p.max_hist, p.max_len)},
            response=catalog.titles[int(ids[0])],
            item_id=int(ids[0]), score=float(scores[0]),
        )


def sample_candidates(k: int, count: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``(ranks in the recommender's order, the same ranks shuffled for display)``."""
    if k < count:
        raise DataError(f"topk list has {k} items, fewer than tasks.rank_candidates={count}")
    ranks = np.sort(rng.permutation(k)[:count])  # a uniform subset; cheaper than choice(replace=False)
    return ranks, rng.permutation(ranks)


def ranking_rows(user: UserRecord, ctx: BuildContext, out: RowBuffer) -> None:
    """T2: history + shuffled candidates -> the candidates in the recommender's order."""
    p, catalog = ctx.params, ctx.catalog
    rng = task_rng(p.seed, "t2", user.user_id)
    for t, split in split_positions(user.n - 1):
        ids, scores = user.ranking(t)
        ranks, shown_ranks = sample_candidates(len(ids), p.rank_candidates, rng)
        shown = ids[shown_ranks]
        prefix = user.item_ids[:t]
        emit(
            out, ctx, task="t2", subtask="uidiid2rank", forms=p.forms, split=split,
            user_id=user.user_id, position=t, u=float(rng.random()),
            pieces=lambda form: {
                "history": history_piece(form, prefix, catalog, p.max_hist, p.max_len),
                "candidates": items_piece(form, shown, catalog),
            },
            response=title_list(ids[ranks], catalog),
            shown=shown.tolist(), ranked=ids[ranks].tolist(), ranks=ranks.tolist(),
            scores=[float(s) for s in scores[ranks]],
        )


def build_next_item(users: Iterable[UserRecord], ctx: BuildContext) -> pa.Table:
    """The T1 and T2 rows (whichever are requested) of ``users``, sorted."""
    out = RowBuffer(ctx.templates.system)
    for user in users:
        if ctx.params.wants("t1"):
            next_item_rows(user, ctx, out)
        if ctx.params.wants("t2"):
            ranking_rows(user, ctx, out)
    return out.table()
