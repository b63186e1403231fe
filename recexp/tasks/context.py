"""What every builder needs: the parameters, the catalog, the templates, and seeded RNGs.

Determinism: no builder ever shares a random stream between users or items. Each draws from
``task_rng(seed, task, user_id[, position])``, a generator seeded by those integers only, so a
row depends on its own user (or item) and nothing else: not on which other users share its
partition, not on the order partitions run in, not on the number of workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recexp.config import TASK_IDS, TasksConfig
from recexp.tasks.catalog import Catalog
from recexp.tasks.templates import TemplateSet

ITEM_TEST_FRACTION = 0.1
"""T4: fraction of items (seeded) that also get a test row with a fresh template draw."""


@dataclass(frozen=True)
class BuildParams:
    """The ``tasks.*`` settings plus what the recommender export adds (its history window)."""

    seed: int
    tasks: tuple[str, ...]
    forms: tuple[str, ...]
    max_hist: int
    """Titles shown for a history: its last ``max_hist`` items."""
    max_len: int
    """The recommender's history window: a ``<user>`` slot carries the last ``max_len`` ids."""
    rank_candidates: int
    t3_test_fraction: float
    explain_train: int
    explain_test: int
    general_ratio: float
    item_test_fraction: float = ITEM_TEST_FRACTION

    @classmethod
    def from_config(cls, cfg: TasksConfig, max_len: int) -> BuildParams:
        return cls(
            seed=cfg.seed,
            tasks=tuple(cfg.tasks),
            forms=tuple(cfg.forms),
            max_hist=cfg.max_hist,
            max_len=max_len,
            rank_candidates=cfg.rank_candidates,
            t3_test_fraction=cfg.t3_test_fraction,
            explain_train=cfg.explain_train,
            explain_test=cfg.explain_test,
            general_ratio=cfg.general_ratio,
        )

    @property
    def slot_forms(self) -> tuple[str, ...]:
        """The forms with embedding slots (T6 and T7 have no behaviour form)."""
        return tuple(form for form in self.forms if form != "behaviour")

    def wants(self, *tasks: str) -> bool:
        """Whether any of ``tasks`` is to be built."""
        return any(task in self.tasks for task in tasks)


@dataclass(frozen=True)
class BuildContext:
    """Everything a builder reads besides the user or item it works on."""

    params: BuildParams
    catalog: Catalog
    templates: TemplateSet


def task_rng(seed: int, task: str, *ids: int) -> np.random.Generator:
    """The generator of ``task`` for one user or item (and optionally one position)."""
    # SeedSequence takes non-negative integers only; a negative seed maps to its 64-bit pattern.
    return np.random.default_rng([int(seed) % 2**64, TASK_IDS.index(task), *(int(i) for i in ids)])
