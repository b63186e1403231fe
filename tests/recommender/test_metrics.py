"""Metric functions against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from recexp.recommender import Popularity, SASRec, SASRecConfig, build_eval_examples, evaluate_ranking
from recexp.recommender.metrics import full_ranks, rank_metrics, sample_unseen, target_ranks


def test_target_ranks_hand_computed() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.5, 0.3], [0.2, 0.8, 0.7, 0.6], [0.4, 0.4, 0.1, 0.0]])
    targets = torch.tensor([0, 3, 1])
    # row 0: target best -> 0; row 1: 0.8, 0.7 above 0.6 -> 2; row 2: tie counts against -> 1
    assert target_ranks(scores, targets).tolist() == [0, 2, 1]


def test_rank_metrics_hand_computed() -> None:
    ranks = torch.tensor([0, 2, 7, 30])
    m = rank_metrics(ranks, ks=(1, 5, 10))
    assert m["hr@1"].tolist() == [1, 0, 0, 0]
    assert m["hr@5"].tolist() == [1, 1, 0, 0]
    assert m["hr@10"].tolist() == [1, 1, 1, 0]
    expected = [1.0, 1 / math.log2(4), 1 / math.log2(9), 0.0]
    assert m["ndcg@10"].tolist() == pytest.approx(expected)
    assert m["ndcg@5"].tolist() == pytest.approx([1.0, 0.5, 0.0, 0.0])


def test_history_is_excluded_but_not_the_target() -> None:
    scores = torch.tensor([[5.0, 4.0, 3.0, 2.0, 1.0]])
    history = torch.tensor([[True, True, False, True, False]])
    # items 0 and 1 are history -> excluded; target 2 becomes rank 0
    assert full_ranks(scores, torch.tensor([2]), history).tolist() == [0]
    # a repeated target (3 is in history) keeps its score: only item 2 beats it
    assert full_ranks(scores, torch.tensor([3]), history).tolist() == [1]


def test_evaluate_ranking_full_protocol_end_to_end() -> None:
    class Fixed:
        n_items = 6

        def full_scores(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
            return torch.tensor([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]).expand(histories.shape[0], -1)

        def score(self, histories: torch.Tensor, item_ids: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
            return self.full_scores(histories).gather(1, item_ids)

    # user 0: history [0, 1], target 3 -> items 2 above -> rank 1; user 1: history [5, 4], target 0 -> rank 0
    examples = build_eval_examples([[0, 1, 3], [5, 4, 0]], n_items=6, max_len=4, split="test")
    out = evaluate_ranking(Fixed(), examples, ks=(1, 2), num_sampled=0)
    assert out == pytest.approx({"full/hr@1": 0.5, "full/hr@2": 1.0, "full/ndcg@1": 0.5, "full/ndcg@2": (1 + 1 / math.log2(3)) / 2})


def test_sample_unseen_avoids_seen_items_and_is_seeded() -> None:
    seen = torch.zeros(4, 50, dtype=torch.bool)
    seen[:, :45] = True  # only items 45..49 are unseen
    a = sample_unseen(seen, 100, torch.Generator().manual_seed(1))
    b = sample_unseen(seen, 100, torch.Generator().manual_seed(1))
    c = sample_unseen(seen, 100, torch.Generator().manual_seed(2))
    assert a.shape == (4, 100) and bool((a >= 45).all())
    assert torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="every item"):
        sample_unseen(torch.ones(1, 5, dtype=torch.bool), 3, torch.Generator())


def test_sampled100_deterministic_by_seed() -> None:
    gen = torch.Generator().manual_seed(0)
    seqs = torch.randint(0, 200, (64, 8), generator=gen).tolist()
    examples = build_eval_examples(seqs, n_items=200, max_len=8, split="valid")
    model = SASRec(SASRecConfig(n_items=200, d=8, max_len=8, n_blocks=1)).eval()
    a = evaluate_ranking(model, examples, batch_size=16, seed=7)
    b = evaluate_ranking(model, examples, batch_size=16, seed=7)
    c = evaluate_ranking(model, examples, batch_size=16, seed=8)
    assert a == b
    assert a["sampled100/ndcg@10"] != c["sampled100/ndcg@10"]
    assert set(a) == {f"{p}/{m}@{k}" for p in ("full", "sampled100") for m in ("hr", "ndcg") for k in (5, 10, 20)}


def test_sampled_negatives_exclude_the_whole_sequence() -> None:
    class Recorder:
        n_items = 8
        seen: list[torch.Tensor] = []

        def full_scores(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
            return torch.zeros(histories.shape[0], self.n_items)

        def score(self, histories: torch.Tensor, item_ids: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
            self.seen.append(item_ids)
            return torch.zeros(item_ids.shape, dtype=torch.float)

    # valid split: target 2, but the later test item 3 was also interacted with
    examples = build_eval_examples([[0, 1, 2, 3]], n_items=8, max_len=4, split="valid")
    recorder = Recorder()
    evaluate_ranking(recorder, examples, num_sampled=50)
    (candidates,) = recorder.seen
    assert candidates[0, 0] == 2
    assert set(candidates[0, 1:].tolist()) <= {4, 5, 6, 7}


def test_popularity_counts_train_part_only() -> None:
    pop = Popularity.fit([[0, 0, 1, 2, 3], [1, 2, 3]], n_items=5)
    # train parts: [0, 0, 1] and [1]
    assert pop.counts.tolist() == [2.0, 2.0, 0.0, 0.0, 0.0]
