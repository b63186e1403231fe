"""The ``explain`` stage's work on one partition: requests -> explanations table.

For each request (:data:`recexp.explain.requests.REQUEST_SCHEMA`) the :class:`Explainer`

1. fills in ``rank`` / ``rec_score`` where the request has none (explicit pairs) with the
   aligned model's own frozen recommender (:func:`score_requests`);
2. builds the explanation prompt exactly like the training data (:mod:`recexp.tasks.online`);
3. answers and explains in length-sorted batches (:func:`recexp.explain.two_turn.answer_and_explain`):
   ``answer`` is the larger of the ``Yes`` / ``No`` scores at the answer position (the
   RecExplainer T3 reading), ``answer_margin`` their difference; with ``follow_up`` (default)
   the explanation answers a second user turn asking why, else it is generated in one pass;
4. returns one :data:`OUTPUT_SCHEMA` row per request, in request order.

``prompt_hash`` identifies the exact model input (chat turns, slot ids and the follow-up
question), so rows made from the same prompt can be recognised across runs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pyarrow as pa
import torch
from transformers import PreTrainedTokenizerBase

from recexp.explain.two_turn import answer_and_explain, answer_token_ids
from recexp.llm.aligned import AlignedLM
from recexp.llm.collate import Collator
from recexp.tasks.catalog import Catalog
from recexp.tasks.interest import padded_histories
from recexp.tasks.online import explain_rows, follow_up_text
from recexp.tasks.templates import TemplateSet

OUTPUT_SCHEMA = pa.schema(
    [
        ("user_id", pa.int32()),
        ("item_id", pa.int32()),
        ("rank", pa.int32()),
        ("rec_score", pa.float32()),
        ("position", pa.int32()),
        ("answer", pa.string()),
        ("answer_margin", pa.float32()),
        ("explanation", pa.string()),
        ("new_tokens", pa.int32()),
        ("form", pa.string()),
        ("prompt_hash", pa.string()),
        ("adapter_id", pa.string()),
        ("align_run", pa.string()),
        ("run_id", pa.string()),
        ("created_at", pa.timestamp("us", tz="UTC")),
    ]
)
"""``answer`` ``yes``/``no`` from the first-step logits, ``answer_margin`` = logit(Yes) - logit(No);
``position`` the history length the prompt shows; ``adapter_id`` names the aligned model
(see ``ray_jobs/explain.py``), ``align_run`` / ``run_id`` the runs that made the row."""


@dataclass(frozen=True)
class ExplainSettings:
    """How prompts are built and decoded, and the ids stamped on every row."""

    form: str
    template: int
    max_hist: int
    batch_size: int
    max_new_tokens: int
    max_prompt_tokens: int
    adapter_id: str
    align_run: str
    run_id: str
    decoding: Mapping[str, Any] = field(default_factory=dict)
    """Extra ``generate`` keywords (``do_sample``, ``temperature``, ``top_p``, ``num_beams``...)."""
    follow_up: bool = True
    """Two turns (answer, then "why?" with the ``explain_followup`` template of index ``template``);
    False: one pass (the explanation generated from the prompt itself)."""


def prompt_hash(row: Mapping[str, Any], follow_up: str | None = None) -> str:
    """16 hex digits of the SHA-256 of the chat turns and slot ids of a prompt row and, when
    there is one, the follow-up question (one-pass rows hash as before follow-ups existed)."""
    payload = {key: row[key] for key in ("messages", "history_ids", "item_slot_ids")}
    if follow_up:
        payload["follow_up"] = follow_up
    return hashlib.sha256(json.dumps(payload, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def request_prompts(
    catalog: Catalog, templates: TemplateSet, settings: ExplainSettings, max_len: int, requests: pa.Table,
) -> list[dict[str, Any]]:
    """Prompt rows of ``requests``, in order; ``max_len``: the recommender's history window."""
    return explain_rows(
        catalog, requests["history"].to_pylist(), requests["item_id"].to_pylist(), form=settings.form,
        max_hist=settings.max_hist, max_len=max_len, template_index=settings.template, templates=templates,
        user_ids=requests["user_id"].to_pylist(),
    )


def settings_follow_up(templates: TemplateSet, settings: ExplainSettings) -> str | None:
    """The follow-up question of ``settings`` (None: one pass)."""
    return follow_up_text(templates, settings.form, settings.template) if settings.follow_up else None


