"""Helpers of the service tests: test config, readiness wait, reference answers computed
without Serve (imported by name: a module called ``conftest`` is ambiguous when pytest
collects several test directories)."""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

import requests
import torch

from recexp.config import RunConfig, load_config
from recexp.explain.generate import generate_batched
from recexp.explain.two_turn import answer_and_explain, answer_token_ids
from recexp.llm.collate import Collator
from recexp.llm.export import load_aligned
from recexp.serve.artifacts import encoder_url, load_catalog, model_url
from recexp.tasks.online import explain_rows, follow_up_text
from recexp.tasks.templates import load_templates

ROOT = Path(__file__).resolve().parents[2]
TEST_CONFIG = ROOT / "configs" / "serve" / "test.yaml"
TOKEN = "test-token-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_config(root: str, overrides: list[str] = ()) -> RunConfig:
    """``configs/serve/test.yaml`` for run ``run-a`` under ``root`` on a free port."""
    base = [f"store.root={root}", "run_id=run-a", f"serve.port={free_port()}", "tasks.max_hist=2"]
    return load_config(str(TEST_CONFIG), base + list(overrides))


def wait_ready(url: str, token: str | None = None, timeout: float = 300.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if requests.get(f"{url}/readyz", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} not ready after {timeout} s")


def reference_explanations(cfg: RunConfig, run_id: str, pairs: list[tuple[list[int], int]]) -> list[tuple[str, str]]:
    """``(answer, explanation)`` per ``(history, item)`` from the adapter of ``run_id`` loaded
    alone with ``load_aligned`` and answered one prompt at a time (no Serve, no batching), in
    two turns unless ``serve.follow_up`` is off (the explain stage's answering code)."""
    torch.set_num_threads(1)
    model, tokenizer = load_aligned(model_url(cfg, run_id), recommender_uri=encoder_url(cfg),
                                    endpoint_url=cfg.store.endpoint_url)
    collator = Collator(tokenizer, model.slots, cfg.serve.max_prompt_tokens)
    catalog = load_catalog(cfg)
    follow_up = follow_up_text(load_templates(), "hybrid") if cfg.serve.follow_up else None
    out = []
    for history, item in pairs:
        rows = explain_rows(catalog, [history], [item], form="hybrid", max_hist=cfg.tasks.max_hist,
                            max_len=model.recommender.max_len)
        got = answer_and_explain(model, collator, rows, batch_size=1, max_new_tokens=cfg.serve.max_new_tokens,
                                 yes_no_ids=answer_token_ids(tokenizer), follow_up=follow_up)
        out.append((got.answers[0], got.texts[0]))
    return out


def reference_chat(cfg: RunConfig, run_id: str | None, messages: list[dict], max_tokens: int) -> str:
    """Greedy reply of the adapter of ``run_id`` loaded alone (``None``: the base LM, adapter
    disabled) to ``messages`` (text that needs no escaping)."""
    torch.set_num_threads(1)
    model, tokenizer = load_aligned(model_url(cfg, run_id or "run-a"), recommender_uri=encoder_url(cfg))
    collator = Collator(tokenizer, model.slots, cfg.serve.max_prompt_tokens)
    rows = [{"messages": messages, "history_ids": [], "item_slot_ids": []}]
    with model.base.disable_adapter() if run_id is None else contextlib.nullcontext():
        gen = generate_batched(model, collator, rows, batch_size=1, max_new_tokens=max_tokens)
    return gen.texts[0][0]
