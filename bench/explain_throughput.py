"""Benchmark: batched explanation generation vs a naive per-sample ``generate`` loop.

    .venv/bin/python bench/explain_throughput.py                      # default: 48 prompts, 3 repeats
    .venv/bin/python bench/explain_throughput.py --prompts 96 --batch-size 16 --max-new-tokens 48

Model: the real default base model (SmolLM2-135M-Instruct, ``python -m recexp.llm.fetch_default``)
with the slot tokens, freshly LoRA-wrapped (rank 16, q/k/v/o) and fresh connectors, over a
random-init SASRec export (``tests/tasks/fakes.py``: 500 items, d=64, max_len=20): the
compute of an aligned model, without needing a trained one. The prompts are the explain
stage's own (:func:`recexp.tasks.online.explain_rows`, hybrid form, 9 titles shown) for
``--prompts`` (user, item) pairs of a synthetic catalog.

Both paths decode greedily with the same stop ids and ``max_new_tokens``, on the same model,
in the same process, on the same prompts:

* batched: :func:`recexp.explain.generate.generate_batched` (length-sorted batches of
  ``--batch-size``, left padding, KV cache), what every explain worker runs;
* baseline: one ``AlignedLM.generate`` call per prompt (KV cache too, no padding).

``--two-turn``: the explain stage's default path (:func:`recexp.explain.two_turn.answer_and_explain`:
one prefill for the Yes / No answer, turn 2 continued from its KV cache) vs the naive per-prompt
code (a forward for the answer, then ``generate`` over the whole turn-2 prompt).
``--unbatched-engine`` also times the stage's path with ``batch_size=1``: what the cache
continuation gives without batching, so the two gains can be told apart.

Explanations/s = prompts / seconds; tokens/s = generated tokens (up to and including the
end-of-turn token) / seconds. Each repeat times both paths; the median of ``--repeats`` is
reported, with the share of prompts whose two answers are identical (greedy: they should be).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "tasks"))

import fakes  # noqa: E402

from recexp.explain.generate import count_new_tokens, generate_batched  # noqa: E402
from recexp.explain.two_turn import answer_and_explain, answer_token_ids, answer_word  # noqa: E402
from recexp.llm.aligned import AlignedLM  # noqa: E402
from recexp.llm.collate import Collator  # noqa: E402
from recexp.llm.connectors import Connectors  # noqa: E402
from recexp.llm.load import load_base  # noqa: E402
from recexp.llm.lora import LoraSettings, apply_lora  # noqa: E402
from recexp.llm.slots import add_slot_tokens, hidden_size  # noqa: E402
from recexp.tasks.catalog import build_catalog  # noqa: E402
from recexp.tasks.online import explain_rows, follow_up_row, follow_up_text  # noqa: E402
from recexp.tasks.templates import load_templates  # noqa: E402

OUT = ROOT / "bench" / "out"
N_ITEMS, REC_DIM, REC_MAX_LEN = 500, 64, 20


def build_model() -> tuple[AlignedLM, Collator]:
    """Default base + slots + LoRA + connectors over a random SASRec (see the module doc)."""
    base, tokenizer = load_base("default")
    slots = add_slot_tokens(base, tokenizer, REC_DIM)
    torch.manual_seed(0)
    connectors = Connectors(REC_DIM, hidden_size(base))
    base = apply_lora(base, LoraSettings(r=16, alpha=32, dropout=0.0), slots.ids)
    recommender = fakes.fake_encoder(N_ITEMS, max_len=REC_MAX_LEN, d=REC_DIM)
    return AlignedLM(base, recommender, connectors, slots, "input_add").eval(), Collator(tokenizer, slots, 2048)


def prompts(n: int, form: str = "hybrid", seed: int = 0) -> list[dict[str, Any]]:
    """Explain-stage prompts for ``n`` synthetic users, each with one item outside its history
    (``hybrid``: ~250 prompt tokens with 9 titles; ``intention``: ~60, slots only)."""
    catalog = build_catalog(fakes.fake_items(N_ITEMS, hostile=["Mario Kart: Double Dash!! - GameCube"]))
    sequences = fakes.fake_sequences(n, N_ITEMS, seed, min_len=3, max_len=30)["item_ids"].to_pylist()
    items = [next(i for i in range(N_ITEMS) if i not in s) for s in sequences]
    return explain_rows(catalog, sequences, items, form=form, max_hist=9, max_len=REC_MAX_LEN)


def naive(model: AlignedLM, collator: Collator, rows: list[dict], max_new_tokens: int) -> tuple[list[str], int]:
    """The baseline: one ``generate`` per prompt; answers and generated tokens."""
    texts, tokens = [], 0
    stops = sorted(collator.encoder.ends)
    for row in rows:
        batch = collator.prompts([row])
        new = model.generate(batch.input_ids, batch.attention_mask, batch.history_ids, batch.item_slot_ids,
                             max_new_tokens=max_new_tokens, do_sample=False, use_cache=True,
                             pad_token_id=collator.pad_id, eos_token_id=stops)
        tokens += count_new_tokens(new, stops)[0]
        texts.append(collator.encoder.tokenizer.decode(new[0], skip_special_tokens=True).strip())
    return texts, tokens


def naive_two_turn(model: AlignedLM, collator: Collator, rows: list[dict], max_new_tokens: int,
                   follow_up: str) -> tuple[list[str], int]:
    """The two-turn baseline: per prompt, one forward for the Yes / No answer, then one
    ``generate`` of the reply to the follow-up turn."""
    yes, no = answer_token_ids(collator.encoder.tokenizer)
    turns = []
    for row in rows:
        inputs = {k: v for k, v in collator.prompts([row]).model_inputs().items() if k != "labels"}
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]  # (V,) at the answer position
        turns.append(follow_up_row(row, answer_word(float(logits[yes] - logits[no])), follow_up))
    return naive(model, collator, turns, max_new_tokens)


def timed(fn: Any) -> tuple[Any, float]:
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def one_repeat(model: AlignedLM, collator: Collator, rows: list[dict], args: argparse.Namespace) -> dict[str, float]:
    extra: dict[str, float] = {}
    if args.two_turn:
        follow_up = follow_up_text(load_templates(), args.form, 0)
        batched, t_batched = timed(lambda: answer_and_explain(
            model, collator, rows, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
            yes_no_ids=answer_token_ids(collator.encoder.tokenizer), follow_up=follow_up))
        (texts, tokens), t_naive = timed(lambda: naive_two_turn(model, collator, rows, args.max_new_tokens, follow_up))
        batched_texts = [[t] for t in batched.texts]
        if args.unbatched_engine:
            _, t_one = timed(lambda: answer_and_explain(
                model, collator, rows, batch_size=1, max_new_tokens=args.max_new_tokens,
                yes_no_ids=answer_token_ids(collator.encoder.tokenizer), follow_up=follow_up))
            extra = {"engine_batch1_s": t_one, "engine_batch1_expl_per_s": len(rows) / t_one}
    else:
        batched, t_batched = timed(lambda: generate_batched(
            model, collator, rows, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens))
        (texts, tokens), t_naive = timed(lambda: naive(model, collator, rows, args.max_new_tokens))
        batched_texts = batched.texts
    same = sum(a[0] == b for a, b in zip(batched_texts, texts)) / len(rows)
    return {
        "batched_s": t_batched, "naive_s": t_naive,
        "batched_expl_per_s": len(rows) / t_batched, "naive_expl_per_s": len(rows) / t_naive,
        "batched_tokens_per_s": batched.total_new_tokens / t_batched, "naive_tokens_per_s": tokens / t_naive,
        "batched_tokens": batched.total_new_tokens, "naive_tokens": tokens, "identical_answers": same, **extra,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--form", choices=["hybrid", "intention"], default="hybrid")
    parser.add_argument("--out", default=str(OUT / "explain_throughput.json"))
    parser.add_argument("--two-turn", action="store_true",
                        help="the explain stage's path: answer, then the explanation as a follow-up reply")
    parser.add_argument("--unbatched-engine", action="store_true",
                        help="with --two-turn: also time the stage's path at batch size 1")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model, collator = build_model()
    rows = prompts(args.prompts, args.form)
    generate_batched(model, collator, rows[:2], batch_size=2, max_new_tokens=2)  # warm-up (lazy inits)
    runs = []
    for repeat in range(args.repeats):
        runs.append(one_repeat(model, collator, rows, args))
        print(f"repeat {repeat}: " + json.dumps({k: round(v, 3) for k, v in runs[-1].items()}), flush=True)
    median = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    median["speedup_expl"] = median["batched_expl_per_s"] / median["naive_expl_per_s"]
    median["speedup_tokens"] = median["batched_tokens_per_s"] / median["naive_tokens_per_s"]
    prompt_tokens = [len(collator.encoder.encode_prompt(r)) for r in rows]
    report = {"args": vars(args), "machine": platform.processor() or platform.machine(), "torch": torch.__version__,
              "prompt_tokens_mean": statistics.mean(prompt_tokens), "runs": runs, "median": median}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(median, indent=2))


if __name__ == "__main__":
    main()
