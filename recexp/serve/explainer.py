"""The LLM side of the service (no Ray): one base model, several aligned adapters, batched answers.

The served run's aligned model is loaded once with :func:`recexp.llm.load_aligned`; its LoRA
adapter is PEFT's ``default``. Further adapters (``serve.adapters``: other align runs over the
same base model, slot tokens and injection mode) are added to the same ``PeftModel`` with
``load_adapter`` and removed with ``delete_adapter``; each keeps its own connectors, swapped
into the one :class:`~recexp.llm.aligned.AlignedLM` while it generates. ``base`` means the base
LM with every adapter disabled (plain chat). A lock serialises switching and generation.

Explanations use the training prompts (:func:`recexp.tasks.online.explain_rows`: same
templates, form rendering and escaped titles) and the explain stage's own answering code
(:func:`recexp.explain.two_turn.answer_and_explain`), so the same (history, item) gets the same
answer and explanation here and in batch. The yes/no ``answer`` is the aligned model's ``Yes``
vs ``No`` score at the answer position of that prompt; with ``serve.follow_up`` (default) the
explanation answers a second user turn asking why (template 0 of ``explain_followup``), else
it is generated from the prompt itself in one pass.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file

from recexp.config import RunConfig
from recexp.errors import DataError
from recexp.explain.generate import generate_batched
from recexp.explain.two_turn import answer_and_explain, answer_token_ids
from recexp.llm.collate import Collator
from recexp.llm.connectors import Connectors
from recexp.llm.errors import ContextLengthError, SlotError
from recexp.llm.export import ADAPTER_DIR, CONNECTORS_FILE, load_aligned, read_manifest
from recexp.llm.load import local_model_copy
from recexp.serve.artifacts import encoder_url, load_catalog, model_url
from recexp.serve.errors import NotFound, Unprocessable
from recexp.tasks.interest import LABELS
from recexp.tasks.online import explain_rows, follow_up_row, follow_up_text
from recexp.tasks.sanitize import escape_text
from recexp.tasks.templates import load_templates

BASE = "base"
"""Adapter id of the base LM without any adapter."""
DEFAULT = "default"
"""Adapter id of the served run's own aligned adapter (PEFT's default adapter name)."""
DEFAULT_FORM = "hybrid"
"""Prompt form when neither ``serve.form`` nor the export names one (RecExplainer-H)."""
MUST_MATCH = ("base_model", "injection_mode", "slots", "vocab_size")
"""Export facts every adapter must share with the served model to run on the same base."""


@dataclass
class Adapter:
    """An aligned adapter resident in the shared ``PeftModel``."""

    name: str
    run_id: str
    form: str
    connectors: Connectors


class ExplainerCore:
    """Aligned LLM with multiplexed adapters; explanation and chat batches."""

    def __init__(self, cfg: RunConfig) -> None:
        torch.set_num_threads(cfg.serve.torch_threads)
        self.cfg = cfg
        endpoint = cfg.store.endpoint_url
        url = model_url(cfg)
        self.model, self.tokenizer = load_aligned(
            url, recommender_uri=encoder_url(cfg), dtype=cfg.serve.dtype, endpoint_url=endpoint
        )
        self.manifest = read_manifest(local_model_copy(url, endpoint))
        self.collator = Collator(self.tokenizer, self.model.slots, cfg.serve.max_prompt_tokens)
        self.catalog = load_catalog(cfg)
        self.templates = load_templates(cfg.tasks.templates, endpoint)
        self.answer_ids = answer_token_ids(self.tokenizer)
        run_id = cfg.inputs.get("align", str(cfg.run_id))
        self.resident = {DEFAULT: Adapter(DEFAULT, run_id, self._form(self.manifest), self.model.connectors)}
        self.lock = threading.RLock()

    def _form(self, manifest: Mapping[str, Any]) -> str:
        return self.cfg.serve.form or manifest.get("form") or DEFAULT_FORM

    @property
    def adapter_names(self) -> list[str]:
        """Every adapter id a request may name (besides ``base``)."""
        return [DEFAULT, *self.cfg.serve.adapters]

    # ------------------------------------------------------------------ adapters

    def load_adapter(self, name: str) -> Adapter | None:
        """Make adapter ``name`` resident (``None`` for ``base``); :class:`NotFound` if unknown."""
        if name == BASE:
            return None
        if name not in self.adapter_names:
            raise NotFound(f"unknown adapter {name!r}; known: {', '.join([BASE, *self.adapter_names])}")
        with self.lock:  # re-entrant: _using calls it while holding the lock
            if name not in self.resident:
                self.resident[name] = self._read_adapter(name)
            return self.resident[name]

    def _read_adapter(self, name: str) -> Adapter:
        """Load a ``serve.adapters`` export into the shared ``PeftModel`` (lock held)."""
        run_id = self.cfg.serve.adapters[name]
        local = local_model_copy(model_url(self.cfg, run_id), self.cfg.store.endpoint_url)
        manifest = read_manifest(local)
        for key in MUST_MATCH:
            if manifest.get(key) != self.manifest.get(key):
                raise Unprocessable(f"adapter {name!r} (run {run_id}) differs from the served model in {key}")
        connectors = Connectors.from_config(manifest["connectors"])
        connectors.load_state_dict(load_file(str(local / CONNECTORS_FILE)), strict=True)
        connectors = connectors.to(next(self.model.connectors.parameters()).dtype).eval()
        self.model.base.load_adapter(str(local / ADAPTER_DIR), adapter_name=name)
        return Adapter(name, run_id, self._form(manifest), connectors)

    def unload_adapter(self, name: str) -> None:
        """Drop a resident adapter (the served run's own one stays)."""
        if name in (BASE, DEFAULT):
            return
        with self.lock:
            if self.resident.pop(name, None) is not None:
                self.model.base.delete_adapter(name)

    @contextlib.contextmanager
    def _using(self, adapter: Adapter | None) -> Iterator[None]:
        """Hold the lock with ``adapter`` active (``None``: all adapters disabled). An adapter
        evicted since the request resolved it is loaded again first."""
        with self.lock:
            if adapter is None:
                with self.model.base.disable_adapter():
                    yield
                return
            adapter = self.load_adapter(adapter.name)
            self.model.base.set_adapter(adapter.name)
            self.model.connectors = adapter.connectors
            yield

    # ------------------------------------------------------------------ explanations

    def follow_up(self, adapter: Adapter) -> str | None:
        """The "why?" turn asked after the answer (None: one pass, ``serve.follow_up=false``)."""
        return follow_up_text(self.templates, adapter.form) if self.cfg.serve.follow_up else None

    def explain_row(self, adapter: Adapter, history: Sequence[int], item_id: int, user_id: int) -> dict[str, Any]:
        """The prompt row of one request, checked (tokenised, with either answer and the
        follow-up too) so a bad one fails alone."""
        try:
            rows = explain_rows(
                self.catalog, [history], [item_id], form=adapter.form, max_hist=self.cfg.tasks.max_hist,
                max_len=self.model.recommender.max_len, templates=self.templates, user_ids=[user_id],
            )
        except DataError as err:
            raise Unprocessable(str(err)) from None
        follow_up = self.follow_up(adapter)
        checked = [rows[0]] + ([follow_up_row(rows[0], word, follow_up) for word in LABELS] if follow_up else [])
        for row in checked:
            self._check_prompt(row)
        return rows[0]

    def explain_batch(self, adapter: Adapter, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Answers and explanations of ``rows`` (one batch)."""
        with self._using(adapter):
            out = answer_and_explain(
                self.model, self.collator, rows, batch_size=len(rows), max_new_tokens=self.cfg.serve.max_new_tokens,
                yes_no_ids=self.answer_ids, follow_up=self.follow_up(adapter),
            )
        return [
            {"answer": answer, "explanation": text, "adapter": adapter.name, "adapter_run_id": adapter.run_id}
            for answer, text in zip(out.answers, out.texts)
        ]

    # ------------------------------------------------------------------ chat

    def chat_row(self, messages: Sequence[Mapping[str, str]]) -> dict[str, Any]:
        """A chat prompt row with every message escaped (no control or slot tokens), checked."""
        turns = [{"role": m["role"], "content": escape_text(m["content"])} for m in messages]
        row = {"messages": turns, "history_ids": [], "item_slot_ids": []}
        self._check_prompt(row)
        return row

    def chat_batch(self, adapter: Adapter | None, jobs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Completions of chat jobs ``{row, max_tokens, temperature, top_p}``; one generation
        per group of jobs with the same decoding settings."""
        groups: dict[tuple, list[int]] = {}
        for i, job in enumerate(jobs):
            groups.setdefault((job["max_tokens"], job["temperature"], job["top_p"]), []).append(i)
        out: list[dict[str, Any]] = [{} for _ in jobs]
        with self._using(adapter):
            for (max_tokens, temperature, top_p), members in groups.items():
                gen = generate_batched(
                    self.model, self.collator, [jobs[i]["row"] for i in members], batch_size=len(members),
                    max_new_tokens=max_tokens, **sampling(temperature, top_p),
                )
                for k, i in enumerate(members):
                    used = gen.new_tokens[k][0]
                    out[i] = {"content": gen.texts[k][0], "prompt_tokens": gen.prompt_tokens[k],
                              "completion_tokens": used, "finish_reason": "length" if used >= max_tokens else "stop"}
        return out

    def _check_prompt(self, row: Mapping[str, Any]) -> None:
        try:
            self.collator.encoder.encode_prompt(row)
        except (ContextLengthError, SlotError) as err:
            raise Unprocessable(str(err)) from None


def sampling(temperature: float | None, top_p: float | None) -> dict[str, Any]:
    """``generate`` keywords: greedy unless a positive temperature is asked for."""
    if not temperature:
        return {"do_sample": False}
    return {"do_sample": True, "temperature": temperature, "top_p": top_p or 1.0}
