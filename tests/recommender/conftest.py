"""Shared fixtures for the recommender tests: tiny, seeded, fast."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(2)


def cyclic_sequences(n_users: int, n_items: int, length: int, seed: int = 0) -> list[list[int]]:
    """Toy sequential pattern: every user walks the catalog in order, item i -> i + 1
    (mod n_items), from a random start. Popularity is flat, order is everything."""
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, n_items, (n_users,), generator=gen)
    return [[(int(s) + t) % n_items for t in range(length)] for s in starts]


@pytest.fixture
def toy_sequences() -> list[list[int]]:
    """200 users, 30 items, 12 steps each of the cyclic pattern."""
    return cyclic_sequences(n_users=200, n_items=30, length=12)