def request_hashes(
    catalog: Catalog, templates: TemplateSet, settings: ExplainSettings, max_len: int, requests: pa.Table,
) -> list[str]:
    """The ``prompt_hash`` each request's row gets (the explain recipe matches reusable rows on it)."""
    follow_up = settings_follow_up(templates, settings)
    return [prompt_hash(row, follow_up) for row in request_prompts(catalog, templates, settings, max_len, requests)]


@torch.no_grad()
def score_requests(recommender: Any, requests: pa.Table) -> pa.Table:
    """``rank`` / ``rec_score`` filled in where ``rank < 0``: the item's score given the history
    and its 1-based rank among the items outside the history (ties count in its favour; an
    item of the history itself ranks as if it were outside)."""
    todo = np.flatnonzero(requests["rank"].to_numpy() < 0)
    if not len(todo):
        return requests
    histories = [np.asarray(requests["history"][int(i)].as_py(), dtype=np.int64) for i in todo]
    padded = padded_histories(histories, recommender.pad_id, recommender.max_len)  # (R, max_len)
    device = recommender.item_embeddings().device
    scores = recommender.full_scores(torch.from_numpy(padded).to(device)).float().cpu()  # (R, n_items)
    items = torch.from_numpy(requests["item_id"].to_numpy()[todo].astype(np.int64))
    own = scores[torch.arange(len(todo)), items].clone()  # (R,) before the history is masked
    for row, history in enumerate(histories):
        scores[row, torch.from_numpy(history)] = float("-inf")
    ranks = (scores > own[:, None]).sum(1) + 1  # (R,)
    rank = requests["rank"].to_numpy().copy()
    rec_score = requests["rec_score"].to_numpy().copy()
    rank[todo], rec_score[todo] = ranks.numpy(), own.numpy()
    requests = requests.set_column(2, "rank", pa.array(rank, pa.int32()))
    return requests.set_column(3, "rec_score", pa.array(rec_score, pa.float32()))


class Explainer:
    """An aligned model ready to explain request tables (one per worker)."""

    def __init__(
        self, model: AlignedLM, tokenizer: PreTrainedTokenizerBase, catalog: Catalog, templates: TemplateSet,
        settings: ExplainSettings,
    ) -> None:
        self.model = model.eval()
        self.collator = Collator(tokenizer, model.slots, settings.max_prompt_tokens)
        self.catalog, self.templates, self.settings = catalog, templates, settings
        self.answer_ids = answer_token_ids(tokenizer)
        self.follow_up = settings_follow_up(templates, settings)

    def prompts(self, requests: pa.Table) -> list[dict[str, Any]]:
        """Prompt rows (turn 1) of ``requests``, in order."""
        return request_prompts(self.catalog, self.templates, self.settings, self.model.recommender.max_len, requests)

    def explain(self, requests: pa.Table) -> tuple[pa.Table, int]:
        """One :data:`OUTPUT_SCHEMA` row per request (same order) and the tokens generated."""
        s = self.settings
        requests = score_requests(self.model.recommender, requests)
        rows = self.prompts(requests)
        out = answer_and_explain(
            self.model, self.collator, rows, batch_size=s.batch_size, max_new_tokens=s.max_new_tokens,
            yes_no_ids=self.answer_ids, follow_up=self.follow_up, **dict(s.decoding),
        )
        n = requests.num_rows
        columns = {name: requests[name] for name in ("user_id", "item_id", "rank", "rec_score", "position")}
        columns |= {
            "answer": pa.array(out.answers, pa.string()),
            "answer_margin": pa.array(out.margins, pa.float32()),
            "explanation": pa.array(out.texts, pa.string()),
            "new_tokens": pa.array(out.new_tokens, pa.int32()),
            "form": pa.array([s.form] * n, pa.string()),
            "prompt_hash": pa.array([prompt_hash(row, self.follow_up) for row in rows], pa.string()),
            "adapter_id": pa.array([s.adapter_id] * n, pa.string()),
            "align_run": pa.array([s.align_run] * n, pa.string()),
            "run_id": pa.array([s.run_id] * n, pa.string()),
            "created_at": pa.array([datetime.now(timezone.utc)] * n, OUTPUT_SCHEMA.field("created_at").type),
        }
        return pa.table(columns, schema=OUTPUT_SCHEMA), out.total_new_tokens
