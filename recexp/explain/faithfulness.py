"""Faithfulness of explanations: do the history items an explanation cites matter to the recommender?

None of the papers measures this, so the definition is ours:

1. **attribution** (:func:`loo_attributions`): leave-one-out with the frozen encoder. For a
   history ``h`` and a target item, the attribution of ``h[j]`` is
   ``score(h, item) - score(h without h[j], item)``: how much the recommender's score for the
   target drops when that item is removed. A one-item history attributes ``1.0`` to its item
   (removing it leaves no user to score).
2. **important items** (:func:`important_items`): the ``k`` history items with the largest
   positive drop (fewer when fewer items have a positive drop).
3. **cited items** (:func:`cited_items`): history items whose normalised title occurs, as whole
   words, in the normalised explanation (titles shorter than ``MIN_TITLE_CHARS`` are ignored:
   they would match by accident).
4. **precision / recall** (:func:`precision_recall`): of the cited items, the share that are
   important; of the important items, the share cited. Precision is undefined for an
   explanation citing nothing and recall for one with no important item: such explanations
   are left out of that average, and ``cite_rate`` reports how many cite anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from recexp.explain.grounding import normalize_title
from recexp.recommender.base import Recommender
from recexp.tasks.interest import padded_histories

MIN_TITLE_CHARS = 3


@torch.no_grad()
def loo_attributions(recommender: Recommender, history: Sequence[int], item: int) -> np.ndarray:
    """Score drop ``(L,)`` for the target ``item`` when each of the ``L`` history items is removed."""
    ids = np.asarray(history, dtype=np.int64)
    if len(ids) == 0:
        raise ValueError("leave-one-out attribution needs a non-empty history")
    if len(ids) == 1:
        return np.ones(1)
    variants = [ids] + [np.delete(ids, j) for j in range(len(ids))]  # full history, then each item left out
    batch = torch.from_numpy(padded_histories(variants, recommender.pad_id, len(ids)))  # (L+1, L)
    device = recommender.item_embeddings().device
    targets = torch.full((len(variants), 1), int(item), dtype=torch.long, device=device)  # (L+1, 1)
    scores = recommender.score(batch.to(device), targets)[:, 0].double().cpu().numpy()  # (L+1,)
    return scores[0] - scores[1:]


def important_items(history: Sequence[int], attributions: np.ndarray, k: int) -> list[int]:
    """The ``k`` history items with the largest positive attribution, largest first."""
    order = np.argsort(-attributions, kind="stable")
    return [int(history[j]) for j in order[:k] if attributions[j] > 0]


def cited_items(text: str, history: Sequence[int], titles: Sequence[str]) -> list[int]:
    """History items whose title the explanation names (whole normalised words), in history order."""
    haystack = f" {normalize_title(text)} "
    cited = []
    for item in dict.fromkeys(int(i) for i in history):
        key = normalize_title(titles[item])
        if len(key) >= MIN_TITLE_CHARS and f" {key} " in haystack:
            cited.append(item)
    return cited


def precision_recall(cited: Sequence[int], important: Sequence[int]) -> tuple[float | None, float | None]:
    """``(precision, recall)`` of the cited items against the important ones (None: undefined)."""
    hits = len(set(cited) & set(important))
    precision = hits / len(set(cited)) if cited else None
    recall = hits / len(set(important)) if important else None
    return precision, recall


def explanation_faithfulness(
    recommender: Recommender, text: str, history: Sequence[int], item: int, titles: Sequence[str], k: int = 3
) -> dict[str, Any]:
    """One explanation: its cited and important items, precision and recall."""
    attributions = loo_attributions(recommender, history, item)
    important = important_items(history, attributions, k)
    cited = cited_items(text, history, titles)
    precision, recall = precision_recall(cited, important)
    return {"cited": cited, "important": important, "precision": precision, "recall": recall}


def faithfulness(
    recommender: Recommender, texts: Sequence[str], histories: Sequence[Sequence[int]], items: Sequence[int],
    titles: Sequence[str], k: int = 3,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Averaged ``precision``, ``recall``, ``cite_rate`` (and ``explanations``) over explanations,
    and the per-explanation records."""
    records = [
        explanation_faithfulness(recommender, t, h, i, titles, k) for t, h, i in zip(texts, histories, items)
    ]
    summary = {"explanations": float(len(records))}
    if records:
        summary["cite_rate"] = float(np.mean([bool(r["cited"]) for r in records]))
    for name in ("precision", "recall"):
        defined = [r[name] for r in records if r[name] is not None]
        if defined:
            summary[name] = float(np.mean(defined))
    return summary, records
