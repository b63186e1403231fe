"""RecExplainer's Table 1 protocol: ask a model the test rows of each task and score its answers.

Every model under test, LLM or not, produces one *prediction* per row, of the shape its task
kind needs (:data:`recexp.explain.eval_rows.TASKS`):

==========  ==========================================  =========================================
kind        LLM answer                                  prediction
==========  ==========================================  =========================================
retrieval   ``k`` beams (beam search, ``k`` returned)   per beam, the item ids its title names
ranking     greedy list of titles                       candidate ids in the answer's order
binary      one forward step                            ``(Yes logit, No logit)`` at the answer
history     greedy list of titles                       the distinct item ids it names, in order
item        greedy title                                the item ids it names
==========  ==========================================  =========================================

and :func:`score` turns predictions into metrics (:mod:`recexp.explain.metrics`). Metric keys
are flat, ``<model>/<task>/<metric>`` (``aligned/t1/hr@5``, ``base/t3/acc``), with
``<model>/<task>/rows`` the examples scored, ``<model>/<task>/grounded`` the share of LLM
answers that name a catalog item, and ``<model>/<task>/skipped`` the prompts longer than the
context (only when there are any).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from recexp.config import EvaluateConfig
from recexp.explain.baselines import Order, predict_baseline
from recexp.explain.eval_rows import TASKS, Row, meta
from recexp.explain.generate import generate_batched, generate_texts
from recexp.explain.grounding import TitleIndex, first_ids
from recexp.explain.metrics import (
    graded_ndcg, history_coverage, item_hit, margin_auc, mean, retrieval_hit, yes_no_correct,
)
from recexp.explain.two_turn import answer_token_ids
from recexp.llm.aligned import AlignedLM
from recexp.llm.collate import Collator
from recexp.llm.errors import ContextLengthError
from recexp.runner import log


@dataclass
class Answers:
    """One model's answers to one task's rows."""

    predictions: list[Any]
    texts: list[list[str]] = field(default_factory=list)
    """The raw generated answers per row (LLMs only)."""


def fitting_rows(collator: Collator, rows: Sequence[Row]) -> tuple[list[Row], int]:
    """The rows whose prompt fits the collator's context, and how many did not."""
    kept = []
    for row in rows:
        try:
            collator.encoder.encode_prompt(row)
        except ContextLengthError:
            continue
        kept.append(row)
    return kept, len(rows) - len(kept)


def _grounded(kind: str, texts: list[list[str]], index: TitleIndex) -> list[Any]:
    """Predictions from generated texts (see the module table)."""
    if kind == "retrieval":
        return [[index.ground(text) for text in answers] for answers in texts]
    if kind == "item":
        return [list(index.ground(answers[0])) for answers in texts]
    if kind == "history":
        return [first_ids(index.ground_list(answers[0])) for answers in texts]
    raise ValueError(f"no grounding for task kind {kind!r}")


def _ranking(rows: Sequence[Row], texts: list[list[str]], titles: Sequence[str], fuzzy: float) -> list[list[int]]:
    """T2 answers grounded among each row's own candidates only."""
    out = []
    for row, answers in zip(rows, texts):
        shown = meta(row)["shown"]
        candidates = TitleIndex([titles[i] for i in shown], shown, fuzzy)
        out.append(first_ids(candidates.ground_list(answers[0])))
    return out


def llm_answers(
    kind: str, model: AlignedLM, collator: Collator, rows: Sequence[Row], index: TitleIndex,
    titles: Sequence[str], settings: EvaluateConfig,
) -> Answers:
    """Ask ``model`` the ``rows`` of one task kind and ground its answers."""
    common = {"batch_size": settings.batch_size}
    if kind == "binary":
        yes_no = answer_token_ids(collator.encoder.tokenizer)
        generation = generate_batched(model, collator, rows, max_new_tokens=1, score_ids=yes_no, **common)
        return Answers([tuple(scores) for scores in generation.first_scores or []], generation.texts)
    if kind == "retrieval":
        if getattr(model, "injector", None) is not None:  # AlignedLM.generate sets the hooks for (B, T); beams run (B * k, T)
            log("evaluate: warning: beam search skips the every_layer q/k/v injection; T1 sees input injection only")
        texts = generate_texts(
            model, collator, rows, max_new_tokens=settings.title_tokens, num_return_sequences=settings.candidates,
            num_beams=settings.candidates, **common,
        )
        return Answers(_grounded(kind, texts, index), texts)
    tokens = settings.list_tokens if kind in ("ranking", "history") else settings.title_tokens
    texts = generate_texts(model, collator, rows, max_new_tokens=tokens, num_return_sequences=1, **common)
    if kind == "ranking":
        return Answers(_ranking(rows, texts, titles, settings.fuzzy), texts)
    return Answers(_grounded(kind, texts, index), texts)


