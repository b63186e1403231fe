"""The LLM judge and the probes over one or more *sources* of explanations.

A source is the rows of one committed ``explain`` stage (``user_id, item_id, position,
explanation`` and, when written, ``rec_score``): the run's own (``aligned``) and those of
``evaluate.explanation_runs`` (named by run id). Sources are compared on the same examples: the
(user, item) pairs that every source explained (:func:`common_rows`).

==============================  ==================================================================
judge (:func:`judge_sources`)   each source's first ``judge.max_rows`` pairs scored 0-3 by the
                                judge (:mod:`recexp.explain.judge`): ``<source>/explanations/judge_*``
distinction                     which source wrote an explanation (>= 2 sources):
                                ``aligned/explanations/distinction_{acc,chance,sources,rows}``
coherence                       the recommender's score from the text, per source with ``rec_score``:
                                ``<source>/explanations/coherence_{r2,mse,pearson,rows}``
==============================  ==================================================================

Both probes (:func:`probe_sources`, :mod:`recexp.explain.classifiers`) run on sentence
embeddings of the first ``evaluate.max_rows`` common pairs, and only when there are at least
``evaluate.classifier_min_rows`` of them (the encoder is not even loaded otherwise).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from recexp.config import EvaluateConfig, JudgeConfig
from recexp.explain.classifiers import coherence, distinction
from recexp.explain.encoder import SentenceEncoder
from recexp.explain.evaluate import Evaluation
from recexp.explain.judge import JudgeClient, Verdict, api_key, judge_explanations, load_rubric
from recexp.explain.quality import shown_histories
from recexp.explain.report import EXPLANATIONS
from recexp.runner import log

Row = Mapping[str, Any]
MAIN_SOURCE = "aligned"
"""The name of this run's own explanations (the distinction metrics are reported under it)."""


def _pair(row: Row) -> tuple[int, int]:
    return int(row["user_id"]), int(row["item_id"])


def _named(source: str, metrics: Mapping[str, float], prefix: str = "") -> dict[str, float]:
    return {f"{source}/{EXPLANATIONS}/{prefix}{name}": value for name, value in metrics.items()}


def common_rows(sources: Mapping[str, Sequence[Row]], limit: int = 0) -> dict[str, list[Row]]:
    """Per source, its rows of the (user, item) pairs that every source explained (the first row
    of a pair), sorted by pair, the first ``limit`` pairs (0 = all)."""
    by_pair = {name: {} for name in sources}
    for name, rows in sources.items():
        for row in rows:
            by_pair[name].setdefault(_pair(row), row)
    shared = sorted(set.intersection(*(set(p) for p in by_pair.values()))) if by_pair else []
    shared = shared[:limit] if limit else shared
    return {name: [by_pair[name][p] for p in shared] for name in sources}


def judge_samples(source: str, rows: Sequence[Row], verdicts: Sequence[Verdict], n: int) -> list[dict[str, Any]]:
    """The first ``n`` verdicts, and every unparsed one (kept raw for the report)."""
    return [
        {"model": source, "task": EXPLANATIONS, "kind": "judge", "user_id": row["user_id"], "item_id": row["item_id"],
         "explanation": row["explanation"], "judge_reply": verdict.reply, "judge_score": verdict.score}
        for i, (row, verdict) in enumerate(zip(rows, verdicts)) if i < n or verdict.score is None
    ]


def judge_sources(
    sources: Mapping[str, Sequence[Row]], sequences: Mapping[int, np.ndarray], titles: Sequence[str], max_hist: int,
    cfg: JudgeConfig, samples: int, endpoint_url: str | None = None,
) -> Evaluation:
    """Every source's explanations of the common pairs scored by the judge at ``cfg.base_url``."""
    rubric = load_rubric(cfg.rubric, endpoint_url)
    client = JudgeClient(cfg, api_key(cfg))
    out = Evaluation()
    for source, rows in common_rows(sources, cfg.max_rows).items():
        histories = [[titles[i] for i in h] for h in shown_histories(rows, sequences, max_hist)]
        items = [titles[int(r["item_id"])] for r in rows]
        metrics, verdicts = judge_explanations(client, rubric, histories, items, [str(r["explanation"]) for r in rows])
        out.metrics.update(_named(source, metrics))
        out.samples += judge_samples(source, rows, verdicts, samples)
        log(f"evaluate: judge {cfg.model} at {cfg.base_url}: {source}: {len(rows)} explanations, "
            f"mean {metrics.get('judge_mean', float('nan')):.3f}, {int(metrics['judge_unparsed'])} unparsed")
    return out


def probe_sources(
    sources: Mapping[str, Sequence[Row]], load_encoder: Callable[[], SentenceEncoder], settings: EvaluateConfig,
) -> dict[str, float]:
    """Distinction (>= 2 sources) and coherence (sources with ``rec_score``) metrics; nothing when
    fewer than ``settings.classifier_min_rows`` common pairs exist."""
    rows = common_rows(sources, settings.max_rows)
    pairs = [_pair(r) for r in next(iter(rows.values()), [])]
    if len(pairs) < settings.classifier_min_rows:
        log(f"evaluate: classifiers skipped: {len(pairs)} common explanations, need {settings.classifier_min_rows}")
        return {}
    encoder = load_encoder()
    features = {name: encoder.encode([str(r["explanation"]) for r in source]) for name, source in rows.items()}
    knobs = {"folds": settings.classifier_folds, "seed": settings.seed, "l2": settings.classifier_l2}
    metrics: dict[str, float] = {}
    if len(rows) >= 2:
        labels = np.repeat(np.arange(len(rows)), len(pairs))  # source index per row, sources stacked
        found = distinction(np.concatenate(list(features.values())), labels, pairs * len(rows), **knobs)
        metrics.update(_named(MAIN_SOURCE, found, "distinction_"))
    for name, source in rows.items():
        if all(r.get("rec_score") is not None for r in source):
            target = [float(r["rec_score"]) for r in source]
            metrics.update(_named(name, coherence(features[name], target, **knobs), "coherence_"))
    return metrics
