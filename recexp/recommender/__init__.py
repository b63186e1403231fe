"""Black-box recommenders to be explained (pure PyTorch; no Ray in this package).

Public API: the ``Recommender`` interface, ``SASRec``/``MF`` with their configs, the
``Popularity`` baseline, data preparation (``build_train_examples``,
``build_eval_examples``, ``iterate_batches``), the training/evaluation steps, the export
computations and ``save``/``load``. See ``recexp.recommender.base`` for the padding
convention (pad id = ``n_items``, histories right-aligned).
"""

from recexp.recommender.base import Batch, Recommender, Scorer
from recexp.recommender.batches import (
    EvalExamples,
    TrainExamples,
    build_eval_examples,
    build_train_examples,
    iterate_batches,
)
from recexp.recommender.checkpoint import load_training_state, save_training_state
from recexp.recommender.config import MFConfig, SASRecConfig
from recexp.recommender.export import load, save
from recexp.recommender.inference import item_neighbors, score_thresholds, topk
from recexp.recommender.metrics import evaluate_ranking
from recexp.recommender.mf import MF
from recexp.recommender.popularity import Popularity
from recexp.recommender.sasrec import SASRec
from recexp.recommender.train_loop import evaluate, make_optimizer, train_one_epoch

__all__ = [
    "MF",
    "Batch",
    "EvalExamples",
    "MFConfig",
    "Popularity",
    "Recommender",
    "SASRec",
    "SASRecConfig",
    "Scorer",
    "TrainExamples",
    "build_eval_examples",
    "build_train_examples",
    "evaluate",
    "evaluate_ranking",
    "item_neighbors",
    "iterate_batches",
    "load",
    "load_training_state",
    "make_optimizer",
    "save",
    "save_training_state",
    "score_thresholds",
    "topk",
    "train_one_epoch",
]
