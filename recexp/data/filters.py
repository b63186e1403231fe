"""Interaction filters on compact integer arrays: dedup, k-core, RecExplainer subsampling.

Ingest encodes ids to dense integers before filtering, so a data set of N interactions costs
24 bytes per interaction here, whatever the length of the source ids; every filter is a few
vectorised numpy passes (no Python loop over users or items).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interactions:
    """Parallel arrays, one entry per interaction."""

    user: np.ndarray
    """(N,) int32 user code."""
    item: np.ndarray
    """(N,) int32 item code (row of the items table)."""
    timestamp: np.ndarray
    """(N,) int64 event time (or position in a sequence)."""
    order: np.ndarray
    """(N,) int64 global order of the source line: the tie-breaker that makes sorting deterministic."""

    def __len__(self) -> int:
        return len(self.user)

    def take(self, index: np.ndarray) -> "Interactions":
        """Rows selected by a boolean mask or an index array."""
        return Interactions(self.user[index], self.item[index], self.timestamp[index], self.order[index])


def sort_chronologically(x: Interactions) -> Interactions:
    """Sort by (user, timestamp, source order)."""
    return x.take(np.lexsort((x.order, x.timestamp, x.user)))


def deduplicate(x: Interactions) -> Interactions:
    """Keep the first (user, item) event; ``x`` must be sorted chronologically."""
    key = x.user.astype(np.int64) * (int(x.item.max(initial=0)) + 1) + x.item
    _, first = np.unique(key, return_index=True)  # index of the first occurrence of each pair
    keep = np.zeros(len(x), dtype=bool)
    keep[first] = True
    return x.take(keep)


def k_core(x: Interactions, k: int) -> Interactions:
    """Iteratively drop users and items with fewer than ``k`` interactions (``k <= 1``: no-op)."""
    if k <= 1:
        return x
    # Iterate on a mask over the original rows and copy the columns once at the end.
    keep = np.ones(len(x), dtype=bool)
    while keep.any():
        users, items = x.user[keep], x.item[keep]
        ok = (np.bincount(users)[users] >= k) & (np.bincount(items)[items] >= k)
        if ok.all():
            break
        keep[np.flatnonzero(keep)[~ok]] = False
    return x if keep.all() else x.take(keep)


def top_items(x: Interactions, n_items: int) -> Interactions:
    """Keep interactions with the ``n_items`` most frequent items (ties: lower item code first)."""
    count = np.bincount(x.item)
    ranked = np.lexsort((np.arange(len(count)), -count))  # most frequent first, stable by code
    keep_items = np.zeros(len(count), dtype=bool)
    keep_items[ranked[:n_items]] = True
    return x.take(keep_items[x.item])


def sample_users(x: Interactions, n_users: int, seed: int) -> Interactions:
    """Keep the interactions of ``n_users`` users drawn uniformly without replacement (seeded)."""
    users = np.unique(x.user)
    if n_users >= len(users):
        return x
    chosen = np.random.default_rng(seed).choice(users, size=n_users, replace=False)
    return x.take(np.isin(x.user, chosen))


def subsample(x: Interactions, n_items: int, n_users: int, k: int, seed: int) -> Interactions:
    """RecExplainer's recipe: the N most frequent items, M sampled users, then k-core again.

    Users are sampled among those that pass the k-core on the kept items, so that the sample is
    not mostly made of users who vanish at the final k-core (which would shrink M several-fold).
    """
    if n_items:
        x = k_core(top_items(x, n_items), k)
    if n_users:
        x = sample_users(x, n_users, seed)
    return k_core(x, k)


def drop_short(x: Interactions, min_length: int) -> Interactions:
    """Drop users with fewer than ``min_length`` interactions (leave-one-out needs 3)."""
    count = np.bincount(x.user)
    return x.take(count[x.user] >= min_length)


def dense_codes(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(kept, new)``: the sorted distinct codes, and ``codes`` renumbered 0..len(kept)-1."""
    kept, new = np.unique(codes, return_inverse=True)
    return kept, new.astype(np.int32)
