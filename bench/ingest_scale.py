"""Benchmark: ingest throughput and peak memory (all Ray processes) at several data sizes.

    .venv/bin/python bench/ingest_scale.py --interactions 1000000 8000000 --repeats 3
    .venv/bin/python bench/ingest_scale.py --interactions 1000000 --baseline   # pandas, one process

Data: generated Amazon-2018 JSON lines (shards of 250k lines), made once under bench/out/ and
not timed. Each repeat runs the real recipe (``python -m ray_jobs.ingest``) in a fresh process
with a fresh local Ray (2 CPUs) and reports the median of: wall time (including Ray start),
stage time (from the manifest), interactions/s over the stage time, and peak PSS of the tree.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from memwatch import measure  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"


def source(n: int) -> Path:
    """Generated files for ``n`` interactions (made once)."""
    d = OUT / f"synthetic-{n}"
    if not (d / "DONE").exists():
        from recexp.data import synthetic

        synthetic.generate(str(d), n, seed=0)
        (d / "DONE").write_text("ok")
    return d


def run_recipe(n: int, repeat: int) -> dict:
    run_id = f"bench-{n}-{repeat}"
    store = OUT / "store"
    cmd = [sys.executable, "-m", "ray_jobs.ingest", f"store.root={store}", f"run_id={run_id}", "force=true",
           "data.format=amazon2018", f"data.path={source(n)}", "ray.num_cpus=2"]
    m = measure(cmd)
    if m.returncode:
        raise SystemExit(f"ingest failed:\n{m.output[-3000:]}")
    manifest = json.loads((store / "runs" / run_id / "ingest" / "manifest.json").read_text())
    stage_s = manifest["timings"]["total"]
    return {"wall_s": m.wall_s, "stage_s": stage_s, "interactions_per_s": n / stage_s, "peak_pss_mb": m.peak_pss_mb}


def run_baseline(n: int, repeat: int) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "ingest_pandas_baseline.py"), str(source(n))]
    m = measure(cmd)
    if m.returncode:
        raise SystemExit(f"baseline failed:\n{m.output[-3000:]}")
    return {"wall_s": m.wall_s, "stage_s": m.wall_s, "interactions_per_s": n / m.wall_s, "peak_pss_mb": m.peak_pss_mb}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interactions", type=int, nargs="+", default=[1_000_000, 8_000_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--baseline", action="store_true", help="run the single-process pandas baseline instead")
    args = parser.parse_args()
    for n in args.interactions:
        source(n)
        runs = [(run_baseline if args.baseline else run_recipe)(n, r) for r in range(args.repeats)]
        median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(json.dumps({"impl": "pandas" if args.baseline else "recexp", "interactions": n, "repeats": len(runs),
                          "median": {k: round(v, 2) for k, v in median.items()}, "runs": runs}), flush=True)


if __name__ == "__main__":
    main()
