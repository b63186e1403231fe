"""Metric functions and title grounding against hand-computed cases."""

from __future__ import annotations

import math

import pytest

from recexp.explain.grounding import TitleIndex, first_ids, normalize_title, split_list
from recexp.explain.metrics import (
    graded_ndcg,
    history_coverage,
    item_hit,
    length_stats,
    margin_auc,
    mean,
    retrieval_hit,
    unique_sentence_ratio,
    yes_no_correct,
)

CATALOG = ["Zelda: Breath of the Wild", "Mario Kart 8", "Space Quest", "Mario Kart 8", "Pokémon Ｒed"]


def test_normalize_title_ignores_case_punctuation_width_and_spacing() -> None:
    assert normalize_title("  Zelda:  Breath of the WILD. ") == "zelda breath of the wild"
    assert normalize_title("Pokémon Ｒed") == "pokémon red"  # NFKC folds the full-width letter
    assert normalize_title('"Space_Quest"!!') == "space quest"
    assert normalize_title(" ;; ") == ""


def test_split_list_drops_numbering_and_empty_pieces() -> None:
    text = '1. "Mario Kart 8"; 2) Space Quest\n- Zelda: Breath of the Wild;  ; '
    assert split_list(text) == ['"Mario Kart 8"', "Space Quest", "Zelda: Breath of the Wild"]


def test_exact_grounding_with_shared_titles() -> None:
    index = TitleIndex(CATALOG)
    assert index.ground("zelda - breath of the wild") == (0,)
    assert index.ground('"Mario Kart 8"') == (1, 3)  # two items share the title: both are named
    assert index.ground("pokemon red") == ()  # an accent is part of the title, exact mode
    assert index.ground("") == () and index.ground("Mario Kart") == ()
    assert len(index) == 4


def test_fuzzy_grounding_takes_the_closest_title_above_the_cutoff() -> None:
    index = TitleIndex(CATALOG, fuzzy=0.8)
    assert index.ground("Mario Kart") == (1, 3)  # ratio 2*10/(10+12) = 0.91
    assert index.ground("Zelda Breath of Wild") == (0,)
    assert index.ground("Tetris") == ()
    with pytest.raises(ValueError, match="fuzzy"):
        TitleIndex(CATALOG, fuzzy=1.5)


def test_candidate_index_and_first_ids() -> None:
    shown = [7, 3, 9]
    titles = {7: "Space Quest", 3: "Mario Kart 8", 9: "Zelda"}
    index = TitleIndex([titles[i] for i in shown], shown)
    grounded = index.ground_list("zelda; Unknown Game; mario kart 8; Zelda")
    assert grounded == [(9,), (), (3,), (9,)]
    assert first_ids(grounded) == [9, 3]  # ungrounded and repeated pieces dropped
    assert first_ids([(1, 3), (1, 3)], allowed=[1, 3]) == [1, 3]  # a shared title names each item once
    assert first_ids([(1, 3)], allowed=[3]) == [3]


def test_retrieval_hit_rank_and_gain() -> None:
    candidates = [(4,), (), (2, 9), (1,), (5,)]
    assert retrieval_hit(candidates, 4) == (1.0, 1.0)  # rank 0: 1 / log2(2)
    assert retrieval_hit(candidates, 9) == (1.0, 0.5)  # rank 2: 1 / log2(4)
    hr, ndcg = retrieval_hit(candidates, 1)
    assert hr == 1.0 and ndcg == pytest.approx(1 / math.log2(5))  # rank 3
    assert retrieval_hit(candidates, 7) == (0.0, 0.0)
    assert retrieval_hit(candidates, 5, k=4) == (0.0, 0.0)  # rank 4 is past k


def test_graded_ndcg_hand_computed() -> None:
    ranked = [10, 20]  # relevance 2, 1
    assert graded_ndcg([10, 20], ranked) == 1.0
    ideal = 2 / 1 + 1 / math.log2(3)  # 2.6309
    assert graded_ndcg([20, 10], ranked) == pytest.approx((1 / 1 + 2 / math.log2(3)) / ideal)  # 0.8597
    assert graded_ndcg([10], ranked) == pytest.approx(2 / ideal)  # a missing item gains nothing
    assert graded_ndcg([10, 10, 20], ranked) == pytest.approx((2 + 1 / 2) / ideal)  # a repeat gains nothing
    assert graded_ndcg([99, 20], ranked) == pytest.approx((1 / math.log2(3)) / ideal)
    assert graded_ndcg([], ranked) == 0.0


def test_graded_ndcg_of_five_reversed() -> None:
    ranked = [1, 2, 3, 4, 5]  # relevance 5..1
    dcg = 1 / 1 + 2 / math.log2(3) + 3 / 2 + 4 / math.log2(5) + 5 / math.log2(6)  # 7.4188
    idcg = 5 / 1 + 4 / math.log2(3) + 3 / 2 + 2 / math.log2(5) + 1 / math.log2(6)  # 10.2719
    assert graded_ndcg([5, 4, 3, 2, 1], ranked) == pytest.approx(dcg / idcg)
    assert graded_ndcg([5, 4, 3, 2, 1], ranked) == pytest.approx(0.72224, abs=1e-5)


def test_yes_no_from_logits() -> None:
    assert yes_no_correct(2.0, 1.0, "Yes") == 1.0
    assert yes_no_correct(2.0, 1.0, "No") == 0.0
    assert yes_no_correct(-3.0, 0.5, "No") == 1.0
    assert yes_no_correct(1.0, 1.0, "No") == 1.0  # a tie is No


def test_margin_auc_by_hand() -> None:
    labels = ["Yes", "No", "Yes", "No"]
    assert margin_auc([3.0, 1.0, 2.0, 0.0], labels) == 1.0  # every Yes above every No
    assert margin_auc([0.0, 1.0, 2.0, 3.0], labels) == 0.25  # Yes 0 beats no No, Yes 2 beats No 1
    assert margin_auc([5.0, 5.0, 5.0, 5.0], labels) == 0.5  # all tied (e.g. always Yes, same margin)
    assert margin_auc([1.0, 1.0, 2.0, 0.0], labels) == 0.875  # (1 + 0.5 tie) + (1 + 1) over 4 pairs
    assert margin_auc([1.0, 2.0], ["Yes", "Yes"]) == 0.5  # one class only


def test_history_coverage_and_item_hit() -> None:
    assert history_coverage([1, 2, 9], [1, 2, 3, 4]) == 0.5
    assert history_coverage([1, 1, 1], [1, 2]) == 0.5
    assert history_coverage([], [3]) == 0.0
    with pytest.raises(ValueError):
        history_coverage([1], [])
    assert item_hit((1, 3), 3) == 1.0 and item_hit((), 3) == 0.0


def test_mean_and_text_statistics() -> None:
    assert mean([1.0, 0.0, 0.5]) == 0.5
    with pytest.raises(ValueError):
        mean([])
    assert unique_sentence_ratio(["Great game.", "great   GAME.", "Fun"]) == pytest.approx(2 / 3)
    stats = length_stats(["one two three", "one", "a b c d e"])  # 3, 1, 5 words
    assert stats == {"mean": 3.0, "median": 3.0, "std": pytest.approx(math.sqrt(8 / 3)), "min": 1.0, "max": 5.0}
