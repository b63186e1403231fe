"""The task-builder tests' tiny fake data set with recommender outputs (imported by name:
a module called ``conftest`` is ambiguous when pytest collects several test directories)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

import fakes
from recexp.config import TasksConfig
from recexp.tasks import BuildContext, BuildParams, UserRecord, build_catalog, load_templates, user_records

N_USERS, N_ITEMS, MAX_LEN = 40, 200, 8


@dataclass
class Data:
    sequences: pa.Table
    items: pa.Table
    model: torch.nn.Module
    outputs: dict[str, pa.Table]
    users: list[UserRecord]

    @property
    def lengths(self) -> np.ndarray:
        return np.array([len(s) for s in self.sequences["item_ids"].to_pylist()])


def make_data(n_users: int = N_USERS, n_items: int = N_ITEMS, hostile: list[str] | None = None, seed: int = 0) -> Data:
    torch.set_num_threads(1)
    sequences = fakes.fake_sequences(n_users, n_items, seed)
    items = fakes.fake_items(n_items, hostile)
    model = fakes.fake_encoder(n_items, max_len=MAX_LEN, seed=seed)
    outputs = fakes.recommender_outputs(model, sequences)
    users = user_records(sequences, outputs["topk.parquet"], outputs["thresholds.parquet"])
    return Data(sequences, items, model, outputs, users)


def make_ctx(data: Data, **overrides: object) -> BuildContext:
    params = BuildParams.from_config(TasksConfig(**overrides), max_len=MAX_LEN)  # type: ignore[arg-type]
    return BuildContext(params, build_catalog(data.items), load_templates())
