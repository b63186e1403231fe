"""Build a model from the ``train-recommender`` stage config (``recexp.config.RecommenderConfig``)."""

from __future__ import annotations

from typing import Any

from recexp.recommender.base import Recommender
from recexp.recommender.config import MFConfig, SASRecConfig
from recexp.recommender.mf import MF
from recexp.recommender.sasrec import SASRec


def build_model(cfg: Any, n_items: int, n_users: int) -> Recommender:
    """A freshly initialised SASRec or MF for a catalog of ``n_items`` (and ``n_users`` users)."""
    negatives = {"num_negatives": cfg.num_negatives} if cfg.num_negatives else {}
    if cfg.model == "sasrec":
        return SASRec(
            SASRecConfig(
                n_items=n_items, d=cfg.d, max_len=cfg.max_len, n_blocks=cfg.n_blocks, n_heads=cfg.n_heads,
                dropout=cfg.dropout, norm_first=cfg.norm_first, loss=cfg.loss, **negatives,
            )
        )
    return MF(
        MFConfig(n_items=n_items, n_users=n_users, d=cfg.d, max_len=cfg.max_len, user_repr=cfg.mf_user_repr,
                 loss=cfg.loss, **negatives)
    )
