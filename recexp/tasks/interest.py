"""T3 interest classification (``uidiid2binary``) and the explanation prompts (``uidiid2explan``).

Sampling: for a history ``item_ids[:t]`` the frozen recommender scores the whole catalog; the
positive is drawn uniformly among items scoring ``>=`` the user's ``interested`` threshold (top
20% of the catalog), the negative among items scoring ``<=`` ``not_interested`` (bottom 50%),
history items excluded from both. Each (user, position) has its own seeded generator.

Positions: train at ``t = n-2`` for every user (a positive and a negative: 2 rows per user and
form); test at ``t = n-1`` for the seeded ``t3_test_fraction`` of users (one pair each).
A pair whose positive or negative set is empty is skipped and counted.

Explanations: ``explain_train`` / ``explain_test`` pairs taken from the train / test T3 pairs by
a per-pair seeded key (the smallest keys win, ties by user, position, label), so the choice
is global and exact yet each partition can pre-select its best candidates independently.
The response is the recommender's verdict; the explain stage writes the reasons later.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from recexp.tasks.context import BuildContext, BuildParams, task_rng
from recexp.tasks.forms import history_piece, item_piece
from recexp.tasks.rows import RowBuffer, emit
from recexp.tasks.users import UserRecord

Scorer = Callable[[np.ndarray], np.ndarray]
"""Right-aligned padded histories ``(B, L)`` int64 -> catalog scores ``(B, n_items)`` float32."""

SCORE_BATCH = 256
LABELS = ("Yes", "No")


@dataclass(frozen=True)
class InterestPair:
    """One T3 example: a user at position ``t`` and an item the recommender likes or not."""

    user_id: int
    position: int
    split: str
    label: str
    """``Yes`` (from the interested set) or ``No`` (from the not-interested set)."""
    item_id: int
    score: float
    interested: float
    not_interested: float
    template_u: float
    """Uniform draw choosing the T3 template."""
    explain_key: float
    """Uniform draw ordering pairs for the explanation sample (smallest first)."""
    explain_u: float
    """Uniform draw choosing the explanation template."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def interest_positions(user: UserRecord, params: BuildParams) -> list[tuple[int, str]]:
    """``(t, split)``: train at ``n-2``; test at ``n-1`` for the seeded share of users.
    A position needs a non-empty history (ingest keeps users with at least 3 items)."""
    positions = [(user.n - 2, "train")] if user.n >= 3 else []
    if user.n >= 2 and task_rng(params.seed, "t3", user.user_id).random() < params.t3_test_fraction:
        positions.append((user.n - 1, "test"))
    return positions


def padded_histories(prefixes: Sequence[np.ndarray], pad_id: int, max_len: int) -> np.ndarray:
    """Right-aligned ``(B, max_len)`` int64 histories, left-padded with ``pad_id``."""
    out = np.full((len(prefixes), max_len), pad_id, dtype=np.int64)
    for row, prefix in enumerate(prefixes):
        tail = prefix[-max_len:]
        out[row, max_len - len(tail) :] = tail
    return out


