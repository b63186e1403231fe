"""Faithfulness of cited history items on a constructed recommender where the answer is known.

MF with the history-mean user: item 3 (the target) points the same way as item 0 only, so
removing item 0 from the history [0, 1, 2] lowers the target's score (1/3 -> 0) and removing
item 1 or 2 raises it (1/3 -> 1/2): item 0 is the one important item.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recexp.explain.faithfulness import (
    cited_items,
    explanation_faithfulness,
    faithfulness,
    important_items,
    loo_attributions,
    precision_recall,
)
from recexp.explain.quality import explanation_quality, shown_histories
from recexp.recommender.config import MFConfig
from recexp.recommender.mf import MF

TITLES = ["Space Quest", "Mario Kart 8", "Zelda", "Doom", "Myst", "Go"]
HISTORY, TARGET = [0, 1, 2], 3


@pytest.fixture
def recommender() -> MF:
    model = MF(MFConfig(n_items=6, d=3, max_len=8, user_repr="history_mean")).eval()
    vectors = [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0]]  # last: padding
    with torch.no_grad():
        model.item_emb.weight.copy_(torch.tensor(vectors, dtype=torch.float32))
    return model


def test_leave_one_out_attribution_hand_computed(recommender: MF) -> None:
    drops = loo_attributions(recommender, HISTORY, TARGET)
    assert drops == pytest.approx([1 / 3, -1 / 6, -1 / 6])
    assert important_items(HISTORY, drops, k=3) == [0]  # only positive drops count
    assert loo_attributions(recommender, [4], TARGET).tolist() == [1.0]  # one item: it is the cause
    with pytest.raises(ValueError):
        loo_attributions(recommender, [], TARGET)


def test_important_items_order_and_cut() -> None:
    assert important_items([7, 8, 9, 10], np.array([0.1, 0.5, -0.2, 0.3]), k=2) == [8, 10]
    assert important_items([7, 8], np.array([0.0, -1.0]), k=2) == []


def test_cited_items_whole_words_only() -> None:
    text = "Since you enjoyed SPACE QUEST and zelda, Doom fits. Going further..."
    assert cited_items(text, [0, 1, 2, 5], TITLES) == [0, 2]  # "Go" is too short to count
    assert cited_items("Zeldas are great", [2], TITLES) == []  # not a whole word


def test_precision_recall_cases() -> None:
    assert precision_recall([0], [0]) == (1.0, 1.0)
    assert precision_recall([0, 1], [0]) == (0.5, 1.0)
    assert precision_recall([], [0]) == (None, 0.0)
    assert precision_recall([1], []) == (0.0, None)


def test_faithfulness_of_explanations(recommender: MF) -> None:
    texts = [
        "Because you played Space Quest, you will like Doom.",  # cites the important item
        "You liked Mario Kart 8 and Zelda.",  # cites two unimportant items
        "A great game for everyone.",  # cites nothing
    ]
    one = explanation_faithfulness(recommender, texts[0], HISTORY, TARGET, TITLES)
    assert one == {"cited": [0], "important": [0], "precision": 1.0, "recall": 1.0}
    summary, records = faithfulness(recommender, texts, [HISTORY] * 3, [TARGET] * 3, TITLES)
    assert [r["precision"] for r in records] == [1.0, 0.0, None]
    assert summary == {
        "explanations": 3.0, "cite_rate": pytest.approx(2 / 3), "precision": 0.5, "recall": pytest.approx(1 / 3),
    }


def test_explanation_quality_of_explain_rows(recommender: MF) -> None:
    """Rows as the explain stage writes them: the citable history is the last ``max_hist`` items
    before ``position``."""
    sequences = {0: np.array([0, 1, 2, 3]), 1: np.array([4, 0, 1, 2, 3])}
    rows = [
        {"user_id": 0, "item_id": TARGET, "position": 3, "explanation": "Space Quest fans love Doom."},
        {"user_id": 1, "item_id": TARGET, "position": 4, "explanation": "Space Quest fans love Doom."},
    ]
    assert shown_histories(rows, sequences, max_hist=3) == [HISTORY, HISTORY]  # user 1's item 4 is not shown
    metrics, records = explanation_quality(recommender, rows, sequences, TITLES, max_hist=3)
    assert metrics == {
        "usr": 0.5, "words_mean": 5.0, "words_median": 5.0, "words_std": 0.0, "words_min": 5.0, "words_max": 5.0,
        "cite_rate": 1.0, "precision": 1.0, "recall": 1.0,
    }
    assert [r["cited"] for r in records] == [[0], [0]]
