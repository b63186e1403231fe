"""``AlignedLM``: a causal LM that reads recommender embeddings at its slot tokens.

It wraps the base LM (a ``PreTrainedModel`` or a ``PeftModel``), the frozen recommender, the
user/item connectors and an injection mode (:mod:`recexp.llm.inject`). The recommender runs
inside every forward: user vectors from the history ids of each ``<user>`` slot, item vectors
from its item table for each ``<item>`` slot; so training and serving see the same numbers.

Batch layout (from :mod:`recexp.llm.collate`): ``history_ids`` ``(S_u, L)`` holds one
right-aligned history per ``<user>`` token in row-major order of ``input_ids``, padded on the
left with any negative id (mapped to the recommender's pad id here); ``item_slot_ids``
``(S_i,)`` one item id per ``<item>`` token, same order.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_outputs import CausalLMOutputWithPast

from recexp.llm.connectors import Connectors
from recexp.llm.errors import SlotError
from recexp.llm.inject import QKVInjector, SlotVectors, check_mode, expand_rows, inject_inputs
from recexp.llm.slots import SlotTokens, slot_positions
from recexp.recommender.base import Recommender

IGNORE_INDEX = -100


def weighted_ce(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None, num_items: int | float | torch.Tensor | None
) -> torch.Tensor:
    """``sum(weight * CE) / num_items`` over labelled targets: ``logits`` ``(N, V)``, ``targets`` and
    ``weights`` ``(N,)`` (None: weight 1); ``num_items`` default: the sum of the weights."""
    losses = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")  # (N,)
    if weights is None:
        weights = (targets != IGNORE_INDEX).to(losses.dtype)
    if num_items is None:
        num_items = weights.sum().clamp(min=1e-12)  # no labelled token: 0 / tiny = 0
    return (losses * weights).sum() / num_items


def causal_lm_loss(
    logits: torch.Tensor, labels: torch.Tensor, num_items: int | float | torch.Tensor | None = None,
    label_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Next-token cross-entropy in fp32: ``sum / num_items`` (default: mean over labelled tokens).

    ``logits`` ``(B, T, V)``, ``labels`` ``(B, T)`` unshifted with ``-100`` where ignored; passing
    ``num_items`` = the labelled tokens of all micro-batches makes accumulated gradients equal
    those of one big batch. ``label_weights`` ``(B, T)`` (aligned with ``labels``) weigh each
    token (per-example weighting; then ``num_items`` counts examples)."""
    shifted = logits[:, :-1].reshape(-1, logits.shape[-1])  # (B*(T-1), V)
    weights = label_weights[:, 1:].reshape(-1) if label_weights is not None else None
    return weighted_ce(shifted, labels[:, 1:].reshape(-1), weights, num_items)


