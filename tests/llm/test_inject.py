"""Injection modes put the projected vectors exactly at the slot positions, and nowhere else."""

from __future__ import annotations

import llm_tiny
import pytest
import torch

from recexp.llm.collate import Collator
from recexp.llm.errors import SlotError
from recexp.llm.inject import QKV_NAMES, attention_modules

ROWS = [llm_tiny.interest_row([1, 2, 3], 4), llm_tiny.varied_rows()[3], llm_tiny.varied_rows()[2]]


def batch_of(parts, rows=ROWS):
    return Collator(parts.tokenizer, parts.slots, max_length=256).pad(rows)


def expected_vectors(parts, batch) -> torch.Tensor:
    """Connector outputs for every slot, computed by hand, in row-major slot order."""
    rec, pad = parts.recommender, parts.recommender.pad_id
    users = rec.user_embedding(batch.history_ids.masked_fill(batch.history_ids < 0, pad))  # (S_u, d)
    items = rec.item_embeddings()[batch.item_slot_ids]  # (S_i, d)
    return torch.cat([parts.connectors.user(users), parts.connectors.item(items)]).detach()


def slot_mask(parts, batch) -> torch.Tensor:
    return (batch.input_ids == parts.slots.user_id) | (batch.input_ids == parts.slots.item_id)  # (B, T)


@pytest.mark.parametrize("mode", ["input_add", "input_replace", "every_layer"])
def test_input_embeddings_change_exactly_at_slots(parts, mode: str) -> None:
    batch = batch_of(parts)
    model = parts.aligned(mode)
    plain = parts.base.get_input_embeddings()(batch.input_ids).detach()  # (B, T, H)
    injected, slots = model.embed(batch.input_ids, batch.history_ids, batch.item_slot_ids)
    injected = injected.detach()
    mask = slot_mask(parts, batch)
    assert mask.sum() == len(slots) == 7  # 3 users, 4 items
    assert torch.equal(injected[~mask], plain[~mask])
    # slots in row-major order: users first then items in SlotVectors, so compare by position
    rows, cols = slots.rows, slots.cols
    want = expected_vectors(parts, batch)
    got = injected[rows, cols]
    if mode == "input_replace":
        assert torch.allclose(got, want, atol=1e-6)
    else:
        assert torch.allclose(got - plain[rows, cols], want, atol=1e-6)


def test_user_slots_get_user_vectors_in_order(parts) -> None:
    batch = batch_of(parts)
    slots = parts.aligned("input_add").slot_vectors(batch.input_ids, batch.history_ids, batch.item_slot_ids)
    user_cols = (batch.input_ids == parts.slots.user_id).nonzero().tolist()
    assert [[int(r), int(c)] for r, c in zip(slots.rows[:3], slots.cols[:3])] == user_cols
    rec = parts.recommender
    third = rec.user_embedding(torch.tensor([list(range(1, 11))]))  # the 10-item history of row 1
    assert torch.allclose(slots.vectors[2], parts.connectors.user(third)[0], atol=1e-6)


def _capture_qkv(model, batch):
    """Per layer and projection: (input before the injector's hook, input after it)."""
    seen: dict[tuple[int, str], list[torch.Tensor]] = {}

    def recorder(key):
        def hook(module, args):
            seen.setdefault(key, []).append(args[0].detach())
        return hook

    handles = []
    for layer, attn in enumerate(attention_modules(model.base)):
        for name in QKV_NAMES:
            proj = getattr(attn, name)
            handles.append(proj.register_forward_pre_hook(recorder((layer, name)), prepend=True))  # before injection
            handles.append(proj.register_forward_pre_hook(recorder((layer, name))))  # after injection
    with torch.no_grad():
        model(**batch.model_inputs())
    for h in handles:
        h.remove()
    return seen


def test_every_layer_adds_to_qkv_inputs_at_slots_in_every_layer(parts) -> None:
    batch = batch_of(parts)
    model = parts.aligned("every_layer")
    assert model.injector.num_hooked == 3 * parts.base.config.num_hidden_layers
    seen = _capture_qkv(model, batch)
    mask = slot_mask(parts, batch)
    slots = model.slot_vectors(batch.input_ids, batch.history_ids, batch.item_slot_ids)
    assert len(seen) == 3 * parts.base.config.num_hidden_layers
    for (layer, name), (before, after) in seen.items():
        delta = after - before  # (B, T, H)
        assert torch.equal(delta[~mask], torch.zeros_like(delta[~mask])), (layer, name)
        assert torch.allclose(delta[slots.rows, slots.cols], slots.vectors.detach(), atol=1e-6), (layer, name)


def test_every_layer_changes_q_k_v_only_at_slots_in_the_first_layer(parts) -> None:
    batch = batch_of(parts)
    outputs = {}
    for mode in ("input_add", "every_layer"):
        attn = attention_modules(parts.base)[0]
        got = {}
        handles = [
            getattr(attn, n).register_forward_hook(lambda m, a, o, n=n: got.__setitem__(n, o.detach())) for n in QKV_NAMES
        ]
        with torch.no_grad():
            parts.aligned(mode)(**batch.model_inputs())
        for h in handles:
            h.remove()
        outputs[mode] = got
    mask = slot_mask(parts, batch)
    vectors = parts.aligned("input_add").slot_vectors(batch.input_ids, batch.history_ids, batch.item_slot_ids)
    attn = attention_modules(parts.base)[0]
    for name in QKV_NAMES:
        diff = outputs["every_layer"][name] - outputs["input_add"][name]  # (B, T, out)
        assert torch.equal(diff[~mask], torch.zeros_like(diff[~mask]))
        want = getattr(attn, name)(vectors.vectors).detach()  # W (x + e) - W x = W e
        assert torch.allclose(diff[vectors.rows, vectors.cols], want, atol=1e-5)


