"""save/load round trips, catalog checks, checkpoint state and export computations."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import recexp.recommender as rec
from recexp.recommender import MF, MFConfig, SASRec, SASRecConfig
from recexp.recommender.inference import item_neighbors, score_thresholds, thresholds_from_scores, topk

N_ITEMS = 25
FINGERPRINT = "sha256:" + "ab" * 32


def histories() -> torch.Tensor:
    return torch.tensor([[N_ITEMS, N_ITEMS, 1, 2], [3, 4, 5, 6], [N_ITEMS, 7, 8, 9]])


@pytest.mark.parametrize(
    "model",
    [
        SASRec(SASRecConfig(n_items=N_ITEMS, d=16, max_len=4, n_blocks=2, n_heads=2, norm_first=False)),
        MF(MFConfig(n_items=N_ITEMS, n_users=3, d=8, max_len=4)),
    ],
)
def test_save_load_reproduces_scores_exactly(model: rec.Recommender, tmp_path: Path) -> None:
    model.eval()
    rec.save(model, tmp_path / "m", FINGERPRINT, metadata={"epoch": 3})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["model_type"] == model.model_type and meta["n_items"] == N_ITEMS
    assert meta["catalog_fingerprint"] == FINGERPRINT and meta["metadata"] == {"epoch": 3}
    loaded = rec.load(tmp_path / "m", expected_fingerprint=FINGERPRINT, expected_n_items=N_ITEMS)
    assert type(loaded) is type(model) and not loaded.training
    assert torch.equal(loaded.full_scores(histories()), model.full_scores(histories()))


def test_load_rejects_other_catalog(tmp_path: Path) -> None:
    rec.save(SASRec(SASRecConfig(n_items=N_ITEMS, d=8, max_len=4)), tmp_path, FINGERPRINT)
    with pytest.raises(ValueError, match="catalog mismatch.*expected 'other'"):
        rec.load(tmp_path, expected_fingerprint="other")
    with pytest.raises(ValueError, match="catalog mismatch.*25 items.*26"):
        rec.load(tmp_path, expected_n_items=N_ITEMS + 1)
    with pytest.raises(FileNotFoundError):
        rec.load(tmp_path / "missing")


def test_training_state_round_trip(tmp_path: Path) -> None:
    model = SASRec(SASRecConfig(n_items=N_ITEMS, d=8, max_len=4, n_blocks=1))
    optimizer = rec.make_optimizer(model, lr=1e-3, weight_decay=0.01)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5)
    batch = rec.Batch(torch.tensor([[1, 2, 3]]), torch.tensor([[2, 3, 4]]), torch.tensor([0]))
    for _ in range(3):
        optimizer.zero_grad()
        model(batch).backward()
        optimizer.step()
        scheduler.step()
    rec.save_training_state(tmp_path, optimizer, scheduler, extra={"epoch": 3})
    fresh_opt = rec.make_optimizer(model, lr=1e-3, weight_decay=0.01)
    fresh_sched = torch.optim.lr_scheduler.StepLR(fresh_opt, step_size=2, gamma=0.5)
    assert rec.load_training_state(tmp_path, fresh_opt, fresh_sched) == {"epoch": 3}
    a, b = optimizer.state_dict(), fresh_opt.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for index, entries in a["state"].items():
        for name, value in entries.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b["state"][index][name]))
    assert fresh_sched.state_dict() == scheduler.state_dict()


def test_topk_excludes_history() -> None:
    model = MF(MFConfig(n_items=N_ITEMS, n_users=1, d=8)).eval()
    h = histories()
    ids, scores = topk(model, h, k=5, batch_size=2)
    assert ids.shape == scores.shape == (3, 5)
    for row, hist in zip(ids.tolist(), h.tolist()):
        assert not set(row) & set(hist)
    full = model.full_scores(h)
    torch.testing.assert_close(scores, full.gather(1, ids))
    assert bool((scores[:, :-1] >= scores[:, 1:]).all())
    kept, _ = topk(model, h, k=N_ITEMS, exclude_history=False)
    assert kept.shape == (3, N_ITEMS)


def test_item_neighbors_exclude_self() -> None:
    emb = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [5.0, 4.0]])
    ids, scores = item_neighbors(emb, k=2, batch_size=2)
    assert ids[:, 0].tolist() == [4, 4, 4, 4, 0]  # largest dot product; never the item itself
    assert all(i not in row for i, row in enumerate(ids.tolist()))
    torch.testing.assert_close(scores[0], torch.tensor([5.0, 0.9]))


def test_score_thresholds() -> None:
    scores = torch.arange(10.0).repeat(2, 1)  # each row: 0..9
    scores[1] = scores[1].flip(0)
    interested, not_interested = thresholds_from_scores(scores, 0.2, 0.5)
    assert interested.tolist() == [8.0, 8.0]  # top 20% = {8, 9}
    assert not_interested.tolist() == [4.0, 4.0]  # bottom 50% = {0..4}
    model = SASRec(SASRecConfig(n_items=N_ITEMS, d=8, max_len=4, n_blocks=1)).eval()
    full = model.full_scores(histories())
    top, bottom = thresholds_from_scores(full)
    assert ((full >= top[:, None]).sum(1) == 5).all()  # ceil(0.2 * 25)
    assert ((full <= bottom[:, None]).sum(1) == 12).all()  # floor(0.5 * 25)
    batched = score_thresholds(model, histories(), batch_size=2)
    torch.testing.assert_close(batched, (top, bottom))
