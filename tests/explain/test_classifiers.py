"""The explanation probes: k-fold splits, logistic and ridge regression on hand-made features, the
sentence encoder (a tiny config-built BERT; the real MiniLM in a slow test) and the glue that
compares sources of explanations on the same (user, item) pairs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from encoder_tiny import HIDDEN, save_tiny_bert

from recexp.config import EvaluateConfig
from recexp.explain.classifiers import coherence, distinction, fit_ridge, kfold
from recexp.explain.encoder import load_encoder, mean_pool
from recexp.explain.explanation_eval import common_rows, probe_sources

RNG_SEED = 3


def clusters(n_per_class: int, n_classes: int, dim: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian blobs around ``spread``-scaled random centres: (N, dim) features and labels."""
    rng = np.random.default_rng(RNG_SEED)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    centres = rng.normal(size=(n_classes, dim)) * spread
    return centres[labels] + rng.normal(size=(len(labels), dim)), labels


# ----------------------------------------------------------------------------- folds and models


def test_kfold_partitions_the_rows_and_keeps_groups_together() -> None:
    folds = kfold(10, 3, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(10))
    assert sorted(len(f) for f in folds) == [3, 3, 4]
    assert [f.tolist() for f in kfold(10, 3, seed=1)] == [f.tolist() for f in folds]  # seeded
    groups = ["a", "b", "c", "d", "a", "b", "c", "d"]
    for fold in kfold(8, 2, seed=0, groups=groups):
        chosen = {groups[i] for i in fold}
        assert {i for i, g in enumerate(groups) if g in chosen} == set(fold.tolist())
    with pytest.raises(ValueError, match="2 <= k <= 4"):
        kfold(8, 5, seed=0, groups=groups)


def test_separable_sources_are_told_apart() -> None:
    x, y = clusters(60, 3, dim=12, spread=6.0)
    result = distinction(x, y, folds=5, seed=0)
    assert result["acc"] >= 0.99
    assert result["chance"] == pytest.approx(1 / 3) and result["sources"] == 3 and result["rows"] == 180


def test_shuffled_sources_score_at_chance() -> None:
    x, y = clusters(100, 3, dim=12, spread=6.0)
    shuffled = np.random.default_rng(0).permutation(y)
    result = distinction(x, shuffled, folds=5, seed=0)
    assert abs(result["acc"] - 1 / 3) < 0.1


def test_unbalanced_chance_is_the_majority_share() -> None:
    x, y = clusters(30, 2, dim=4, spread=6.0)
    keep = np.r_[np.arange(30), np.arange(30, 40)]  # 30 of source 0, 10 of source 1
    assert distinction(x[keep], y[keep], folds=4)["chance"] == 0.75
    with pytest.raises(ValueError, match="two sources"):
        distinction(x[:30], y[:30])


def test_linear_target_is_recovered() -> None:
    rng = np.random.default_rng(RNG_SEED)
    x = rng.normal(size=(200, 8))
    target = x @ rng.normal(size=8) + 2.5
    result = coherence(x, target, folds=5, seed=0, l2=0.01)
    assert result["r2"] > 0.9999 and result["pearson"] > 0.9999 and result["mse"] < 1e-3
    assert result["rows"] == 200


def test_unrelated_target_has_no_coherence() -> None:
    rng = np.random.default_rng(RNG_SEED)
    result = coherence(rng.normal(size=(200, 8)), rng.normal(size=200), folds=5, seed=0)
    assert result["r2"] < 0.05 and abs(result["pearson"]) < 0.25


def test_ridge_is_least_squares_without_penalty() -> None:
    rng = np.random.default_rng(RNG_SEED)
    x, y = rng.normal(size=(50, 4)) * [1, 10, 0.1, 3], rng.normal(size=50)
    design = np.c_[x, np.ones(50)]
    expected = design @ np.linalg.lstsq(design, y, rcond=None)[0]
    np.testing.assert_allclose(fit_ridge(x, y, l2=1e-12)(x), expected, atol=1e-8)
    constant = coherence(x, np.full(50, 4.0), folds=5)
    assert constant["r2"] == 0.0 and constant["mse"] == pytest.approx(0.0) and "pearson" not in constant


# ----------------------------------------------------------------------------- encoder


def test_mean_pool_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])  # (1, 3, 2), last position padded
    assert mean_pool(hidden, torch.tensor([[1, 1, 0]])).tolist() == [[2.0, 3.0]]