def model_scorer(model: Any) -> Scorer:
    """A :data:`Scorer` over a ``recexp.recommender`` model (eval mode, no grad, CPU)."""
    import torch

    def score(histories: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return model.full_scores(torch.from_numpy(histories)).float().numpy()

    return score


def draw_pair(
    scores: np.ndarray, history: np.ndarray, thresholds: tuple[float, float], rng: np.random.Generator
) -> tuple[int, int] | None:
    """``(positive, negative)`` drawn uniformly from the qualifying items, or None if a set is empty."""
    allowed = np.ones(len(scores), dtype=bool)
    allowed[history] = False
    positives = np.flatnonzero((scores >= thresholds[0]) & allowed)
    negatives = np.flatnonzero((scores <= thresholds[1]) & allowed)
    if not len(positives) or not len(negatives):
        return None
    return int(positives[rng.integers(len(positives))]), int(negatives[rng.integers(len(negatives))])


def _pairs_at(user: UserRecord, t: int, split: str, scores: np.ndarray, params: BuildParams) -> list[InterestPair]:
    """The positive and negative pair of one (user, position), or nothing if a set is empty."""
    thresholds = user.threshold(t)
    rng = task_rng(params.seed, "t3", user.user_id, t)
    drawn = draw_pair(scores, user.item_ids[:t], thresholds, rng)
    if drawn is None:
        return []
    template_u = rng.random(2)
    explain = task_rng(params.seed, "explain", user.user_id, t).random((2, 2))
    return [
        InterestPair(
            user.user_id, t, split, label, item, float(scores[item]), thresholds[0], thresholds[1],
            float(template_u[k]), float(explain[k, 0]), float(explain[k, 1]),
        )
        for k, (label, item) in enumerate(zip(LABELS, drawn))
    ]


def interest_pairs(
    users: Sequence[UserRecord], ctx: BuildContext, scorer: Scorer, pad_id: int
) -> tuple[list[InterestPair], int]:
    """Every T3 pair of ``users`` (scored in fixed batches) and the number of skipped positions."""
    requests = [(user, t, split) for user in users for t, split in interest_positions(user, ctx.params)]
    pairs: list[InterestPair] = []
    skipped = 0
    for start in range(0, len(requests), SCORE_BATCH):
        chunk = requests[start : start + SCORE_BATCH]
        histories = padded_histories([user.item_ids[:t] for user, t, _ in chunk], pad_id, ctx.params.max_len)
        for (user, t, split), scores in zip(chunk, scorer(histories)):
            found = _pairs_at(user, t, split, scores, ctx.params)
            pairs.extend(found)
            skipped += not found
    return pairs, skipped


def _pair_rows(
    pairs: Iterable[InterestPair], users: dict[int, UserRecord], ctx: BuildContext, explain: bool, out: RowBuffer
) -> None:
    """T3 rows (``explain`` False) or explanation rows of ``pairs``, every requested form."""
    p, catalog = ctx.params, ctx.catalog
    for pair in pairs:
        prefix = users[pair.user_id].item_ids[: pair.position]
        emit(
            out, ctx, task="explain" if explain else "t3", subtask="uidiid2explan" if explain else "uidiid2binary",
            forms=p.forms, split=pair.split, user_id=pair.user_id, position=pair.position,
            u=pair.explain_u if explain else pair.template_u,
            pieces=lambda form: {
                "history": history_piece(form, prefix, catalog, p.max_hist, p.max_len),
                "item": item_piece(form, pair.item_id, catalog),
            },
            response=pair.label,
            item_id=pair.item_id, score=pair.score, interested=pair.interested,
            not_interested=pair.not_interested,
        )


def build_interest(pairs: Sequence[InterestPair], users: Sequence[UserRecord], ctx: BuildContext) -> pa.Table:
    """The T3 rows of ``pairs``, sorted."""
    out = RowBuffer(ctx.templates.system)
    _pair_rows(pairs, {u.user_id: u for u in users}, ctx, explain=False, out=out)
    return out.table()


def build_explain(pairs: Sequence[InterestPair], users: Sequence[UserRecord], ctx: BuildContext) -> pa.Table:
    """The explanation rows of the selected ``pairs``, sorted."""
    out = RowBuffer(ctx.templates.system)
    _pair_rows(pairs, {u.user_id: u for u in users}, ctx, explain=True, out=out)
    return out.table()


def select_explain(pairs: Iterable[InterestPair], n_train: int, n_test: int) -> list[InterestPair]:
    """The ``n_train`` train and ``n_test`` test pairs with the smallest keys.

    Selecting within a partition first and then among the survivors gives the same result
    as selecting among all pairs at once."""
    def key(pair: InterestPair) -> tuple:
        return (pair.explain_key, pair.user_id, pair.position, pair.label)

    pairs = list(pairs)
    chosen = []
    for split, n in (("train", n_train), ("test", n_test)):
        chosen += sorted((q for q in pairs if q.split == split), key=key)[:n]
    return sorted(chosen, key=lambda q: (q.user_id, q.position, q.split, q.label))
