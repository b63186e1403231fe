"""Explanation quality without a judge: diversity, length and faithfulness of a set of explanations.

Input is the ``explain`` stage's output (``user_id, item_id, position, explanation`` per row)
with the users' sequences: the history an explanation could cite is what its prompt showed,
the last ``max_hist`` items before ``position``. Metrics (flat names, reported as the task
``explanations``, :data:`recexp.explain.report.EXPLANATIONS`):

=================  ===========================================================================
``usr``            unique-sentence ratio (XRec): distinct explanations / explanations
``words_*``        length in words: ``mean``, ``median``, ``std``, ``min``, ``max``
``cite_rate``      share of explanations naming at least one history item
``precision``      cited items that are among the ``k`` most important (leave-one-out)
``recall``         important items that are cited
=================  ===========================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from recexp.explain.faithfulness import faithfulness
from recexp.explain.metrics import length_stats, unique_sentence_ratio
from recexp.recommender.base import Recommender



def shown_histories(rows: Sequence[Mapping[str, Any]], sequences: Mapping[int, np.ndarray], max_hist: int) -> list[list[int]]:
    """Per explanation row, the history its prompt showed: the last ``max_hist`` items before
    ``position``."""
    return [sequences[int(r["user_id"])][: int(r["position"])][-max_hist:].tolist() for r in rows]


def explanation_quality(
    recommender: Recommender, rows: Sequence[Mapping[str, Any]], sequences: Mapping[int, np.ndarray],
    titles: Sequence[str], max_hist: int, k: int = 3,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """The metrics of the module table over ``rows`` (at least one), and per-row faithfulness."""
    texts = [str(r["explanation"]) for r in rows]
    histories = shown_histories(rows, sequences, max_hist)
    items = [int(r["item_id"]) for r in rows]
    summary, records = faithfulness(recommender, texts, histories, items, titles, k)
    metrics = {"usr": unique_sentence_ratio(texts), **{f"words_{n}": v for n, v in length_stats(texts).items()}}
    metrics.update({n: v for n, v in summary.items() if n != "explanations"})
    return metrics, records
