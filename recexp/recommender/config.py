"""Validated configuration dataclasses for the recommender models."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, TypeVar

C = TypeVar("C", bound="_ConfigBase")


class _ConfigBase:
    """Dict round-trip shared by the configs (used by ``export``)."""

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serialisable dict."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from ``to_dict`` output; unknown keys are an error."""
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown config fields {unknown}")
        return cls(**data)


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class SASRecConfig(_ConfigBase):
    """SASRec (Kang & McAuley 2018) hyper-parameters.

    ``loss``: ``"ce"`` full-softmax cross-entropy over all items at every non-pad
    position (default); ``"bce"`` the paper's binary loss with ``num_negatives`` random
    negatives per position; ``"sampled_softmax"`` softmax over ``num_negatives`` shared
    random negatives.
    """

    n_items: int
    d: int = 64
    max_len: int = 50
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    norm_first: bool = True
    ffn_mult: int = 1  # feed-forward hidden size = ffn_mult * d (the paper uses d)
    loss: str = "ce"
    num_negatives: int = 1
    init_std: float = 0.02

    def __post_init__(self) -> None:
        _check(self.n_items >= 1, f"n_items must be >= 1, got {self.n_items}")
        _check(self.d >= 1, f"d must be >= 1, got {self.d}")
        _check(self.max_len >= 1, f"max_len must be >= 1, got {self.max_len}")
        _check(self.n_blocks >= 0, f"n_blocks must be >= 0, got {self.n_blocks}")
        _check(self.n_heads >= 1 and self.d % self.n_heads == 0, f"d={self.d} must be divisible by n_heads={self.n_heads}")
        _check(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        _check(self.ffn_mult >= 1, f"ffn_mult must be >= 1, got {self.ffn_mult}")
        _check(self.loss in ("ce", "bce", "sampled_softmax"), f"SASRec loss must be ce, bce or sampled_softmax, got {self.loss!r}")
        _check(self.num_negatives >= 1, f"num_negatives must be >= 1, got {self.num_negatives}")
        _check(self.init_std > 0, f"init_std must be > 0, got {self.init_std}")


@dataclass
class MFConfig(_ConfigBase):
    """Matrix factorisation hyper-parameters.

    ``user_repr``: ``"id"`` learns one vector per user id (needs ``n_users``);
    ``"history_mean"`` represents a user by the mean embedding of the items seen so far
    (no user table; works for unseen users). ``loss``: ``"sampled_softmax"`` (default),
    ``"bpr"`` or ``"ce"`` (full softmax).
    """

    n_items: int
    n_users: int = 0
    d: int = 64
    max_len: int = 50
    user_repr: str = "id"
    loss: str = "sampled_softmax"
    num_negatives: int = 100
    init_std: float = 0.05

    def __post_init__(self) -> None:
        _check(self.n_items >= 1, f"n_items must be >= 1, got {self.n_items}")
        _check(self.d >= 1, f"d must be >= 1, got {self.d}")
        _check(self.max_len >= 1, f"max_len must be >= 1, got {self.max_len}")
        _check(self.user_repr in ("id", "history_mean"), f"user_repr must be 'id' or 'history_mean', got {self.user_repr!r}")
        _check(self.user_repr != "id" or self.n_users >= 1, "user_repr='id' needs n_users >= 1")
        _check(self.n_users >= 0, f"n_users must be >= 0, got {self.n_users}")
        _check(self.loss in ("sampled_softmax", "bpr", "ce"), f"MF loss must be sampled_softmax, bpr or ce, got {self.loss!r}")
        _check(self.num_negatives >= 1, f"num_negatives must be >= 1, got {self.num_negatives}")
        _check(self.init_std > 0, f"init_std must be > 0, got {self.init_std}")

