"""Benchmark: Explainer throughput with Serve dynamic batching vs the unbatched deployment.

    .venv/bin/python bench/serve_batching.py [--base default|tiny] [--requests 96] [--repeats 3]

Same model, same replicas (one Explainer replica, ``explainer_cpus=1``, 1 torch thread), same
CPU, same client load; only ``serve.batch_max_size`` differs: 16 (batched; requests arriving
within ``batch_wait_timeout_s`` are generated together) vs 1 (unbatched: one request per
``generate``). The load is ``bench/serve_load.py``: 16 closed-loop clients on
``POST /v1/explain``, ``--requests`` requests per repetition after a warm-up; the median
of ``--repeats`` repetitions is reported, with p50/p99 latency.

Model: ``--base default`` = SmolLM2-135M-Instruct (``python -m recexp.llm.fetch_default``)
with a random LoRA adapter and connectors (tests/serve/serve_fakes.py), the tiny SASRec of
the tests as recommender; ``--base tiny`` = the tests' 2-layer Llama (quick check).
Explanations are ``--max-new-tokens`` long.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serve"))
sys.path.insert(0, str(ROOT / "bench"))

import ray  # noqa: E402
import serve_fakes  # noqa: E402
from serve_load import run_load  # noqa: E402

from recexp.config import load_config  # noqa: E402
from recexp.serve.app import start, stop  # noqa: E402

MODES = {"batched": 16, "unbatched": 1}
CONCURRENCY = 16


def measure(root: str, batch: int, args: argparse.Namespace) -> list[dict]:
    """Deploy with ``batch_max_size=batch``, warm up, then ``repeats`` load runs."""
    cfg = load_config(str(ROOT / "configs/serve/local.yaml"), [
        f"store.root={root}", "run_id=run-a", f"serve.port={args.port}", f"serve.batch_max_size={batch}",
        "serve.batch_wait_timeout_s=0.05", "serve.min_replicas=1", "serve.max_replicas=1",
        "serve.max_ongoing_requests=32", "serve.max_queued_requests=-1", "serve.explainer_cpus=1",
        "serve.recommender_cpus=0.5", f"serve.max_new_tokens={args.max_new_tokens}", "tasks.max_hist=5",
    ])
    url = start(cfg)
    try:
        asyncio.run(run_load(url, concurrency=CONCURRENCY, requests=CONCURRENCY))  # warm-up
        return [asyncio.run(run_load(url, concurrency=CONCURRENCY, requests=args.requests))
                for _ in range(args.repeats)]
    finally:
        stop()


def median_run(runs: list[dict]) -> dict:
    """The repetition with the median throughput (its latencies go with it)."""
    return sorted(runs, key=lambda r: r["rps"])[len(runs) // 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", choices=["default", "tiny"], default="default")
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--work", default="", help="reuse the store an earlier run built in this directory")
    args = parser.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-serve-"))
    if not (work / "store").is_dir():
        serve_fakes.build_store(str(work / "store"), work, base_uri=None if args.base == "tiny" else "default")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = {}
    for mode, batch in MODES.items():
        runs = measure(str(work / "store"), batch, args)
        results[mode] = {"runs": runs, "median": median_run(runs), "median_rps": statistics.median(r["rps"] for r in runs)}
        print(json.dumps({mode: results[mode]["median"]}), flush=True)
    ray.shutdown()
    speedup = results["batched"]["median_rps"] / results["unbatched"]["median_rps"]
    print("| deployment | batch_max_size | req/s (median of %d) | p50 ms | p99 ms |" % args.repeats)
    print("|---|---|---|---|---|")
    for mode, batch in MODES.items():
        m = results[mode]["median"]
        print(f"| {mode} | {batch} | {results[mode]['median_rps']:.2f} | {m['p50_ms']} | {m['p99_ms']} |")
    print(f"speed-up: {speedup:.2f}x")
    print(json.dumps({"base": args.base, "max_new_tokens": args.max_new_tokens, "speedup": round(speedup, 2),
                      **{m: results[m]["runs"] for m in MODES}}))


if __name__ == "__main__":
    main()
