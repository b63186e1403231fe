"""The recommender side of the service (no Ray): resolve a user, top-k, score one item.

Histories are right-aligned and left-padded with the recommender's pad id, as in training;
items of the history are excluded from the top-k (the exports of train-recommender do the same).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from recexp.config import RunConfig
from recexp.recommender import Recommender, load
from recexp.serve.artifacts import UserHistories, encoder_url, load_catalog
from recexp.serve.errors import NotFound


class RecommenderCore:
    """Recommender + catalog titles + known users' histories of one run."""

    def __init__(self, run_id: str, model: Recommender, titles: Sequence[str], users: UserHistories) -> None:
        if len(titles) != model.n_items:
            raise ValueError(f"catalog has {len(titles)} items but the recommender {model.n_items}")
        self.run_id = run_id
        self.model = model.eval()
        self.titles = list(titles)
        self.users = users

    @classmethod
    def load(cls, cfg: RunConfig) -> RecommenderCore:
        """Everything from the store for ``cfg.run_id``."""
        model = load(encoder_url(cfg), endpoint_url=cfg.store.endpoint_url)
        return cls(str(cfg.run_id), model, load_catalog(cfg).titles, UserHistories.load(cfg))

    def history(self, user_id: int | None, history: Sequence[int] | None) -> np.ndarray:
        """The user's chronological item ids (known user, or a checked explicit history)."""
        if user_id is not None:
            return self.users.get(user_id)
        ids = np.asarray(history, dtype=np.int64)
        for item_id in ids.tolist():
            self.check_item(item_id, "history item")
        return ids

    def check_item(self, item_id: int, what: str = "item_id") -> None:
        """:class:`NotFound` unless ``item_id`` is in the catalog (``what`` names it in the message)."""
        if not 0 <= item_id < self.model.n_items:
            raise NotFound(f"unknown {what} {item_id}: this run's catalog has items 0..{self.model.n_items - 1}")

    @torch.no_grad()
    def scores(self, history: np.ndarray) -> torch.Tensor:
        """Catalog scores ``(n_items,)`` for one history."""
        tail = torch.as_tensor(history[-self.model.max_len :], dtype=torch.long)[None]  # (1, L)
        return self.model.full_scores(tail)[0]

    def recommend(self, user_id: int | None, history: Sequence[int] | None, k: int) -> dict:
        """The ``k`` best items not in the history, best first."""
        ids = self.history(user_id, history)
        scores = self.scores(ids)
        scores[torch.as_tensor(ids, dtype=torch.long)] = float("-inf")
        k = min(k, self.model.n_items - len(np.unique(ids)))
        top = torch.topk(scores, k)
        items = [
            {"item_id": int(i), "title": self.titles[int(i)], "score": float(s)}
            for s, i in zip(top.values.tolist(), top.indices.tolist())
        ]
        return {"items": items, "run_id": self.run_id}

    def context(self, user_id: int | None, history: Sequence[int] | None, item_id: int) -> dict:
        """What an explanation needs: the history, the item's score and its percentile."""
        self.check_item(item_id)
        ids = self.history(user_id, history)
        scores = self.scores(ids)
        score = scores[item_id]
        percentile = float((scores < score).float().mean())
        return {"history": ids.tolist(), "rec_score": float(score), "rec_percentile": percentile, "run_id": self.run_id}
