"""Fixtures for the LLM tests: a tiny config-built Llama, a tiny SASRec, no network, no weights.

The tokenizer is SmolLM2's when the default model was fetched on this machine
(``python -m recexp.llm.fetch_default``), else a tiny BPE trained offline; both have a
ChatML chat template with ``<|im_end|>`` ending a turn.
"""

from __future__ import annotations

import copy

import llm_tiny
import pytest
import torch
from llm_tiny import Parts
from transformers import PreTrainedTokenizerBase


@pytest.fixture(autouse=True)
def _seed_and_threads() -> None:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the machine is shared: more threads only contend


@pytest.fixture(scope="session")
def _base_tokenizer() -> PreTrainedTokenizerBase:
    return llm_tiny.smollm_tokenizer() or llm_tiny.tiny_tokenizer()


@pytest.fixture
def tokenizer(_base_tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """A fresh copy (tests add slot tokens to it)."""
    return copy.deepcopy(_base_tokenizer)


@pytest.fixture(scope="session")
def _template(_base_tokenizer: PreTrainedTokenizerBase) -> Parts:
    """Built once per session (a 49k-token vocabulary makes this take a second); tests get copies."""
    return llm_tiny.build_parts(copy.deepcopy(_base_tokenizer))


@pytest.fixture(scope="session")
def tiny_template() -> Parts:
    """Like ``_template`` but always with the tiny tokenizer (for file round trips and training
    loops, where a 49k vocabulary only costs time)."""
    return llm_tiny.build_parts(llm_tiny.tiny_tokenizer())


@pytest.fixture
def parts(_template: Parts) -> Parts:
    """A tiny Llama with the slot tokens, a tiny SASRec and fresh connectors (the tokenizer is
    shared between tests: do not change it; the ``tokenizer`` fixture gives a private copy)."""
    return _template.copy()


@pytest.fixture
def tiny_parts(tiny_template: Parts) -> Parts:
    """``parts`` with the tiny tokenizer."""
    return tiny_template.copy()
