"""Fixtures of the explain tests: tiny models from ``tests/llm/llm_tiny.py``, fake upstream stages
from ``tests/tasks/fakes.py`` (both directories put on ``sys.path``; nothing is downloaded)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

TESTS = Path(__file__).resolve().parents[1]
for helper_dir in ("llm", "tasks"):
    if str(TESTS / helper_dir) not in sys.path:
        sys.path.append(str(TESTS / helper_dir))

import llm_tiny  # noqa: E402
from explain_tiny import lively  # noqa: E402
from llm_tiny import Parts  # noqa: E402


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the machine is shared: more threads only contend


@pytest.fixture(scope="session")
def tiny_template() -> Parts:
    """Tiny tokenizer (with slots), tiny Llama (:func:`lively`), tiny SASRec, connectors; tests get copies."""
    parts = llm_tiny.build_parts(llm_tiny.tiny_tokenizer())
    lively(parts.base)
    return parts


@pytest.fixture
def parts(tiny_template: Parts) -> Parts:
    return tiny_template.copy()