def test_tiny_encoder_gives_unit_vectors_independent_of_batch(tmp_path) -> None:
    encoder = load_encoder(str(save_tiny_bert(tmp_path / "bert")))
    texts = ["the user likes racing games", "a puzzle", "because of the history, 42 games!"]
    together = encoder.encode(texts)
    assert together.shape == (3, HIDDEN) and together.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, atol=1e-5)
    alone = np.stack([encoder.encode([t])[0] for t in texts])  # no padding at all
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert not np.allclose(together[0], together[1])


def test_load_encoder_refuses_a_directory_without_a_model(tmp_path) -> None:
    with pytest.raises(Exception, match="no config.json"):
        load_encoder(str(tmp_path))


@pytest.mark.slow
def test_minilm_puts_paraphrases_closer_than_unrelated_sentences() -> None:
    """Needs `python -m recexp.explain.fetch_encoder` (``make test-slow`` runs it)."""
    encoder = load_encoder("minilm")
    vectors = encoder.encode([
        "This user loves kart racing, so Mario Kart 8 is a natural pick.",
        "Because the user enjoys racing games with karts, Mario Kart 8 suits them.",
        "The museum opens at nine and closes at five on weekdays.",
        "A puzzle game with portals, recommended for fans of physics puzzles.",
    ])
    similarity = vectors @ vectors.T
    assert vectors.shape == (4, 384)
    assert similarity[0, 1] > 0.6 and similarity[0, 1] > similarity[0, 2] + 0.4
    assert similarity[0, 1] > similarity[0, 3] and similarity[1, 0] > similarity[1, 2]


# ----------------------------------------------------------------------------- sources


class KeywordEncoder:
    """Hand-made features: one coordinate per source keyword, one for the number in the text,
    one of seeded noise."""

    KEYWORDS = ("racing", "puzzle")

    def __init__(self) -> None:
        self.calls = 0
        self.rng = np.random.default_rng(0)

    def encode(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        rows = [[float(k in t) for k in self.KEYWORDS] + [float(t.split()[-1]), self.rng.normal()] for t in texts]
        return np.asarray(rows)


def explanation_rows(n: int, word: str, score: float = 0.5) -> list[dict]:
    """``n`` explanations naming ``word`` and a number; ``rec_score`` = score * number + 1."""
    return [{"user_id": i // 2, "item_id": i % 2, "position": 3, "explanation": f"{word} fan, rank {i}",
             "rec_score": score * i + 1.0} for i in range(n)]


def test_common_rows_are_the_shared_pairs_in_order() -> None:
    a = explanation_rows(6, "racing")
    b = list(reversed(explanation_rows(4, "puzzle"))) + [dict(explanation_rows(1, "x")[0], explanation="duplicate")]
    shared = common_rows({"aligned": a, "other": b})
    assert [(r["user_id"], r["item_id"]) for r in shared["aligned"]] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert [r["explanation"] for r in shared["other"]][:1] == ["puzzle fan, rank 0"]  # first row of a pair wins
    assert len(common_rows({"aligned": a, "other": b}, limit=3)["other"]) == 3


def test_probes_over_two_sources() -> None:
    encoder = KeywordEncoder()
    sources = {"aligned": explanation_rows(40, "racing"), "run-b": explanation_rows(40, "puzzle", score=-1.0)}
    sources["run-b"] = [{k: v for k, v in r.items() if k != "rec_score"} for r in sources["run-b"][:-5]]
    settings = EvaluateConfig(classifier_min_rows=10, classifier_folds=5, classifier_l2=0.01)
    metrics = probe_sources(sources, lambda: encoder, settings)
    assert metrics["aligned/explanations/distinction_acc"] == 1.0
    assert metrics["aligned/explanations/distinction_chance"] == 0.5
    assert metrics["aligned/explanations/distinction_rows"] == 70  # 35 shared pairs x 2 sources
    assert metrics["aligned/explanations/coherence_r2"] > 0.999  # rec_score is linear in the number
    assert metrics["aligned/explanations/coherence_rows"] == 35
    assert not any(k.startswith("run-b/") for k in metrics)  # run-b wrote no rec_score
    assert encoder.calls == 2


def test_probes_skip_without_enough_rows() -> None:
    encoder = KeywordEncoder()
    metrics = probe_sources({"aligned": explanation_rows(9, "racing")}, lambda: encoder,
                            EvaluateConfig(classifier_min_rows=10))
    assert metrics == {} and encoder.calls == 0
    one = probe_sources({"aligned": explanation_rows(12, "racing")}, lambda: encoder,
                        EvaluateConfig(classifier_min_rows=10, classifier_l2=0.01))
    assert set(one) == {f"aligned/explanations/coherence_{m}" for m in ("r2", "mse", "pearson", "rows")}
