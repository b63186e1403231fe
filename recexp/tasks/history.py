"""T6 history reconstruction (``uid2hist``) and T7 added-item identification (``uid2added``,
after RecInterpreter). Both need a ``<user>`` slot, so they exist in intention and hybrid form
only, and hybrid shows no titles (they would be the answer): it renders like intention.

T6: ``<user>`` for the history ``item_ids[:t]`` -> its last ``max_hist`` titles joined by ``; ``.
    Train ``t = 1..n-1`` (one per position from the second item on), test ``t = n`` (the full
    sequence). Per user: train ``n - 1``, test 1.
T7: two ``<user>`` slots, ``item_ids[:t]`` and ``item_ids[:t+1]`` -> title of ``item_ids[t]``.
    Train ``t = 1..n-2``, test ``t = n-1`` (the last item added). Per user: train ``n - 2``,
    test 1. ``position`` is ``t``, the length of the first history.
"""

from __future__ import annotations

from collections.abc import Iterable

import pyarrow as pa

from recexp.tasks.context import BuildContext, task_rng
from recexp.tasks.forms import history_piece, title_list
from recexp.tasks.rows import RowBuffer, emit
from recexp.tasks.users import UserRecord, split_positions


def reconstruction_rows(user: UserRecord, ctx: BuildContext, out: RowBuffer) -> None:
    """T6 rows of one user."""
    p, catalog = ctx.params, ctx.catalog
    positions = split_positions(user.n)
    draws = task_rng(p.seed, "t6", user.user_id).random(len(positions))
    for (t, split), u in zip(positions, draws):
        prefix = user.item_ids[:t]
        emit(
            out, ctx, task="t6", subtask="uid2hist", forms=p.slot_forms, split=split,
            user_id=user.user_id, position=t, u=float(u),
            pieces=lambda form: {"history": history_piece(form, prefix, catalog, p.max_hist, p.max_len, titles=False)},
            response=title_list(prefix[-p.max_hist :], catalog),
            shown=prefix[-p.max_hist :].tolist(),
        )


def added_item_rows(user: UserRecord, ctx: BuildContext, out: RowBuffer) -> None:
    """T7 rows of one user."""
    p, catalog = ctx.params, ctx.catalog
    positions = split_positions(user.n - 1)
    draws = task_rng(p.seed, "t7", user.user_id).random(len(positions))
    for (t, split), u in zip(positions, draws):
        before, after, added = user.item_ids[:t], user.item_ids[: t + 1], int(user.item_ids[t])
        emit(
            out, ctx, task="t7", subtask="uid2added", forms=p.slot_forms, split=split,
            user_id=user.user_id, position=t, u=float(u),
            pieces=lambda form: {
                "before": history_piece(form, before, catalog, p.max_hist, p.max_len, titles=False),
                "after": history_piece(form, after, catalog, p.max_hist, p.max_len, titles=False),
            },
            response=catalog.titles[added],
            item_id=added,
        )


def build_history(users: Iterable[UserRecord], ctx: BuildContext) -> pa.Table:
    """The T6 and T7 rows (whichever are requested) of ``users``, sorted."""
    out = RowBuffer(ctx.templates.system)
    for user in users:
        if ctx.params.wants("t6"):
            reconstruction_rows(user, ctx, out)
        if ctx.params.wants("t7"):
            added_item_rows(user, ctx, out)
    return out.table()
