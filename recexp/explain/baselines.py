"""Non-LLM baselines of the evaluation: ``popularity`` and ``random``.

Both answer every task from one ordering of the catalog per example: popularity always uses
the items by training-interaction count (most first, ties by id); random draws a fresh seeded
permutation per example. From that order (:func:`predict_from_order`):

=============  =================================================================================
retrieval      the first ``k`` items the user has not interacted with before the position (the
               recommender's top-k excludes them too)
ranking        the shown candidates sorted by the order
binary         ``Yes`` when the item is in the first half of the order (popularity: above the
               median count; random: a fair coin)
history        the first ``len(shown)`` items
item           the first item (for a user's row, the first one not in the history)
=============  =================================================================================

Predictions have the shapes :mod:`recexp.explain.evaluate` scores (lists of item ids; a
``(yes, no)`` score pair for binary).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from recexp.explain.eval_rows import Row, meta

Order = Callable[[Row], np.ndarray]
"""An example -> every item id once, best first ``(n_items,)``."""


def popularity_order(counts: np.ndarray) -> Order:
    """The same order for every example: most interactions first, ties by smaller id."""
    order = np.argsort(-np.asarray(counts), kind="stable")
    return lambda row: order


def random_order(n_items: int, seed: int) -> Order:
    """A new permutation per example, from one generator seeded by ``seed`` (call order matters)."""
    rng = np.random.default_rng(seed)
    return lambda row: rng.permutation(n_items)


def _seen(row: Row, sequences: Mapping[int, np.ndarray]) -> set[int]:
    """Items of the user's history before the row's position (none for item rows)."""
    user, position = int(row["user_id"]), int(row["position"])
    if user < 0 or position < 0:
        return set()
    return set(sequences[user][:position].tolist())


def _first_unseen(order: np.ndarray, seen: set[int], k: int) -> list[int]:
    """The first ``k`` items of ``order`` not in ``seen``."""
    out: list[int] = []
    for item in order.tolist():
        if item not in seen:
            out.append(item)
            if len(out) == k:
                break
    return out


def predict_from_order(kind: str, row: Row, order: np.ndarray, sequences: Mapping[int, np.ndarray], k: int) -> Any:
    """One example's prediction from a catalog order (see the module doc)."""
    info = meta(row)
    if kind == "retrieval":
        return [[item] for item in _first_unseen(order, _seen(row, sequences), k)]
    if kind == "item":
        return _first_unseen(order, _seen(row, sequences), 1)
    if kind == "history":
        return order[: len(info["shown"])].tolist()
    position = np.empty(len(order), dtype=np.int64)
    position[order] = np.arange(len(order))  # item -> its place in the order
    if kind == "ranking":
        return sorted(info["shown"], key=lambda item: position[item])
    if kind == "binary":
        yes = position[info["item_id"]] < len(order) / 2
        return (1.0, 0.0) if yes else (0.0, 1.0)
    raise ValueError(f"unknown task kind {kind!r}")


def predict_baseline(
    kind: str, rows: Sequence[Row], order: Order, sequences: Mapping[int, np.ndarray], k: int = 5
) -> list[Any]:
    """Predictions for ``rows`` from ``order`` (:func:`popularity_order` / :func:`random_order`)."""
    return [predict_from_order(kind, row, order(row), sequences, k) for row in rows]
