"""What the service reads from the artifact store for one run id (local or ``s3://``).

=====================  ===========================================================
``align/model``        the aligned LLM export (:func:`recexp.llm.load_aligned`)
``train-recommender``  ``encoder/``: the recommender the explanations are about
``build-alignment``    ``catalog.parquet``: sanitised titles, as in the training prompts
``ingest``             ``sequences.parquet``: each known user's history (``user_id`` lookups)
=====================  ===========================================================

``inputs.<stage>=<run_id>`` reads a stage from another run, as every recipe does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recexp.config import RunConfig
from recexp.errors import ConfigError
from recexp.serve.errors import NotFound
from recexp.store import StageDir, Store
from recexp.tasks.catalog import Catalog, build_catalog


def stage_of(cfg: RunConfig, stage: str, run_id: str | None = None) -> StageDir:
    """The committed ``stage`` of ``run_id`` (default: the served run, or ``inputs.<stage>``)."""
    if run_id is None:
        if cfg.run_id is None:
            raise ConfigError("serve needs run_id=<a committed run>")
        run_id = cfg.inputs.get(stage, cfg.run_id)
    return Store.from_config(cfg.store).committed(run_id, stage)


def model_url(cfg: RunConfig, run_id: str | None = None) -> str:
    """URL of the aligned model export of ``run_id`` (default: the served run)."""
    return stage_of(cfg, "align", run_id).url("model")


def encoder_url(cfg: RunConfig) -> str:
    """URL of the served run's recommender export."""
    return stage_of(cfg, "train-recommender").url("encoder")


def load_catalog(cfg: RunConfig) -> Catalog:
    """The sanitised catalog of the served run (``catalog.parquet``; sanitising again is a no-op)."""
    return build_catalog(stage_of(cfg, "build-alignment-data").read_table("catalog.parquet"))


@dataclass
class UserHistories:
    """Every known user's chronological item ids, flat (no Python object per user)."""

    offsets: np.ndarray  # (U + 1,) int64
    values: np.ndarray  # (N,) int64

    @classmethod
    def load(cls, cfg: RunConfig) -> UserHistories:
        """From ``ingest/sequences.parquet`` (dense user ids ``0..U-1``)."""
        table = stage_of(cfg, "ingest").read_table("sequences.parquet", columns=["user_id", "item_ids"])
        order = np.argsort(table["user_id"].to_numpy(), kind="stable")
        lists = table["item_ids"].combine_chunks().take(order)
        offsets = lists.offsets.to_numpy().astype(np.int64)
        values = lists.values.to_numpy().astype(np.int64)
        return cls(offsets - offsets[0], values[offsets[0] : offsets[-1]])

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, user_id: int) -> np.ndarray:
        """The history of ``user_id``; :class:`NotFound` for an unknown id."""
        if not 0 <= user_id < len(self):
            raise NotFound(f"unknown user_id {user_id}: this run knows users 0..{len(self) - 1}")
        return self.values[self.offsets[user_id] : self.offsets[user_id + 1]]
