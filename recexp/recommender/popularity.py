"""Most-popular baseline: every user gets the training-interaction counts as scores.

It implements the ``Scorer`` protocol, so it is evaluated by exactly the same
``metrics.evaluate_ranking`` code as the learned models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recexp.recommender.batches import SequencesLike, check_item_ids, to_csr


class Popularity:
    """Scores = number of training interactions of each item (``seq[:-2]`` per user)."""

    def __init__(self, counts: torch.Tensor) -> None:
        self.counts = counts.float()  # (I,)
        self.n_items = int(counts.shape[0])

    @classmethod
    def fit(
        cls, sequences: SequencesLike, n_items: int, user_ids: Sequence[int] | np.ndarray | None = None
    ) -> Popularity:
        """Count the train part ``seq[:-2]`` of every *full* sequence."""
        seqs = to_csr(sequences, user_ids)
        check_item_ids(seqs, n_items)
        train_len = np.maximum(seqs.lengths - 2, 0)  # (N,)
        pos = np.arange(seqs.values.shape[0]) - np.repeat(seqs.offsets[:-1], seqs.lengths)  # index within row
        in_train = pos < np.repeat(train_len, seqs.lengths)
        counts = np.bincount(seqs.values[in_train], minlength=n_items)
        return cls(torch.from_numpy(counts))

    def full_scores(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The counts repeated for each row, ``(B, L) -> (B, I)``."""
        return self.counts[None, :].expand(histories.shape[0], -1)

    def score(
        self, histories: torch.Tensor, item_ids: torch.Tensor, user_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Counts of ``item_ids (B, C)``."""
        return self.counts[item_ids]
