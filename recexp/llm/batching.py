"""Which examples go together: length-grouped batches and packing plans (indices only).

Both shuffle with a seed, then work inside windows so that the order stays random at the
scale of the data set while neighbours in a batch have similar lengths:

* :func:`length_grouped_batches`: windows of ``batch_size * window`` examples, sorted by
  length inside a window, cut into batches, batches shuffled; little padding per batch.
* :func:`pack_plan`: first-fit decreasing inside windows; each bin is one packed row of at
  most ``max_length`` tokens (:func:`recexp.llm.collate.pack_rows`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from recexp.llm.errors import ContextLengthError


def length_grouped_batches(
    lengths: Sequence[int], batch_size: int, window: int = 50, seed: int = 0
) -> list[list[int]]:
    """Index batches of ``batch_size`` with similar lengths, in a seeded random order."""
    if batch_size < 1 or window < 1:
        raise ValueError(f"batch_size and window must be >= 1, got {batch_size}, {window}")
    rng = np.random.default_rng(seed)
    lengths_arr = np.asarray(lengths)
    order = rng.permutation(len(lengths_arr))
    span = batch_size * window
    batches: list[list[int]] = []
    for start in range(0, len(order), span):
        chunk = order[start : start + span]
        chunk = chunk[np.argsort(-lengths_arr[chunk], kind="stable")]  # longest first
        batches.extend(chunk[k : k + batch_size].tolist() for k in range(0, len(chunk), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def _first_fit_decreasing(indices: np.ndarray, lengths: np.ndarray, max_length: int) -> list[list[int]]:
    """Bins of indices whose lengths sum to at most ``max_length``."""
    bins: list[list[int]] = []
    room: list[int] = []
    for i in indices[np.argsort(-lengths[indices], kind="stable")].tolist():
        slot = next((b for b, free in enumerate(room) if free >= lengths[i]), None)
        if slot is None:
            bins.append([i])
            room.append(max_length - int(lengths[i]))
        else:
            bins[slot].append(i)
            room[slot] -= int(lengths[i])
    return bins


def pack_plan(lengths: Sequence[int], max_length: int, window: int = 1024, seed: int = 0) -> list[list[int]]:
    """Packed rows (lists of indices, each summing to <= ``max_length`` tokens), seeded order."""
    lengths_arr = np.asarray(lengths)
    if len(lengths_arr) and int(lengths_arr.max()) > max_length:
        raise ContextLengthError(f"an example has {int(lengths_arr.max())} tokens, more than max_length {max_length}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths_arr))
    rows: list[list[int]] = []
    for start in range(0, len(order), window):
        rows.extend(_first_fit_decreasing(order[start : start + window], lengths_arr, max_length))
    return [rows[i] for i in rng.permutation(len(rows))]
