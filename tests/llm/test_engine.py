"""Training engines: DeepSpeed ZeRO and plain PyTorch take identical steps; checkpoints round-trip
without unpickling; the schedule is warm-up + cosine."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import llm_tiny
import pytest
import torch

from recexp.llm.collate import Collator
from recexp.llm.engine import DS_DIR, TRAINABLE_FILE, EngineSettings, WarmupCosine, build_engine, load_trainable
from recexp.llm.lora import LoraSettings, apply_lora


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module", autouse=True)
def process_group():
    """A one-rank gloo group, as Ray Train sets up for each worker (DeepSpeed needs one)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    torch.distributed.init_process_group("gloo", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def fresh_model(tiny_template: llm_tiny.Parts):
    parts = tiny_template.copy()
    torch.manual_seed(0)
    parts.base = apply_lora(parts.base, LoraSettings(r=4, alpha=8, dropout=0.0), parts.slots.ids)
    return parts.aligned("input_add").train()


def batches(tiny_template: llm_tiny.Parts) -> list:
    collator = Collator(tiny_template.tokenizer, tiny_template.slots, 256)
    rows = llm_tiny.toy_rows(8, seed=3)
    return [collator.pad(rows[i : i + 2]) for i in range(0, 8, 2)]


def settings(strategy: str, stage: int = 2) -> EngineSettings:
    return EngineSettings(strategy=strategy, ds_config={"zero_optimization": {"stage": stage}}, lr=1e-2, warmup_steps=1,
                          total_steps=4, max_grad_norm=1.0, micro_batch_size=2, grad_accum=2)


def run_steps(engine, micro: list, steps: range) -> list[float]:
    losses = []
    for step in steps:
        group = micro[2 * (step % 2) : 2 * (step % 2) + 2]
        losses.append(engine.step(group, float(sum(b.num_label_tokens for b in group))).loss)
    return losses


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_matches_plain_pytorch(tiny_template, stage: int) -> None:
    micro = batches(tiny_template)
    plain = build_engine(fresh_model(tiny_template), settings("ddp"), torch.device("cpu"))
    ds = build_engine(fresh_model(tiny_template), settings("deepspeed", stage), torch.device("cpu"))
    want, got = run_steps(plain, micro, range(4)), run_steps(ds, micro, range(4))
    assert got == pytest.approx(want, rel=1e-4, abs=1e-5)
    assert want[-1] < want[0]  # it learns
    ds_state, plain_state = ds.trainable_state(), plain.trainable_state()
    assert ds_state.keys() == plain_state.keys()
    for name, tensor in plain_state.items():
        assert torch.allclose(ds_state[name], tensor, atol=1e-5), name


@pytest.mark.parametrize("strategy", ["ddp", "deepspeed"])
def test_checkpoint_round_trip_continues_identically(tiny_template, tmp_path: Path, strategy: str) -> None:
    micro = batches(tiny_template)
    straight = build_engine(fresh_model(tiny_template), settings(strategy), torch.device("cpu"))
    want = run_steps(straight, micro, range(4))
    first = build_engine(fresh_model(tiny_template), settings(strategy), torch.device("cpu"))
    run_steps(first, micro, range(2))
    first.save(tmp_path, rank=0)
    assert (tmp_path / TRAINABLE_FILE).is_file() and ((tmp_path / DS_DIR).is_dir() == (strategy == "deepspeed"))
    resumed = build_engine(fresh_model(tiny_template), settings(strategy), torch.device("cpu"))
    resumed.load(tmp_path)
    assert run_steps(resumed, micro, range(2, 4)) == pytest.approx(want[2:], rel=1e-5)


def test_load_trainable_refuses_weights_of_another_model(tiny_template, tmp_path: Path) -> None:
    engine = build_engine(fresh_model(tiny_template), settings("ddp"), torch.device("cpu"))
    engine.save(tmp_path, rank=0)
    other = tiny_template.copy()
    other.base = apply_lora(other.base, LoraSettings(r=2, alpha=4, target_modules=["q_proj"]), other.slots.ids)
    with pytest.raises(ValueError, match="do not fit the model"):
        load_trainable(other.aligned("input_add"), tmp_path / TRAINABLE_FILE)


def test_warmup_then_cosine_to_a_floor() -> None:
    schedule = WarmupCosine(warmup=4, total=14, floor=0.1)
    assert [schedule(s) for s in range(4)] == pytest.approx([0.2, 0.4, 0.6, 0.8])
    assert schedule(4) == pytest.approx(1.0)
    assert schedule(9) == pytest.approx(0.55)
    assert schedule(14) == pytest.approx(0.1) and schedule(100) == pytest.approx(0.1)
