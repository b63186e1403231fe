"""Turn user sequences into training and evaluation tensors (vectorised with numpy).

Sequences are held in CSR form (one flat ``values`` array plus ``offsets``), as in an
Arrow ``list<int32>`` column. Leave-one-out split of a full sequence ``seq``:

* train: ``seq[:-2]``; inputs ``train[:-1]``, targets ``train[1:]`` (next-item at every step);
* valid: history ``seq[:-2]``, target ``seq[-2]``;
* test:  history ``seq[:-1]``, target ``seq[-1]``.

A sequence shorter than 3 cannot be split and is skipped (and counted in ``n_skipped``).
For the train split a sequence of exactly 3 leaves a single training item, i.e. no
(input, target) pair; it is skipped too and counted in the same ``n_skipped``.
All windows keep the most recent items and are right-aligned / left-padded with
``pad_id = n_items`` (see ``recexp.recommender.base``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from recexp.recommender.base import Batch

MIN_SEQUENCE_LENGTH = 3

SequencesLike = Sequence[Sequence[int]] | Sequence[np.ndarray] | pa.Array | pa.ChunkedArray


@dataclass(frozen=True)
class CSRSequences:
    """Ragged sequences: row ``i`` is ``values[offsets[i]:offsets[i + 1]]``."""

    values: np.ndarray  # (T,) int64
    offsets: np.ndarray  # (N + 1,) int64
    user_ids: np.ndarray  # (N,) int64

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (N,)

    def __len__(self) -> int:
        return int(self.offsets.shape[0] - 1)


def to_csr(sequences: SequencesLike, user_ids: Sequence[int] | np.ndarray | None = None) -> CSRSequences:
    """CSR view of a list of sequences or an Arrow list array (nulls count as empty).
    ``user_ids`` defaults to the row numbers."""
    if isinstance(sequences, pa.ChunkedArray):
        sequences = sequences.combine_chunks()
    if isinstance(sequences, pa.Array):
        if sequences.values.null_count:
            raise ValueError("sequences contain null item ids")
        offsets = sequences.offsets.to_numpy().astype(np.int64)  # null rows have equal offsets
        values = sequences.values.to_numpy(zero_copy_only=False).astype(np.int64)
        values, offsets = values[offsets[0] : offsets[-1]], offsets - offsets[0]
    else:
        lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        values = np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]) if len(sequences) else np.zeros(0, np.int64)
    n = offsets.shape[0] - 1
    users = np.arange(n, dtype=np.int64) if user_ids is None else np.asarray(user_ids, dtype=np.int64)
    if users.shape != (n,):
        raise ValueError(f"got {users.shape[0]} user ids for {n} sequences")
    return CSRSequences(values.astype(np.int64, copy=False), offsets, users)


def check_item_ids(seqs: CSRSequences, n_items: int) -> None:
    """Raise ValueError naming the first user whose sequence has an id outside [0, n_items)."""
    bad = np.flatnonzero((seqs.values < 0) | (seqs.values >= n_items))
    if bad.size:
        row = int(np.searchsorted(seqs.offsets, bad[0], side="right") - 1)
        raise ValueError(
            f"user_id {int(seqs.user_ids[row])}: item id {int(seqs.values[bad[0]])} is outside "
            f"the catalog [0, {n_items})"
        )


def right_aligned(values: np.ndarray, starts: np.ndarray, ends: np.ndarray, width: int, pad: int) -> np.ndarray:
    """Rows ``values[starts[i]:ends[i]]`` cut to their last ``width`` items, right-aligned
    in a ``(N, width)`` matrix filled with ``pad``."""
    lengths = np.minimum(ends - starts, width)  # (N,)
    starts = ends - lengths
    total = int(lengths.sum())
    rows = np.repeat(np.arange(lengths.shape[0]), lengths)  # (T,)
    pos = np.arange(total) - np.repeat(np.cumsum(lengths) - lengths, lengths)  # index within row
    out = np.full((lengths.shape[0], width), pad, dtype=np.int64)
    out[rows, width - np.repeat(lengths, lengths) + pos] = values[np.repeat(starts, lengths) + pos]
    return out


def select_rows(seqs: CSRSequences, keep: np.ndarray) -> CSRSequences:
    """The sub-collection of rows where the boolean ``keep (N,)`` is true."""
    starts, lengths = seqs.offsets[:-1][keep], seqs.lengths[keep]  # (M,)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    pos = np.arange(int(offsets[-1])) - np.repeat(offsets[:-1], lengths)  # index within row
    values = seqs.values[np.repeat(starts, lengths) + pos]
    return CSRSequences(values, offsets, seqs.user_ids[keep])


@dataclass
class TrainExamples:
    """Next-item training windows, one row per kept user."""

    inputs: torch.Tensor  # (N, max_len) int64, pad = n_items
    targets: torch.Tensor  # (N, max_len) int64, pad = n_items
    user_ids: torch.Tensor  # (N,) int64
    n_skipped: int  # sequences dropped for being too short
    n_items: int

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def subset(self, rows: np.ndarray | torch.Tensor) -> TrainExamples:
        """The examples at ``rows`` (e.g. one data-parallel shard)."""
        rows = torch.as_tensor(rows, dtype=torch.long)
        return TrainExamples(self.inputs[rows], self.targets[rows], self.user_ids[rows], self.n_skipped, self.n_items)


def build_train_examples(
    sequences: SequencesLike, n_items: int, max_len: int, user_ids: Sequence[int] | np.ndarray | None = None
) -> TrainExamples:
    """Training windows from *full* sequences: the last ``max_len`` (input, target)
    pairs of ``seq[:-2]``. Raises ValueError naming the user on an out-of-catalog id."""
    seqs = to_csr(sequences, user_ids)
    check_item_ids(seqs, n_items)
    keep = seqs.lengths >= MIN_SEQUENCE_LENGTH + 1  # the train part needs >= 2 items
    kept = select_rows(seqs, keep)
    ends = kept.offsets[1:] - 2  # exclusive end of the train part seq[:-2]
    inputs = right_aligned(kept.values, kept.offsets[:-1], ends - 1, max_len, n_items)
    targets = right_aligned(kept.values, kept.offsets[:-1] + 1, ends, max_len, n_items)
    return TrainExamples(
        torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(kept.user_ids),
        int((~keep).sum()), n_items,
    )


def trim_left_padding(*tensors: torch.Tensor, pad: int) -> tuple[torch.Tensor, ...]:
    """Drop the leading columns that are padding in every row of the first tensor."""
    used = (tensors[0] != pad).any(dim=0)  # (L,)
    first = int(used.int().argmax()) if bool(used.any()) else tensors[0].shape[1] - 1
    return tuple(t[:, first:] for t in tensors)


def batch_order(
    lengths: torch.Tensor, batch_size: int, *, shuffle: bool, seed: int, drop_last: bool, bucket_batches: int
) -> list[torch.Tensor]:
    """Row indices of each batch. With ``bucket_batches > 1`` rows are shuffled, then
    sorted by length inside windows of ``bucket_batches * batch_size`` rows, so a batch
    holds similar lengths (less padding); the batch order is shuffled again."""
    gen = torch.Generator().manual_seed(seed)
    n = lengths.shape[0]
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    if bucket_batches > 1:
        window = bucket_batches * batch_size
        chunks = [order[i : i + window] for i in range(0, n, window)]
        order = torch.cat([c[torch.argsort(lengths[c], stable=True)] for c in chunks])
    stop = n - n % batch_size if drop_last else n
    batches = [order[i : i + batch_size] for i in range(0, stop, batch_size)]
    if shuffle and bucket_batches > 1:
        batches = [batches[int(i)] for i in torch.randperm(len(batches), generator=gen)]
    return batches


def iterate_batches(
    examples: TrainExamples,
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    drop_last: bool = False,
    bucket_batches: int = 0,
) -> Iterator[Batch]:
    """Mini-batches of ``examples`` in a seeded random order, each trimmed to its longest
    row (left padding beyond it carries no information). ``bucket_batches`` groups rows
    of similar length (see ``batch_order``), which saves most of the padding work."""
    lengths = (examples.targets != examples.n_items).sum(dim=1)  # (N,)
    for rows in batch_order(
        lengths, batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, bucket_batches=bucket_batches
    ):
        inputs, targets = trim_left_padding(examples.inputs[rows], examples.targets[rows], pad=examples.n_items)
        yield Batch(inputs, targets, examples.user_ids[rows])


@dataclass
class EvalExamples:
    """Leave-one-out evaluation cases, with each user's full sequence kept (CSR) so the
    metrics can exclude the whole history and sample negatives the user never saw."""

    user_ids: torch.Tensor  # (N,) int64
    histories: torch.Tensor  # (N, max_len) int64 model input, pad = n_items
    targets: torch.Tensor  # (N,) int64
    seq_values: torch.Tensor  # (T,) int64 full sequences, concatenated
    seq_offsets: torch.Tensor  # (N + 1,) int64
    history_len: torch.Tensor  # (N,) int64 items before the target (all of them, not cut to max_len)
    n_skipped: int
    n_items: int

    def __len__(self) -> int:
        return int(self.targets.shape[0])


def build_eval_examples(
    sequences: SequencesLike,
    n_items: int,
    max_len: int,
    split: str,
    user_ids: Sequence[int] | np.ndarray | None = None,
) -> EvalExamples:
    """Evaluation cases for ``split`` in {"valid", "test"} from *full* sequences."""
    if split not in ("valid", "test"):
        raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
    seqs = to_csr(sequences, user_ids)
    check_item_ids(seqs, n_items)
    keep = seqs.lengths >= MIN_SEQUENCE_LENGTH
    kept = select_rows(seqs, keep)
    target_pos = kept.offsets[1:] - (2 if split == "valid" else 1)  # (N,) flat index of the target
    histories = right_aligned(kept.values, kept.offsets[:-1], target_pos, max_len, n_items)
    return EvalExamples(
        user_ids=torch.from_numpy(kept.user_ids),
        histories=torch.from_numpy(histories),
        targets=torch.from_numpy(kept.values[target_pos]),
        seq_values=torch.from_numpy(kept.values),
        seq_offsets=torch.from_numpy(kept.offsets),
        history_len=torch.from_numpy(target_pos - kept.offsets[:-1]),
        n_skipped=int((~keep).sum()),
        n_items=n_items,
    )


@dataclass
class EvalBatch:
    """A slice of ``EvalExamples`` with the users' items as (row, item) pairs."""

    user_ids: torch.Tensor  # (B,)
    histories: torch.Tensor  # (B, L)
    targets: torch.Tensor  # (B,)
    item_rows: torch.Tensor  # (T,) row in the batch of each sequence item
    item_ids: torch.Tensor  # (T,) item id
    before_target: torch.Tensor  # (T,) bool: the item is in the history (precedes the target)


def iterate_eval_batches(examples: EvalExamples, batch_size: int) -> Iterator[EvalBatch]:
    """Consecutive slices of ``examples`` of at most ``batch_size`` cases."""
    for start in range(0, len(examples), batch_size):
        stop = min(start + batch_size, len(examples))
        lo, hi = int(examples.seq_offsets[start]), int(examples.seq_offsets[stop])
        lengths = examples.seq_offsets[start + 1 : stop + 1] - examples.seq_offsets[start:stop]  # (B,)
        rows = torch.repeat_interleave(torch.arange(stop - start), lengths)  # (T,)
        pos = torch.arange(hi - lo) - (examples.seq_offsets[start:stop] - lo).repeat_interleave(lengths)
        (histories,) = trim_left_padding(examples.histories[start:stop], pad=examples.n_items)
        yield EvalBatch(
            user_ids=examples.user_ids[start:stop],
            histories=histories,
            targets=examples.targets[start:stop],
            item_rows=rows,
            item_ids=examples.seq_values[lo:hi],
            before_target=pos < examples.history_len[start:stop].repeat_interleave(lengths),
        )
