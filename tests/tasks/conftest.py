"""Shared fixtures of the task-builder tests: one tiny fake data set with recommender outputs."""

from __future__ import annotations

import pytest
from tasks_data import Data, make_ctx, make_data

from recexp.tasks import BuildContext


@pytest.fixture(scope="session")
def data() -> Data:
    return make_data()


@pytest.fixture(scope="session")
def ctx(data: Data) -> BuildContext:
    return make_ctx(data)