def score(kind: str, rows: Sequence[Row], predictions: Sequence[Any], k: int = 5) -> dict[str, float]:
    """Mean metrics of one task kind over ``rows`` (see :mod:`recexp.explain.metrics`)."""
    infos = [meta(row) for row in rows]
    if kind == "retrieval":
        pairs = [retrieval_hit(p, info["item_id"], k) for p, info in zip(predictions, infos)]
        return {f"hr@{k}": mean([h for h, _ in pairs]), f"ndcg@{k}": mean([n for _, n in pairs])}
    if kind == "ranking":
        return {f"ndcg@{k}": mean([graded_ndcg(p, info["ranked"], k) for p, info in zip(predictions, infos)])}
    if kind == "binary":
        labels = [row["response"] for row in rows]
        return {"acc": mean([yes_no_correct(y, n, label) for (y, n), label in zip(predictions, labels)]),
                "auc": margin_auc([y - n for y, n in predictions], labels)}
    if kind == "history":
        return {"hcr": mean([history_coverage(p, info["shown"]) for p, info in zip(predictions, infos)])}
    if kind == "item":
        return {"acc": mean([item_hit(p, info["item_id"]) for p, info in zip(predictions, infos)])}
    raise ValueError(f"unknown task kind {kind!r}")


def grounded_share(kind: str, predictions: Sequence[Any]) -> float | None:
    """Share of generated titles that name a catalog item (None where answers are not titles)."""
    if kind == "retrieval":
        return mean([float(bool(ids)) for answers in predictions for ids in answers])
    if kind in ("item", "history", "ranking"):
        return mean([float(bool(p)) for p in predictions])
    return None


def task_metrics(model: str, task: str, rows: Sequence[Row], answers: Answers, k: int) -> dict[str, float]:
    """Flat ``<model>/<task>/<metric>`` values of one task (nothing for no rows)."""
    if not rows:
        return {}
    kind = TASKS[task].kind
    values: dict[str, float] = {**score(kind, rows, answers.predictions, k), "rows": float(len(rows))}
    share = grounded_share(kind, answers.predictions) if answers.texts else None
    if share is not None:
        values["grounded"] = share
    return {f"{model}/{task}/{name}": value for name, value in values.items()}


def samples_of(model: str, task: str, rows: Sequence[Row], answers: Answers, n: int) -> list[dict[str, Any]]:
    """The first ``n`` examples with what was asked, answered and expected (for the report)."""
    out = []
    for i, row in enumerate(rows[:n]):
        out.append({
            "model": model, "task": task, "form": row["form"], "user_id": row["user_id"],
            "position": row["position"], "prompt": row["messages"][-1]["content"],
            "answers": answers.texts[i] if answers.texts else [],
            "prediction": answers.predictions[i], "expected": row["response"],
        })
    return out


@dataclass
class Evaluation:
    """What an evaluation produced: flat metrics and a few sample answers."""

    metrics: dict[str, float] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: Evaluation) -> None:
        self.metrics.update(other.metrics)
        self.samples += other.samples


def evaluate_llm(
    name: str, model: AlignedLM, collator: Collator, rows_by_task: Mapping[str, Sequence[Row]],
    titles: Sequence[str], settings: EvaluateConfig,
) -> Evaluation:
    """One LLM on every task's rows (tasks without rows are left out)."""
    index = TitleIndex(titles, fuzzy=settings.fuzzy)
    out = Evaluation()
    for task, all_rows in rows_by_task.items():
        rows, skipped = fitting_rows(collator, all_rows)
        if skipped:
            out.metrics[f"{name}/{task}/skipped"] = float(skipped)
        if not rows:
            continue
        start = time.perf_counter()
        answers = llm_answers(TASKS[task].kind, model, collator, rows, index, titles, settings)
        log(f"evaluate: {name}/{task}: {len(rows)} rows in {time.perf_counter() - start:.1f}s")
        out.metrics.update(task_metrics(name, task, rows, answers, settings.candidates))
        out.samples += samples_of(name, task, rows, answers, settings.samples)
    return out


def evaluate_baseline(
    name: str, order: Order, rows_by_task: Mapping[str, Sequence[Row]], sequences: Mapping[int, Any],
    settings: EvaluateConfig,
) -> Evaluation:
    """A catalog-order baseline (:mod:`recexp.explain.baselines`) on every task's rows."""
    out = Evaluation()
    for task, rows in rows_by_task.items():
        answers = Answers(predict_baseline(TASKS[task].kind, rows, order, sequences, settings.candidates))
        out.metrics.update(task_metrics(name, task, rows, answers, settings.candidates))
        out.samples += samples_of(name, task, rows, answers, settings.samples)
    return out
