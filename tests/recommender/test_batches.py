"""Training/evaluation tensor construction."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from recexp.recommender import build_eval_examples, build_train_examples, iterate_batches
from recexp.recommender.batches import iterate_eval_batches, right_aligned

PAD = 10


def test_right_aligned_keeps_most_recent() -> None:
    values = np.arange(10)
    out = right_aligned(values, np.array([0, 5]), np.array([5, 7]), width=3, pad=-1)
    np.testing.assert_array_equal(out, [[2, 3, 4], [-1, 5, 6]])


def test_train_examples_leave_two_out_and_truncation() -> None:
    seqs = [[0, 1, 2, 3, 4, 5, 6], [7, 8, 9, 1]]
    ex = build_train_examples(seqs, n_items=10, max_len=3)
    # user 0: train part [0..4] -> inputs [1, 2, 3] targets [2, 3, 4] (last 3 pairs)
    assert ex.inputs.tolist() == [[1, 2, 3], [PAD, PAD, 7]]
    assert ex.targets.tolist() == [[2, 3, 4], [PAD, PAD, 8]]
    assert ex.user_ids.tolist() == [0, 1]
    assert ex.n_skipped == 0


def test_short_sequences_are_skipped_and_counted() -> None:
    seqs = [[1, 2], [3], [1, 2, 3], [1, 2, 3, 4]]
    evals = build_eval_examples(seqs, n_items=10, max_len=5, split="test", user_ids=[10, 11, 12, 13])
    assert evals.n_skipped == 2
    assert evals.user_ids.tolist() == [12, 13]
    train = build_train_examples(seqs, n_items=10, max_len=5, user_ids=[10, 11, 12, 13])
    assert train.n_skipped == 3  # a 3-item sequence has a single train item: no (input, target) pair
    assert train.user_ids.tolist() == [13]


def test_out_of_catalog_id_names_the_user() -> None:
    seqs = [[1, 2, 3, 4], [1, 2, 99, 4]]
    with pytest.raises(ValueError, match="user_id 42"):
        build_train_examples(seqs, n_items=10, max_len=5, user_ids=[7, 42])
    with pytest.raises(ValueError, match="user_id 7"):
        build_eval_examples([[1, -1, 2]], n_items=10, max_len=5, split="valid", user_ids=[7])


def test_arrow_input_matches_lists() -> None:
    seqs = [[0, 1, 2, 3], [4, 5, 6, 7, 8]]
    arrow = pa.chunked_array([pa.array(seqs[:1], pa.list_(pa.int32())), pa.array(seqs[1:], pa.list_(pa.int32()))])
    a = build_train_examples(seqs, n_items=10, max_len=4)
    b = build_train_examples(arrow, n_items=10, max_len=4)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.targets, b.targets)
    sliced = pa.array(seqs, pa.list_(pa.int32())).slice(1)
    c = build_train_examples(sliced, n_items=10, max_len=4)
    assert c.inputs.tolist() == [[PAD, PAD, 4, 5]]


def test_eval_examples_valid_and_test() -> None:
    seqs = [[0, 1, 2, 3, 4]]
    valid = build_eval_examples(seqs, n_items=10, max_len=2, split="valid")
    test = build_eval_examples(seqs, n_items=10, max_len=2, split="test")
    assert valid.histories.tolist() == [[1, 2]] and valid.targets.tolist() == [3]
    assert test.histories.tolist() == [[2, 3]] and test.targets.tolist() == [4]
    assert valid.history_len.tolist() == [3] and test.history_len.tolist() == [4]  # not cut to max_len
    (batch,) = iterate_eval_batches(test, batch_size=8)
    assert batch.item_ids.tolist() == [0, 1, 2, 3, 4]
    assert batch.before_target.tolist() == [True, True, True, True, False]


def test_iterate_batches_trims_padding_and_covers_all_rows() -> None:
    seqs = [[0, 1, 2, 3, 4, 5, 6, 7], [1, 2, 3, 4], [2, 3, 4, 5]]
    ex = build_train_examples(seqs, n_items=10, max_len=6)
    batches = list(iterate_batches(ex, batch_size=2, shuffle=False))
    assert [len(b) for b in batches] == [2, 1]
    assert batches[0].inputs.shape == (2, 5)  # longest row has 5 pairs
    assert batches[1].inputs.tolist() == [[2]]
    shuffled = list(iterate_batches(ex, batch_size=1, seed=3))
    assert sorted(int(b.user_ids[0]) for b in shuffled) == [0, 1, 2]
