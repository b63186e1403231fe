"""Training steps on a toy sequential pattern; SASRec must beat popularity on it."""

from __future__ import annotations

import pytest
import torch

from recexp.recommender import (
    MF,
    MFConfig,
    Popularity,
    SASRec,
    SASRecConfig,
    build_eval_examples,
    build_train_examples,
    evaluate,
    iterate_batches,
    make_optimizer,
    train_one_epoch,
)

N_ITEMS = 30


@pytest.mark.parametrize("loss", ["ce", "bce"])
def test_sasrec_loss_decreases_and_beats_popularity(toy_sequences: list[list[int]], loss: str) -> None:
    train = build_train_examples(toy_sequences, N_ITEMS, max_len=10)
    test = build_eval_examples(toy_sequences, N_ITEMS, max_len=10, split="test")
    model = SASRec(SASRecConfig(n_items=N_ITEMS, d=32, max_len=10, n_blocks=1, n_heads=2, dropout=0.0, loss=loss))
    optimizer = make_optimizer(model, lr=1e-2)
    losses = [
        train_one_epoch(model, optimizer, iterate_batches(train, 32, seed=epoch), max_grad_norm=1.0)["loss"]
        for epoch in range(8)
    ]
    assert losses[-1] < 0.5 * losses[0]
    ours = evaluate(model, test, num_sampled=10)
    baseline = evaluate(Popularity.fit(toy_sequences, N_ITEMS), test, num_sampled=10)
    assert ours["full/ndcg@5"] > 0.9 > baseline["full/ndcg@5"] + 0.5
    assert ours["full/hr@5"] == pytest.approx(1.0)
    assert model.training  # evaluate restores the mode


def test_mf_history_mean_learns(toy_sequences: list[list[int]]) -> None:
    train = build_train_examples(toy_sequences, N_ITEMS, max_len=10)
    model = MF(MFConfig(n_items=N_ITEMS, d=16, user_repr="history_mean", loss="sampled_softmax", num_negatives=20))
    optimizer = make_optimizer(model, lr=5e-2)
    first = train_one_epoch(model, optimizer, iterate_batches(train, 32, seed=0))
    for epoch in range(1, 5):
        last = train_one_epoch(model, optimizer, iterate_batches(train, 32, seed=epoch))
    assert last["loss"] < first["loss"]
    assert {"loss", "sequences_per_s", "sequences", "steps", "seconds"} <= set(last)
    assert last["sequences"] == len(train)


def test_train_one_epoch_clips_gradients() -> None:
    model = SASRec(SASRecConfig(n_items=N_ITEMS, d=8, max_len=4, n_blocks=1))
    train = build_train_examples([[1, 2, 3, 4, 5, 6]], N_ITEMS, max_len=4)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    train_one_epoch(model, optimizer, iterate_batches(train, 1), max_grad_norm=1e-3)
    norm = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None))
    assert float(norm) <= 1e-3 + 1e-6


def test_bucketed_batches_cover_every_row_once(toy_sequences: list[list[int]]) -> None:
    uneven = [s[: 4 + i % 8] for i, s in enumerate(toy_sequences)]
    train = build_train_examples(uneven, N_ITEMS, max_len=10)
    rows = torch.cat([b.user_ids for b in iterate_batches(train, 16, seed=1, bucket_batches=4)])
    assert sorted(rows.tolist()) == train.user_ids.tolist()
