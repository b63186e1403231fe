"""RecExplainer's explanation probes on sentence embeddings, with seeded k-fold cross-validation.

* **distinction** (:func:`distinction`): multinomial logistic regression predicting which source
  (model, form) wrote an explanation. High accuracy means the sources explain differently.
  Explanations of one (user, item) pair form a group that never straddles folds, so the
  classifier cannot win by recognising the pair. Reported against the chance level (the share
  of the most frequent source).
* **coherence** (:func:`coherence`): ridge regression of the recommender's score for the
  (user, item) from the explanation: how much of the recommender's view the text carries.
  Reported as R^2, MSE and Pearson r of the out-of-fold predictions.

Pure numpy / torch (float64). Features are standardised with the training fold's mean and
standard deviation, so the L2 penalty means the same whatever the embedding's scale.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

Predictor = Callable[[np.ndarray], np.ndarray]
Fitter = Callable[[np.ndarray, np.ndarray], Predictor]


def kfold(n: int, k: int, seed: int, groups: Sequence[object] | None = None) -> list[np.ndarray]:
    """Test indices of ``k`` folds over ``n`` rows, shuffled by ``seed``; rows of one group (when
    given) share a fold. Every row is in exactly one fold."""
    keys = list(range(n)) if groups is None else list(dict.fromkeys(groups))
    if not 2 <= k <= len(keys):
        raise ValueError(f"{k}-fold cross-validation needs 2 <= k <= {len(keys)} (the rows or groups)")
    order = np.random.default_rng(seed).permutation(len(keys))
    fold_of_key = {keys[j]: f % k for f, j in enumerate(order)}
    fold = np.array([fold_of_key[g] for g in (range(n) if groups is None else groups)])
    return [np.flatnonzero(fold == f) for f in range(k)]


def standardizer(x: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """``z = (x - mean) / std`` with the statistics of ``x`` (N, D); constant columns get std 1."""
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return lambda other: (other - mean) / std


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1.0, max_iter: int = 200) -> Predictor:
    """Multinomial logistic regression on standardised ``x`` (N, D), labels ``y`` (N,) in
    ``0..C-1``; loss = mean cross-entropy + ``l2 / (2N) * ||W||^2`` (bias not penalised), L-BFGS.
    Returns a predictor of labels."""
    scale = standardizer(x)
    features = torch.from_numpy(scale(x)).double()  # (N, D)
    labels = torch.from_numpy(np.asarray(y)).long()
    n_classes = int(labels.max()) + 1
    weight = torch.zeros(features.shape[1], n_classes, dtype=torch.float64, requires_grad=True)  # (D, C)
    bias = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(features @ weight + bias, labels)
        loss = loss + l2 / (2 * len(labels)) * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    w, b = weight.detach().numpy(), bias.detach().numpy()
    return lambda other: np.argmax(scale(other) @ w + b, axis=1)


def fit_ridge(x: np.ndarray, y: np.ndarray, l2: float = 1.0) -> Predictor:
    """Ridge regression on standardised ``x`` (N, D) with an unpenalised intercept:
    ``w = (Z^T Z + l2 I)^-1 Z^T (y - mean y)``. Returns a predictor of values."""
    scale = standardizer(x)
    z, target = scale(x), np.asarray(y, dtype=np.float64)
    w = np.linalg.solve(z.T @ z + l2 * np.eye(z.shape[1]), z.T @ (target - target.mean()))  # (D,)
    intercept = float(target.mean())
    return lambda other: scale(other) @ w + intercept


def cross_val_predict(fit: Fitter, x: np.ndarray, y: np.ndarray, folds: Sequence[np.ndarray]) -> np.ndarray:
    """Out-of-fold predictions: each fold predicted by a model fitted on the other folds."""
    out = np.zeros(len(y), dtype=np.float64)
    for test in folds:
        train = np.setdiff1d(np.arange(len(y)), test)
        out[test] = fit(x[train], y[train])(x[test])
    return out


def distinction(x: np.ndarray, labels: Sequence[int], groups: Sequence[object] | None = None, folds: int = 5,
                seed: int = 0, l2: float = 1.0) -> dict[str, float]:
    """Cross-validated accuracy of predicting ``labels`` (0..S-1) from ``x`` (N, D): ``acc``,
    ``chance`` (most frequent label's share), ``sources`` (S) and ``rows`` (N)."""
    y = np.asarray(labels, dtype=np.int64)
    if len(np.unique(y)) < 2:
        raise ValueError("distinction needs explanations from at least two sources")
    predicted = cross_val_predict(lambda a, b: fit_logistic(a, b, l2), x, y, kfold(len(y), folds, seed, groups))
    return {
        "acc": float(np.mean(predicted == y)), "chance": float(np.bincount(y).max() / len(y)),
        "sources": float(len(np.unique(y))), "rows": float(len(y)),
    }


def coherence(x: np.ndarray, target: Sequence[float], folds: int = 5, seed: int = 0,
              l2: float = 1.0) -> dict[str, float]:
    """Cross-validated ridge regression of ``target`` from ``x``: ``r2`` (1 - SSE/SST of the
    out-of-fold predictions), ``mse``, ``pearson`` (absent when a side is constant) and ``rows``."""
    y = np.asarray(target, dtype=np.float64)
    predicted = cross_val_predict(lambda a, b: fit_ridge(a, b, l2), x, y, kfold(len(y), folds, seed))
    sse, sst = float(np.sum((y - predicted) ** 2)), float(np.sum((y - y.mean()) ** 2))
    out = {"r2": 1.0 - sse / sst if sst > 0 else 0.0, "mse": sse / len(y), "rows": float(len(y))}
    if np.std(predicted) > 1e-12 and np.std(y) > 1e-12:
        out["pearson"] = float(np.corrcoef(predicted, y)[0, 1])
    return out
