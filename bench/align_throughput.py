"""Alignment training throughput on CPU: the Ray Train + DeepSpeed recipe vs a plain PEFT loop,
and packing / length grouping vs padding.

Same data, same model, same micro-batches: the train rows of one form of a committed
``build-alignment-data`` stage, encoded once, planned by ``recexp.llm.align_data`` with the same
seed. Per setting and repeat, ``--steps`` optimizer steps; the first is a warm-up and is not
counted. Reported per step: tokens/s (all tokens the model processes, padding included) and
effective tokens/s (non-padding tokens); per setting the median over steps, then over repeats.

* ``plain``: one process, ``torch.set_num_threads(--threads)``, the PEFT model and the
  ``recexp.llm.train_step`` loop, no Ray, no DeepSpeed.
* ``recipe-<batching>``: ``ray_jobs.align`` through ``run_stage`` (Ray Train, one worker with
  ``--threads`` CPUs, DeepSpeed ZeRO-2), tokens/s from its ``train_log.jsonl``.

    python bench/align_throughput.py --root ./artifacts --run signal --steps 8 --repeats 3 \
        --settings plain-packed recipe-packed recipe-grouped recipe-padded --out bench/out/align_throughput.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from ray_jobs import align as recipe
from recexp.config import load_config
from recexp.llm.align_data import collate, epoch_micro_batches, read_train_rows, token_counts
from recexp.llm.build import build_trainable
from recexp.llm.collate import Collator
from recexp.llm.engine import DDPEngine, EngineSettings
from recexp.runner import run_stage
from recexp.store import Store


def overrides(args: argparse.Namespace, batching: str, run_id: str) -> list[str]:
    return [
        f"store.root={args.root}", f"run_id={run_id}", "force=true", f"inputs.ingest={args.run}",
        f"inputs.train-recommender={args.run}", f"inputs.build-alignment-data={args.run}", f"align.model={args.model}",
        f"align.form={args.form}", f"align.tasks={args.tasks}", f"align.max_rows={args.max_rows}",
        f"align.max_length={args.max_length}", f"align.batching={batching}", f"align.micro_batch_size={args.micro_batch_size}",
        f"align.grad_accum={args.grad_accum}", f"align.max_steps={args.steps}", "align.log_every=1",
        f"align.checkpoint_every={args.steps}", "align.num_workers=1", f"align.cpus_per_worker={args.threads}",
    ]


def plain(args: argparse.Namespace, batching: str) -> list[dict]:
    """The single-process PEFT loop over the recipe's micro-batches (world size 1, epoch 0)."""
    cfg = load_config(None, overrides(args, batching, "bench-plain"))
    store = Store.from_config(cfg.store)
    encoder = store.committed(args.run, "train-recommender").url("encoder")
    model, tokenizer = build_trainable(recipe.build_spec(cfg.align, encoder, None))
    collator = Collator(tokenizer, model.slots, cfg.align.max_length)
    rows = read_train_rows(store.committed(args.run, "build-alignment-data"), cfg.align.form, cfg.align.tasks,
                           max_rows=cfg.align.max_rows, seed=cfg.align.seed)
    examples = collator.encode(rows.to_pylist())
    plan = epoch_micro_batches([len(e) for e in examples], batching, args.micro_batch_size, args.max_length, 0, 0)
    engine = DDPEngine(model, EngineSettings(strategy="ddp", lr=1e-3, total_steps=args.steps, grad_accum=args.grad_accum,
                                             micro_batch_size=args.micro_batch_size), torch.device("cpu"))
    rows_out = []
    for step in range(args.steps):
        micro = plan[step * args.grad_accum : (step + 1) * args.grad_accum]
        tick = time.perf_counter()
        batches = [collate(examples, m, collator.pad_id, batching == "packed", args.max_length) for m in micro]
        engine.step(batches, float(sum(b.num_label_tokens for b in batches)))
        seconds = time.perf_counter() - tick
        real, padded = token_counts(examples, micro)
        rows_out.append({"step": step + 1, "tokens_per_s": padded / seconds, "effective_tokens_per_s": real / seconds})
    return rows_out


def through_recipe(args: argparse.Namespace, batching: str) -> list[dict]:
    run_id = f"bench-align-{batching}"
    run_stage(recipe.STAGE, load_config(None, overrides(args, batching, run_id)), recipe.run)
    out = Store(args.root).committed(run_id, recipe.STAGE)
    return [json.loads(line) for line in out.open("train_log.jsonl", "r").read().splitlines()]


def summarise(log: list[dict]) -> dict:
    counted = [row for row in log if row["step"] > 1]  # step 1 is the warm-up
    return {key: statistics.median(row[key] for row in counted) for key in ("tokens_per_s", "effective_tokens_per_s")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="./artifacts")
    parser.add_argument("--run", default="signal", help="run with committed alignment data")
    parser.add_argument("--model", default="default")
    parser.add_argument("--form", default="intention")
    parser.add_argument("--tasks", default="[t1,t3]")
    parser.add_argument("--max-rows", type=int, default=400)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--micro-batch-size", type=int, default=4)
    parser.add_argument("--grad-accum", type=int, default=2)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--settings", nargs="+", default=["plain-packed", "recipe-packed", "recipe-grouped", "recipe-padded"])
    parser.add_argument("--out", default="bench/out/align_throughput.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    for setting in args.settings:
        kind, batching = setting.split("-", 1)
        runs = [summarise((plain if kind == "plain" else through_recipe)(args, batching)) for _ in range(args.repeats)]
        results[setting] = {"runs": runs, **{k: statistics.median(r[k] for r in runs) for k in runs[0]}}
        print(json.dumps({setting: results[setting]}), flush=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