def greedy_without_cache(model, row_prompt, steps: int) -> list[int]:
    """Reference decoding: a full forward (slots injected) on the growing sequence."""
    ids = row_prompt.input_ids.clone()
    out = []
    for _ in range(steps):
        logits = model(ids, history_ids=row_prompt.history_ids, item_slot_ids=row_prompt.item_slot_ids).logits
        logits[..., list(model.slots.ids)] = float("-inf")
        nxt = int(logits[0, -1].argmax())
        out.append(nxt)
        ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
    return out


@pytest.mark.parametrize("mode", ["input_add", "input_replace", "every_layer"])
def test_generate_injects_in_prefill_only_and_matches_full_recompute(parts, mode: str) -> None:
    model = parts.aligned(mode).eval()
    collator = Collator(parts.tokenizer, parts.slots, max_length=256)
    rows = [ROWS[0], ROWS[1]]  # different lengths: the first is left-padded
    batch = collator.prompts(rows)
    with torch.no_grad():
        new = model.generate(batch.input_ids, batch.attention_mask, batch.history_ids, batch.item_slot_ids,
                             max_new_tokens=6, do_sample=False, min_new_tokens=6)
        assert model.injector is None or model.injector._state is None  # cleared after the prefill
        for i, row in enumerate(rows):
            alone = collator.prompts([row])
            assert new[i].tolist() == greedy_without_cache(model, alone, 6), i


def test_slot_count_mismatch_is_an_error(parts) -> None:
    batch = batch_of(parts)
    model = parts.aligned("input_add")
    with pytest.raises(SlotError, match="<user>"):
        model(batch.input_ids, history_ids=batch.history_ids[:-1], item_slot_ids=batch.item_slot_ids)
    with pytest.raises(SlotError, match="<item>"):
        model(batch.input_ids, history_ids=batch.history_ids, item_slot_ids=None)


def test_recommender_stays_frozen_and_connectors_learn(parts) -> None:
    batch = batch_of(parts)
    model = parts.aligned("every_layer").train()
    assert not model.recommender.training
    model(**batch.model_inputs()).loss.backward()
    assert all(p.grad is None for p in model.recommender.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.connectors.parameters())


def test_every_layer_needs_llama_style_attention(parts) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=len(parts.tokenizer)))
    parts.aligned("input_add")  # fine with any causal LM
    with pytest.raises(SlotError, match="q_proj"):
        type(parts.aligned("input_add"))(gpt2, parts.recommender, parts.connectors, parts.slots, "every_layer")
    with pytest.raises(ValueError, match="unknown injection mode"):
        parts.aligned("prefix")


@pytest.mark.parametrize("mode", ["input_replace", "every_layer"])
def test_bf16_base_with_fp32_connectors(tiny_parts, mode: str) -> None:
    parts = tiny_parts
    parts.base.to(torch.bfloat16)
    model = parts.aligned(mode)
    batch = batch_of(parts)
    embeds, _ = model.embed(batch.input_ids, batch.history_ids, batch.item_slot_ids)
    assert embeds.dtype == torch.bfloat16
    packed = Collator(parts.tokenizer, parts.slots, 512).pack([ROWS])
    out = model(**packed.model_inputs())
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    out.loss.backward()
    assert next(model.connectors.parameters()).grad is not None


@pytest.mark.parametrize("kwargs", [{"num_beams": 3, "num_return_sequences": 2}, {"do_sample": True, "num_return_sequences": 2}])
def test_every_layer_injects_when_generate_expands_the_batch(parts, kwargs: dict) -> None:
    """Beam search and several returned sequences repeat every prompt before the prefill: the
    q/k/v injection must follow (one injection per projection of every layer, at each copy)."""
    model = parts.aligned("every_layer").eval()
    batch = Collator(parts.tokenizer, parts.slots, max_length=256).prompts([ROWS[0], ROWS[1]])
    injected = []
    original = model.injector._pre_hook

    def counting(module, args):  # noqa: ANN001, ANN202
        out = original(module, args)
        if out is not None:
            injected.append(int(args[0].shape[0]))
        return out

    for handle in model.injector._handles:  # re-register through attach() with the counting hook
        handle.remove()
    model.injector._pre_hook = counting
    model.injector._targets = []
    with torch.no_grad():
        model.generate(batch.input_ids, batch.attention_mask, batch.history_ids, batch.item_slot_ids,
                       max_new_tokens=3, min_new_tokens=3, **kwargs)
    expanded = 2 * max(kwargs.get("num_beams", 1), kwargs["num_return_sequences"])
    assert injected == [expanded] * model.injector.num_hooked  # every projection, prefill only, whole batch
