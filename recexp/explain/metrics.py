"""Alignment metrics of RecExplainer's Table 1, and text statistics of explanations (pure functions).

Per example (the evaluation averages them over the test rows):

=====================  ============================================================================
T1 ``uid2next``        5 candidate answers (beam search), each grounded to item ids; the target
                       (the recommender's top-1) at 0-based rank ``r`` among them gives
                       ``hr@5 = [r < 5]`` and ``ndcg@5 = [r < 5] / log2(r + 2)``
                       (:func:`retrieval_hit`)
T2 ``uidiid2rank``     NDCG@5 with graded relevance: the recommender's i-th of ``n`` candidates
                       has relevance ``n - i`` (5, 4, ..., 1); the answer's order is scored
                       against the ideal order (:func:`graded_ndcg`)
T3 ``uidiid2binary``   ``Yes`` when its logit at the answer position beats ``No``'s (a tie is
                       ``No``), compared with the label (:func:`yes_no_correct`); and, free
                       of the threshold, the ROC AUC of the margin ``logit(Yes) - logit(No)``
                       over the rows (:func:`margin_auc`: does the margin order the pairs
                       even where the answers are miscalibrated, e.g. all ``Yes``)
T6 ``uid2hist``        history coverage ratio: the share of the shown history items that the
                       answer names (:func:`history_coverage`)
item recovery          the answer names the item (:func:`item_hit`)
=====================  ============================================================================

Text statistics (XRec): :func:`unique_sentence_ratio` and :func:`length_stats`.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Iterable, Sequence

_SPACES = re.compile(r"\s+")


def retrieval_hit(candidates: Sequence[Iterable[int]], target: int, k: int = 5) -> tuple[float, float]:
    """``(hr@k, ndcg@k)`` of one example: ``candidates[i]`` are the ids the i-th answer names."""
    for rank, ids in enumerate(candidates[:k]):
        if target in ids:
            return 1.0, 1.0 / math.log2(rank + 2)
    return 0.0, 0.0


def graded_ndcg(predicted: Sequence[int], ranked: Sequence[int], k: int = 5) -> float:
    """NDCG@k of the order ``predicted`` when ``ranked`` is the true order (relevance ``n - i``).

    Items of ``predicted`` not in ``ranked`` (or repeated) gain nothing; missing ones too."""
    relevance = {item: len(ranked) - i for i, item in enumerate(ranked)}
    seen: set[int] = set()
    dcg = 0.0
    for i, item in enumerate(predicted[:k]):
        if item not in seen:
            dcg += relevance.get(item, 0) / math.log2(i + 2)
            seen.add(item)
    ideal = sum(relevance[item] / math.log2(i + 2) for i, item in enumerate(ranked[:k]))
    return dcg / ideal if ideal > 0 else 0.0


def yes_no_correct(yes_score: float, no_score: float, label: str) -> float:
    """1.0 when the larger of the two logits names ``label`` (``Yes`` needs a strict win)."""
    predicted = "Yes" if yes_score > no_score else "No"
    return float(predicted == label)


def margin_auc(margins: Sequence[float], labels: Sequence[str]) -> float:
    """ROC AUC of ``margins`` for the ``Yes`` labels (Mann-Whitney: the chance that a random ``Yes``
    row has a larger margin than a random ``No`` row, ties count half); 0.5 when one class is absent."""
    pos = [m for m, label in zip(margins, labels) if label == "Yes"]
    neg = [m for m, label in zip(margins, labels) if label != "Yes"]
    if not pos or not neg:
        return 0.5
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def history_coverage(predicted: Iterable[int], history: Iterable[int]) -> float:
    """HCR: distinct history items named by the answer / distinct history items."""
    truth = set(history)
    if not truth:
        raise ValueError("history_coverage needs a non-empty history")
    return len(truth & set(predicted)) / len(truth)


def item_hit(named: Iterable[int], target: int) -> float:
    """1.0 when the answer (grounded to ``named`` ids) names ``target``."""
    return float(target in set(named))


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; a clear error for no values (callers skip empty tasks)."""
    if not values:
        raise ValueError("mean of no values")
    return float(sum(values) / len(values))


def _sentence_key(text: str) -> str:
    return _SPACES.sub(" ", text).strip().casefold()


def unique_sentence_ratio(texts: Sequence[str]) -> float:
    """XRec's USR: distinct explanations (whitespace and case ignored) / explanations."""
    if not texts:
        raise ValueError("unique_sentence_ratio of no texts")
    return len({_sentence_key(t) for t in texts}) / len(texts)


def length_stats(texts: Sequence[str]) -> dict[str, float]:
    """Word counts of ``texts``: ``mean``, ``median``, ``std`` (population), ``min``, ``max``."""
    if not texts:
        raise ValueError("length_stats of no texts")
    words = [len(t.split()) for t in texts]
    return {
        "mean": float(statistics.fmean(words)),
        "median": float(statistics.median(words)),
        "std": float(statistics.pstdev(words)),
        "min": float(min(words)),
        "max": float(max(words)),
    }
