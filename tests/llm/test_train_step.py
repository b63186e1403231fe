"""The training step: the loss goes down, accumulation and checkpointing change nothing."""

from __future__ import annotations

import contextlib

import llm_tiny
import pytest
import torch

from recexp.llm.collate import Collator
from recexp.llm.lora import LoraSettings, apply_lora
from recexp.llm.train_step import autocast_for, enable_gradient_checkpointing, make_optimizer, train_step


def lora_model(parts, mode: str):
    parts.base = apply_lora(parts.base, LoraSettings(r=8, alpha=16, dropout=0.0), parts.slots.ids)
    return parts.aligned(mode)


@pytest.mark.parametrize("mode", ["input_add", "every_layer"])
def test_loss_goes_down_on_a_toy_task(tiny_parts, mode: str) -> None:
    model = lora_model(tiny_parts, mode)
    collator = Collator(tiny_parts.tokenizer, tiny_parts.slots, 256)
    rows = llm_tiny.toy_rows(16)
    batches = [collator.pad(rows[:8]), collator.pad(rows[8:])]
    optimizer = make_optimizer(model, lr=2e-2)
    losses = [train_step(model, batches, optimizer).loss for _ in range(20)]
    assert losses[-1] < 0.5 * losses[0], losses


def params_after_one_sgd_step(parts, batches, checkpointing: bool = False) -> dict[str, torch.Tensor]:
    model = lora_model(parts, "every_layer")
    torch.nn.init.normal_(next(p for n, p in model.named_parameters() if "lora_B" in n))  # non-zero B: LoRA A gets grads
    if checkpointing:
        enable_gradient_checkpointing(model)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    stats = train_step(model, batches, optimizer, max_grad_norm=None)
    assert stats.micro_batches == len(batches) and stats.grad_norm > 0
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def test_accumulated_micro_batches_equal_one_big_batch(tiny_template) -> None:
    collator = Collator(tiny_template.tokenizer, tiny_template.slots, 256)
    rows = llm_tiny.toy_rows(6, seed=2) + llm_tiny.varied_rows()[:2]
    torch.manual_seed(5)
    big = params_after_one_sgd_step(tiny_template.copy(), [collator.pad(rows)])
    torch.manual_seed(5)
    small = params_after_one_sgd_step(tiny_template.copy(), [collator.pad(rows[:3]), collator.pad(rows[3:])])
    assert big.keys() == small.keys()
    for name in big:
        assert torch.allclose(big[name], small[name], atol=1e-6), name


@pytest.mark.parametrize("per_example", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_head_at_labelled_positions_only_gives_the_full_loss_and_gradients(tiny_template, packed: bool,
                                                                           per_example: bool) -> None:
    model = lora_model(tiny_template.copy(), "every_layer")
    torch.nn.init.normal_(next(p for n, p in model.named_parameters() if "lora_B" in n))
    collator = Collator(tiny_template.tokenizer, tiny_template.slots, 512)
    rows = llm_tiny.varied_rows()
    batch = collator.pack([rows[:2], rows[2:]], per_example) if packed else collator.pad(rows, per_example)
    inputs = batch.model_inputs()
    grads = []
    for return_logits in (True, False):
        out = model(**inputs, num_items_in_batch=7.0, return_logits=return_logits)
        assert (out.logits is None) == (not return_logits)
        out.loss.backward()
        grads.append((out.loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
        model.zero_grad()
    (full, full_grads), (sparse, sparse_grads) = grads
    assert torch.allclose(sparse, full, atol=1e-6) and full_grads.keys() == sparse_grads.keys()
    for name in full_grads:
        assert torch.allclose(sparse_grads[name], full_grads[name], atol=1e-6), name


@pytest.mark.parametrize("packed", [False, True])
def test_per_example_loss_is_the_mean_of_each_examples_mean_token_loss(tiny_template, packed: bool) -> None:
    """Short (T3-like) and long responses count once each, whatever their token counts."""
    model = lora_model(tiny_template.copy(), "input_add").eval()
    collator = Collator(tiny_template.tokenizer, tiny_template.slots, 512)
    rows = llm_tiny.varied_rows() + llm_tiny.toy_rows(3, seed=4)
    batch = collator.pack([rows[:3], rows[3:]], per_example=True) if packed else collator.pad(rows, per_example=True)
    assert batch.loss_weight == pytest.approx(len(rows))  # each example's weights sum to 1
    tokens = [collator.pad([row]).num_label_tokens for row in rows]
    assert len(set(tokens)) > 1  # responses of different lengths
    with torch.no_grad():
        alone = [model(**collator.pad([row]).model_inputs(), return_logits=False).loss for row in rows]
        both = model(**batch.model_inputs(), return_logits=False).loss
        by_token = model(**(collator.pack([rows[:3], rows[3:]]) if packed else collator.pad(rows)).model_inputs()).loss
    assert both == pytest.approx(float(sum(alone) / len(rows)), abs=1e-5)
    assert by_token == pytest.approx(float(sum(a * n for a, n in zip(alone, tokens)) / sum(tokens)), abs=1e-5)


def test_gradient_checkpointing_gives_the_same_step_with_every_layer_hooks(tiny_template) -> None:
    collator = Collator(tiny_template.tokenizer, tiny_template.slots, 256)
    batches = [collator.pad(llm_tiny.varied_rows())]
    torch.manual_seed(5)
    plain = params_after_one_sgd_step(tiny_template.copy(), batches)
    torch.manual_seed(5)
    checkpointed = params_after_one_sgd_step(tiny_template.copy(), batches, checkpointing=True)
    for name in plain:
        assert torch.allclose(plain[name], checkpointed[name], atol=1e-6), name


def test_cpu_trains_in_fp32_without_autocast() -> None:
    assert isinstance(autocast_for(torch.device("cpu")), contextlib.nullcontext)


def test_a_step_without_labels_is_refused(tiny_parts) -> None:
    model = lora_model(tiny_parts, "input_add")
    batch = Collator(tiny_parts.tokenizer, tiny_parts.slots, 256).prompts(llm_tiny.toy_rows(2))
    with pytest.raises(ValueError, match="no labelled tokens"):
        train_step(model, [batch], make_optimizer(model))