def _head_split(lm: nn.Module) -> tuple[nn.Module, nn.Module] | None:
    """``(decoder, lm_head)`` of a causal LM whose logits are exactly ``lm_head(decoder(...))``;
    ``None`` for models that post-process logits (soft-capping, scaling), which keep the full path."""
    config = getattr(lm, "config", None)
    if any(getattr(config, key, None) for key in ("final_logit_softcapping", "logit_scale", "logits_scaling")):
        return None
    get_decoder, get_head = getattr(lm, "get_decoder", None), getattr(lm, "get_output_embeddings", None)
    decoder, head = (get_decoder() if get_decoder else None), (get_head() if get_head else None)
    return (decoder, head) if decoder is not None and head is not None else None


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean 4-D mask ``(B, 1, T, T)`` (True = may attend) -> additive float (0 / dtype min)."""
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    return torch.where(mask, zero, torch.finfo(dtype).min)


def prepare_mask(mask: torch.Tensor | None, attn_implementation: str, dtype: torch.dtype) -> torch.Tensor | None:
    """Block masks stay boolean for sdpa (any dtype under autocast); eager attention adds the mask
    to its scores, so it gets the additive form. 2-D padding masks pass through."""
    if mask is None or mask.dim() != 4 or mask.dtype != torch.bool or attn_implementation != "eager":
        return mask
    return additive_mask(mask, dtype)


class AlignedLM(nn.Module):
    """Base LM + frozen recommender + connectors + injection mode (see the module doc)."""

    def __init__(
        self, base: nn.Module, recommender: Recommender, connectors: Connectors, slots: SlotTokens,
        mode: str = "input_add",
    ) -> None:
        super().__init__()
        check_mode(mode)
        rec_dim = int(recommender.item_embeddings().shape[1])
        if rec_dim != connectors.rec_dim:
            raise SlotError(f"recommender vectors are {rec_dim}-d but the connectors take {connectors.rec_dim}-d")
        self.base = base
        # The recommender is a frozen black box, not part of the trained module: it is kept
        # outside the module tree so that DeepSpeed / DDP never partition, cast (bf16) or
        # broadcast it, and its vectors stay those it computes everywhere else (move it to a
        # device with ``model.recommender.to(...)``).
        object.__setattr__(self, "_recommender", recommender.eval().requires_grad_(False))
        self.connectors = connectors
        self.slots = slots
        self.mode = mode
        self.injector = QKVInjector(base, self._decoder()) if mode == "every_layer" else None

    @property
    def recommender(self) -> Recommender:
        """The frozen recommender (not a submodule: see ``__init__``)."""
        return self._recommender

    def _decoder(self) -> nn.Module:
        """The decoder stack inside the (possibly PEFT-wrapped) causal LM."""
        model = self.base.get_base_model() if hasattr(self.base, "get_base_model") else self.base
        return model.get_decoder()

    def train(self, mode: bool = True) -> AlignedLM:
        """Like ``nn.Module.train``, but the recommender always stays in eval mode."""
        super().train(mode)
        self.recommender.eval()
        return self

    @torch.no_grad()
    def recommender_vectors(
        self, history_ids: torch.Tensor, item_slot_ids: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen recommender outputs: users ``(S_u, d)`` from histories ``(S_u, L)``, items ``(S_i, d)``."""
        device = self.recommender.item_embeddings().device
        users = torch.zeros(0, self.connectors.rec_dim, device=device)
        if history_ids.shape[0]:
            histories = history_ids.to(device)
            histories = histories.masked_fill(histories < 0, self.recommender.pad_id)  # (S_u, L)
            users = self.recommender.user_embedding(histories)  # (S_u, d)
        items = self.recommender.item_embeddings()[item_slot_ids.to(device)]  # (S_i, d)
        return users.float(), items.float()

    def slot_vectors(
        self, input_ids: torch.Tensor, history_ids: torch.Tensor | None, item_slot_ids: torch.Tensor | None
    ) -> SlotVectors:
        """Positions of all slots in ``input_ids`` ``(B, T)`` and their projected vectors ``(S, H)``."""
        device = input_ids.device
        history_ids = history_ids if history_ids is not None else torch.zeros(0, 1, dtype=torch.long)
        item_slot_ids = item_slot_ids if item_slot_ids is not None else torch.zeros(0, dtype=torch.long)
        user_rows, user_cols = slot_positions(input_ids, self.slots.user_id)
        item_rows, item_cols = slot_positions(input_ids, self.slots.item_id)
        _check_counts("<user>", len(user_rows), history_ids.shape[0], "history_ids rows")
        _check_counts("<item>", len(item_rows), item_slot_ids.shape[0], "item_slot_ids")
        users, items = self.recommender_vectors(history_ids, item_slot_ids)
        dtype = next(self.connectors.parameters()).dtype
        users, items = users.to(device, dtype), items.to(device, dtype)
        vectors = torch.cat([self.connectors.user(users), self.connectors.item(items)])  # (S_u + S_i, H)
        return SlotVectors(torch.cat([user_rows, item_rows]), torch.cat([user_cols, item_cols]), vectors)

    def embed(
        self,
        input_ids: torch.Tensor,
        history_ids: torch.Tensor | None = None,
        item_slot_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, SlotVectors]:
        """Input embeddings ``(B, T, H)`` with the slot vectors injected, and the slot vectors."""
        slots = self.slot_vectors(input_ids, history_ids, item_slot_ids)
        embeds = self.base.get_input_embeddings()(input_ids)  # (B, T, H)
        return inject_inputs(embeds, slots, self.mode), slots

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        history_ids: torch.Tensor | None = None,
        item_slot_ids: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        num_items_in_batch: int | float | torch.Tensor | None = None,
        return_logits: bool = True,
        label_weights: torch.Tensor | None = None,
    ) -> CausalLMOutputWithPast:
        """Logits ``(B, T, V)`` and, with ``labels``, the loss (see :func:`causal_lm_loss`).

        ``attention_mask``: ``(B, T)`` padding mask, or a boolean ``(B, 1, T, T)`` block mask
        for packed rows (then pass the per-sample ``position_ids`` too). ``return_logits=False``
        with ``labels`` (training): the same loss, the LM head applied only where a label is
        and no logits returned. ``label_weights`` ``(B, T)``: see :func:`causal_lm_loss`."""
        embeds, slots = self.embed(input_ids, history_ids, item_slot_ids)
        attn = getattr(self.base.config, "_attn_implementation", None) or "eager"
        attention_mask = prepare_mask(attention_mask, attn, embeds.dtype)
        if self.injector is not None:
            self.injector.set(slots, tuple(input_ids.shape))
        split = _head_split(self.base.get_base_model()) if labels is not None and not return_logits else None
        if split is not None:
            loss = self._labelled_loss(split, embeds, attention_mask, position_ids, labels, num_items_in_batch,
                                       label_weights)
            return CausalLMOutputWithPast(loss=loss)
        out = self.base(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
        loss = causal_lm_loss(out.logits, labels, num_items_in_batch, label_weights) if labels is not None else None
        return CausalLMOutputWithPast(loss=loss, logits=out.logits)

    def _labelled_loss(
        self, split: tuple[nn.Module, nn.Module], embeds: torch.Tensor, attention_mask: torch.Tensor | None,
        position_ids: torch.Tensor | None, labels: torch.Tensor, num_items: int | float | torch.Tensor | None,
        label_weights: torch.Tensor | None,
    ) -> torch.Tensor:
        """:func:`causal_lm_loss` with the LM head applied only at labelled positions: an
        alignment row has ~10 response tokens of ~80, and the head (``H x V``) is about a fifth
        of a small model's FLOPs. ``split``: :func:`_head_split` of the base model."""
        decoder, head = split
        hidden = decoder(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=position_ids,
                         use_cache=False).last_hidden_state  # (B, T, H)
        targets = labels[:, 1:]  # (B, T-1): position t predicts token t+1
        keep = targets != IGNORE_INDEX
        logits = head(hidden[:, :-1][keep])  # (N, V) for the N labelled tokens
        weights = label_weights[:, 1:][keep] if label_weights is not None else None
        return weighted_ce(logits, targets[keep], weights, num_items)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        history_ids: torch.Tensor | None = None,
        item_slot_ids: torch.Tensor | None = None,
        **generate_kwargs: Any,
    ) -> torch.Tensor:
        """New token ids ``(B, N)`` for left-padded prompts ``(B, T)``; slots injected in the prefill.

        The slot tokens themselves are never generated (``suppress_tokens``)."""
        embeds, slots = self.embed(input_ids, history_ids, item_slot_ids)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        suppress = list(generate_kwargs.pop("suppress_tokens", None) or []) + list(self.slots.ids)
        if self.injector is not None:
            # generate repeats each prompt max(num_beams, num_return_sequences) times before the prefill
            factor = max(int(generate_kwargs.get("num_beams") or 1), int(generate_kwargs.get("num_return_sequences") or 1))
            shape = (input_ids.shape[0] * factor, input_ids.shape[1])
            self.injector.set(expand_rows(slots, factor), shape, once=True)
        try:
            out = self.base.generate(
                input_ids=input_ids, inputs_embeds=embeds, attention_mask=attention_mask,
                suppress_tokens=suppress, **generate_kwargs,
            )
        finally:
            if self.injector is not None:
                self.injector.clear()
        return out[:, input_ids.shape[1] :]  # given input_ids too, generate returns prompt + new tokens

    @torch.no_grad()
    def prefill(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        history_ids: torch.Tensor | None = None,
        item_slot_ids: torch.Tensor | None = None,
        prefix: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, Any]:
        """One forward over left-padded prompts ``(B, T)`` with the slots injected: the fp32
        logits at the last position ``(B, V)`` and the KV cache, to go on from with
        :meth:`continue_generate`. Positions count real tokens, as ``generate`` counts them.

        ``prefix`` ``(P,)``: token ids every prompt starts with (no slot among them), computed
        once and shared by the ``B`` rows; ``input_ids`` are then the rest of each prompt, and
        the cache holds ``prefix + input_ids`` (padding between the two is masked)."""
        cache, mask = None, attention_mask
        if prefix is not None and len(prefix):
            cache = self._prefix_cache(prefix, input_ids.shape[0])
            mask = torch.cat([torch.ones_like(attention_mask[:, :1]).expand(-1, len(prefix)), attention_mask], 1)
        embeds, slots = self.embed(input_ids, history_ids, item_slot_ids)
        positions = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)[:, -input_ids.shape[1]:]  # (B, T)
        if self.injector is not None:
            self.injector.set(slots, tuple(input_ids.shape), once=True)
        try:
            out = self.base(inputs_embeds=embeds, attention_mask=mask, position_ids=positions, past_key_values=cache,
                            use_cache=True, logits_to_keep=1)
        finally:
            if self.injector is not None:
                self.injector.clear()
        return out.logits[:, -1].float(), out.past_key_values

    def _prefix_cache(self, prefix: torch.Tensor, rows: int) -> Any:
        """The KV cache of ``prefix`` ``(P,)`` (one forward, batch 1), repeated for ``rows`` rows."""
        ids = prefix.view(1, -1)
        embeds, _ = self.embed(ids)  # (1, P, H); a slot here fails the slot count check
        cache = self.base(inputs_embeds=embeds, attention_mask=torch.ones_like(ids), use_cache=True,
                          logits_to_keep=1).past_key_values
        cache.batch_repeat_interleave(rows)
        return cache

    @torch.no_grad()
    def continue_generate(
        self, cache: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, **generate_kwargs: Any
    ) -> torch.Tensor:
        """New token ids ``(B, N)`` after ``input_ids`` ``(B, T + S)``: the ``T`` tokens whose KV
        ``cache`` :meth:`prefill` returned, then ``S`` new ones (no slot tokens among them; left
        padding inside them is masked). Only the ``S`` tokens are prefilled; the cache is consumed."""
        new = input_ids[:, cache.get_seq_length():]  # (B, S)
        if torch.isin(new, torch.tensor(list(self.slots.ids), device=new.device)).any():
            raise SlotError("continue_generate: slot tokens after the cached prompt are not injected")
        suppress = list(generate_kwargs.pop("suppress_tokens", None) or []) + list(self.slots.ids)
        out = self.base.generate(input_ids=input_ids, attention_mask=attention_mask, past_key_values=cache,
                                 suppress_tokens=suppress, **generate_kwargs)
        return out[:, input_ids.shape[1]:]


def _check_counts(token: str, found: int, given: int, what: str) -> None:
    """Every slot token needs exactly one id entry and vice versa."""
    if found != given:
        raise SlotError(f"batch has {found} {token} tokens but {given} {what}; slot tokens and ids must match 1:1")
