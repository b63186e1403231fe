"""The slot tokens ``<user>`` and ``<item>``: added to the tokenizer, found in ``input_ids``.

Both are added as *special* tokens (never split, never produced by merging ordinary text
pieces), so the only way to get a slot id is the exact marker text, which the task builders
insert themselves and escape everywhere else (``recexp.tasks.sanitize``). The collator checks
that every row has exactly as many slot ids as slot embeddings (:mod:`recexp.llm.collate`).

New embedding rows start at the mean of the existing rows (deterministic, unlike the
sampled init of ``resize_token_embeddings(mean_resizing=True)``); they are trained with the
adapter (:mod:`recexp.llm.lora`).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
from tokenizers import AddedToken
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from recexp.llm.errors import SlotError
from recexp.tasks.sanitize import ITEM_SLOT, USER_SLOT

SLOT_TOKENS = (USER_SLOT, ITEM_SLOT)


@dataclass(frozen=True)
class SlotTokens:
    """Token ids of the two slots in one tokenizer."""

    user_id: int
    item_id: int

    @property
    def ids(self) -> tuple[int, int]:
        """``(user_id, item_id)``."""
        return (self.user_id, self.item_id)


def hidden_size(model: PreTrainedModel) -> int:
    """The decoder's hidden size (text config of multimodal models)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(config.hidden_size)


def check_base(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rec_dim: int | None = None) -> None:
    """Raise :class:`SlotError` unless the pair can take slots fed by ``rec_dim``-wide vectors.

    Needs: a chat template (prompts are chats); a hidden size of at least 2 whose half (the
    connector's bottleneck, RecExplainer eq. 1) is not narrower than ``rec_dim``."""
    if not getattr(tokenizer, "chat_template", None):
        raise SlotError(f"tokenizer {type(tokenizer).__name__} has no chat template; use an instruct/chat model")
    hidden = hidden_size(model)
    if hidden < 2:
        raise SlotError(f"hidden size {hidden} is too small for a connector (needs >= 2)")
    if rec_dim is not None and hidden // 2 < rec_dim:
        raise SlotError(
            f"hidden size {hidden} is too small for {rec_dim}-d recommender vectors: the connector's "
            f"bottleneck hidden/2 = {hidden // 2} would be narrower than the vectors it carries"
        )


def _add_special_tokens(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> None:
    """Add ``tokens`` as extra special tokens (``additional_special_tokens`` before v5)."""
    params = inspect.signature(tokenizer.add_special_tokens).parameters
    key = "extra_special_tokens" if "replace_extra_special_tokens" in params else "additional_special_tokens"
    added = [AddedToken(t, special=True, normalized=False, lstrip=False, rstrip=False) for t in tokens]
    tokenizer.add_special_tokens({key: added}, **{f"replace_{key}": False})


def slot_token_ids(tokenizer: PreTrainedTokenizerBase) -> SlotTokens:
    """The slot ids; :class:`SlotError` when the tokenizer lacks them or splits them."""
    ids = []
    for token in SLOT_TOKENS:
        encoded = tokenizer(f"a {token} b", add_special_tokens=False)["input_ids"]
        token_id = tokenizer.convert_tokens_to_ids(token)
        if token_id is None or token_id == tokenizer.unk_token_id or encoded.count(token_id) != 1:
            raise SlotError(f"tokenizer does not encode {token!r} as one token; call add_slot_tokens first")
        ids.append(int(token_id))
    return SlotTokens(*ids)


@torch.no_grad()
def _init_new_rows(model: PreTrainedModel, old_rows: int) -> None:
    """Set embedding (and untied output) rows ``old_rows:`` to the mean of the old rows."""
    layers = [model.get_input_embeddings(), model.get_output_embeddings()]
    seen: set[int] = set()
    for layer in layers:
        if layer is None or id(layer.weight) in seen:
            continue
        seen.add(id(layer.weight))
        weight = layer.weight  # (V, H)
        weight[old_rows:] = weight[:old_rows].float().mean(dim=0).to(weight.dtype)


def add_slot_tokens(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rec_dim: int | None = None
) -> SlotTokens:
    """Add ``<user>``/``<item>`` to ``tokenizer`` (if missing) and resize ``model``'s embeddings.

    Idempotent: a tokenizer that already has the slots (e.g. one saved with an aligned model)
    is left as is, and the model is resized only if it has fewer rows than the tokenizer."""
    check_base(model, tokenizer, rec_dim)
    slots = add_slot_tokens_to_tokenizer(tokenizer)
    old_rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > old_rows:
        model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
        _init_new_rows(model, old_rows)
    return slots


def add_slot_tokens_to_tokenizer(tokenizer: PreTrainedTokenizerBase) -> SlotTokens:
    """The tokenizer half of :func:`add_slot_tokens` (idempotent); the model must be resized too."""
    missing = [t for t in SLOT_TOKENS if t not in tokenizer.get_vocab()]
    if missing:
        _add_special_tokens(tokenizer, missing)
    return slot_token_ids(tokenizer)


def slot_positions(input_ids: torch.Tensor, token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rows, cols)`` of every ``token_id`` in ``input_ids`` ``(B, T)``, row-major order.

    Row-major order is the order of appearance within a row, rows in batch order: the order
    the collator lists slot ids in."""
    return torch.nonzero(input_ids == token_id, as_tuple=True)  # (S,), (S,)
