"""Shapes, masking and padding behaviour of SASRec and MF."""

from __future__ import annotations

import pytest
import torch

from recexp.recommender import MF, Batch, MFConfig, SASRec, SASRecConfig

N_ITEMS = 20


def sasrec(**overrides: object) -> SASRec:
    fields = {"n_items": N_ITEMS, "d": 16, "max_len": 8, "n_blocks": 2, "n_heads": 2, "dropout": 0.1}
    return SASRec(SASRecConfig(**(fields | overrides))).eval()


def histories() -> torch.Tensor:
    pad = N_ITEMS
    return torch.tensor([[pad, pad, pad, 1, 2, 3], [4, 5, 6, 7, 8, 9], [pad, pad, pad, pad, pad, 11]])


@pytest.mark.parametrize("norm_first", [True, False])
def test_sasrec_shapes(norm_first: bool) -> None:
    model = sasrec(norm_first=norm_first)
    h = histories()
    assert model.item_embeddings().shape == (N_ITEMS, 16)
    assert model.user_embedding(h).shape == (3, 16)
    assert model.full_scores(h).shape == (3, N_ITEMS)
    items = torch.randint(0, N_ITEMS, (3, 5))
    assert model.score(h, items).shape == (3, 5)
    torch.testing.assert_close(model.score(h, items), model.full_scores(h).gather(1, items))


@pytest.mark.parametrize("norm_first", [True, False])
def test_sasrec_is_causal(norm_first: bool) -> None:
    model = sasrec(norm_first=norm_first)
    h = histories()
    changed = h.clone()
    changed[:, -1] = torch.tensor([0, 1, 2])
    before, after = model.encode(h), model.encode(changed)
    torch.testing.assert_close(before[:, :-1], after[:, :-1], rtol=0, atol=1e-6)
    assert not torch.allclose(before[:, -1], after[:, -1])


@pytest.mark.parametrize("norm_first", [True, False])
def test_sasrec_left_padding_invariance(norm_first: bool) -> None:
    model = sasrec(norm_first=norm_first)
    h = histories()
    more_padding = torch.cat([torch.full((3, 2), N_ITEMS), h], dim=1)  # width 8 = max_len
    torch.testing.assert_close(model.user_embedding(h), model.user_embedding(more_padding), rtol=1e-5, atol=1e-6)
    too_long = torch.cat([torch.full((3, 5), N_ITEMS), h], dim=1)  # cut to the last max_len columns
    torch.testing.assert_close(model.user_embedding(h), model.user_embedding(too_long), rtol=1e-5, atol=1e-6)


def test_sasrec_rejects_out_of_range_history() -> None:
    with pytest.raises(ValueError, match="history ids"):
        sasrec().user_embedding(torch.tensor([[N_ITEMS + 1]]))


@pytest.mark.parametrize("loss", ["ce", "bce", "sampled_softmax"])
def test_sasrec_loss_is_finite_scalar_and_ignores_padding(loss: str) -> None:
    model = sasrec(loss=loss, num_negatives=3).train()
    pad = N_ITEMS
    batch = Batch(
        inputs=torch.tensor([[pad, pad, 1, 2], [3, 4, 5, 6]]),
        targets=torch.tensor([[pad, pad, 2, 3], [4, 5, 6, 7]]),
        user_ids=torch.tensor([0, 1]),
    )
    value = model(batch)
    assert value.dim() == 0 and torch.isfinite(value)
    value.backward()
    assert model.item_emb.weight.grad is not None


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="divisible"):
        SASRecConfig(n_items=10, d=10, n_heads=3)
    with pytest.raises(ValueError, match="loss"):
        SASRecConfig(n_items=10, loss="bpr")
    with pytest.raises(ValueError, match="dropout"):
        SASRecConfig(n_items=10, dropout=1.0)
    with pytest.raises(ValueError, match="n_users"):
        MFConfig(n_items=10, user_repr="id", n_users=0)
    with pytest.raises(ValueError, match="unknown config fields"):
        SASRecConfig.from_dict({"n_items": 3, "colour": "red"})


def test_mf_user_modes() -> None:
    model = MF(MFConfig(n_items=N_ITEMS, n_users=3, d=8, max_len=8)).eval()
    h = histories()
    by_id = model.user_embedding(h, torch.tensor([0, 1, 2]))
    torch.testing.assert_close(by_id, model.user_emb.weight)
    mean = model.user_embedding(h)  # no ids: mean of the history's item embeddings
    torch.testing.assert_close(mean[0], model.item_emb.weight[[1, 2, 3]].mean(0))
    torch.testing.assert_close(mean[2], model.item_emb.weight[11])
    assert model.full_scores(h, torch.tensor([0, 1, 2])).shape == (3, N_ITEMS)


@pytest.mark.parametrize("user_repr", ["id", "history_mean"])
@pytest.mark.parametrize("loss", ["sampled_softmax", "bpr", "ce"])
def test_mf_loss(user_repr: str, loss: str) -> None:
    model = MF(MFConfig(n_items=N_ITEMS, n_users=2, d=8, user_repr=user_repr, loss=loss, num_negatives=5))
    pad = N_ITEMS
    batch = Batch(torch.tensor([[pad, 1, 2], [3, 4, 5]]), torch.tensor([[pad, 2, 3], [4, 5, 6]]), torch.tensor([0, 1]))
    value = model(batch)
    assert value.dim() == 0 and torch.isfinite(value)


def test_mf_history_mean_running_mean_is_causal() -> None:
    model = MF(MFConfig(n_items=N_ITEMS, d=8, user_repr="history_mean"))
    h = torch.tensor([[N_ITEMS, 1, 2, 3]])
    running = model.running_mean(h)  # (1, 4, d)
    torch.testing.assert_close(running[0, 2], model.item_emb.weight[[1, 2]].mean(0))
    torch.testing.assert_close(running[0, 0], torch.zeros(8))
