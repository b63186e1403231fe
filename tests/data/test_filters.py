"""Filters on integer interaction arrays, against hand-computed expectations."""

from __future__ import annotations

import numpy as np

from recexp.data import filters
from recexp.data.filters import Interactions


def make(rows: list[tuple[int, int, int]]) -> Interactions:
    """``rows`` of (user, item, timestamp); order = row position."""
    u, i, t = (np.array(c) for c in zip(*rows)) if rows else (np.zeros(0, int),) * 3
    return Interactions(u.astype(np.int32), i.astype(np.int32), t.astype(np.int64), np.arange(len(u), dtype=np.int64))


def triples(x: Interactions) -> list[tuple[int, int, int]]:
    return list(zip(x.user.tolist(), x.item.tolist(), x.timestamp.tolist()))


def test_sort_then_dedup_keeps_first_event() -> None:
    x = make([(1, 5, 30), (0, 2, 10), (1, 5, 20), (0, 3, 10), (0, 2, 5)])
    x = filters.deduplicate(filters.sort_chronologically(x))
    # user 0: item 2 first at t=5 (the t=10 repeat goes), item 3 at t=10; ties keep source order.
    assert triples(x) == [(0, 2, 5), (0, 3, 10), (1, 5, 20)]


def test_k_core_cascades_to_a_fixpoint() -> None:
    # Round 1 drops item 9 (one user); then user 2 has one interaction left and goes; then item 3,
    # which only user 2 and user 3 had, falls to one user and goes, taking user 3 below 2 as well.
    rows = [(0, 1, 0), (0, 2, 1), (1, 1, 0), (1, 2, 1), (2, 3, 0), (2, 9, 1), (3, 3, 0), (3, 1, 1)]
    assert triples(filters.k_core(make(rows), 2)) == [(0, 1, 0), (0, 2, 1), (1, 1, 0), (1, 2, 1)]
    assert triples(filters.k_core(make(rows), 0)) == rows


def test_k_core_exact_fixpoint() -> None:
    rows = [(0, 0, 0), (0, 1, 1), (1, 0, 0), (1, 1, 1), (2, 0, 0), (2, 2, 1)]
    out = filters.k_core(make(rows), 2)
    assert triples(out) == [(0, 0, 0), (0, 1, 1), (1, 0, 0), (1, 1, 1)]


def test_top_items_breaks_ties_by_code() -> None:
    rows = [(0, 3, 0), (1, 3, 0), (0, 1, 1), (1, 2, 1), (2, 1, 0), (2, 2, 1)]
    out = filters.top_items(make(rows), 2)  # counts: 1->2, 2->2, 3->2: keep codes 1 and 2
    assert sorted(set(out.item.tolist())) == [1, 2]


def test_sample_users_is_seeded_and_exact() -> None:
    rows = [(u, i, i) for u in range(50) for i in range(3)]
    a = filters.sample_users(make(rows), 10, seed=7)
    b = filters.sample_users(make(rows), 10, seed=7)
    c = filters.sample_users(make(rows), 10, seed=8)
    assert len(set(a.user.tolist())) == 10 and len(a) == 30
    assert np.array_equal(a.user, b.user) and not np.array_equal(a.user, c.user)


def test_drop_short_and_dense_codes() -> None:
    x = make([(4, 1, 0), (4, 2, 1), (4, 3, 2), (7, 1, 0), (7, 2, 1)])
    out = filters.drop_short(x, 3)
    assert triples(out) == [(4, 1, 0), (4, 2, 1), (4, 3, 2)]
    kept, new = filters.dense_codes(np.array([7, 3, 7, 9], dtype=np.int32))
    assert kept.tolist() == [3, 7, 9] and new.tolist() == [1, 0, 1, 2]
