"""Benchmark: alignment-data generation, Ray Data recipe vs a single-process pandas baseline.

    # full Amazon Video Games (50,546 users), random-init SASRec exports (no trained model yet):
    .venv/bin/python bench/tasks_generation.py --fake-recommender
    # exports of a real trained recommender, committed as run RUN under ROOT:
    .venv/bin/python bench/tasks_generation.py --store ROOT --run-id RUN
    # quick check on a subset of users (rows per user are what matters):
    .venv/bin/python bench/tasks_generation.py --fake-recommender --run-id games-2k --max-users 2000

Upstream: ``ingest`` and ``train-recommender`` committed in ``--run-id`` under ``--store``. With
``--fake-recommender`` missing stages are made once (not timed): ingest of the data set with
``ingest.k_core=0`` (50,546 users, 16,859 items, 440,264 interactions), then a random-init
SASRec (d=64, max_len=50) exported exactly as the train-recommender contract says, with
``tests/tasks/fakes.py``.

Measured, each in a fresh process tree (``bench/memwatch.py``: wall time, peak PSS of the
tree, so all Ray processes count): the recipe (``python -m ray_jobs.build_alignment_data``,
all tasks, all three forms, local Ray with ``--num-cpus``) and the baseline
(``bench/tasks_pandas_baseline.py``). Rows/s = rows / stage seconds (recipe: the manifest's
``timings.total``, which includes Ray start-up of the tasks; baseline: its own timer) and
rows / wall seconds. Both must produce the same counts.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests" / "tasks"))

from memwatch import measure  # noqa: E402

from recexp.store import Store  # noqa: E402

OUT = ROOT / "bench" / "out"


def ensure_ingest(store: Store, run_id: str, data: str, max_users: int) -> None:
    """Commit the data set's ingest for ``run_id`` once (optionally cut to ``max_users`` users)."""
    if store.is_committed(run_id, "ingest"):
        return
    cmd = [sys.executable, "-m", "ray_jobs.ingest", "--config", str(ROOT / "configs/datasets/amazon-video-games.yaml"),
           f"data.path={data}", "ingest.k_core=0", f"store.root={store.root}", f"run_id={run_id}", "ray.num_cpus=2"]
    subprocess.run(cmd, check=True, cwd=ROOT)
    if max_users:
        cut_users(store, run_id, max_users)


def cut_users(store: Store, run_id: str, max_users: int) -> None:
    """Keep the first ``max_users`` users of a committed ingest (re-committed in place)."""
    import pyarrow.compute as pc

    import fakes

    ingest = store.committed(run_id, "ingest")
    sequences = ingest.read_table("sequences.parquet")
    items = ingest.read_table("items.parquet")
    sequences = sequences.filter(pc.less(sequences["user_id"], max_users))

    def write(staging):  # noqa: ANN001, ANN202
        staging.write_table("sequences.parquet", sequences)
        staging.write_table("items.parquet", items)

    fakes.commit_stage(store, run_id, "ingest", write)


def ensure_recommender(store: Store, run_id: str, fake: bool) -> None:
    if store.is_committed(run_id, "train-recommender"):
        return
    if not fake:
        raise SystemExit(f"no committed train-recommender in run {run_id} under {store.root}; use --fake-recommender")
    import fakes

    print(f"[bench] exporting a random-init SASRec for run {run_id} (not timed) ...", file=sys.stderr, flush=True)
    fakes.commit_fake_recommender(store, run_id)


def run_recipe(store: Store, run_id: str, num_cpus: int, repeat: int) -> dict:
    out_run = f"{run_id}-tasks-{repeat}"
    cmd = [sys.executable, "-m", "ray_jobs.build_alignment_data", f"store.root={store.root}", f"run_id={out_run}",
           f"inputs.ingest={run_id}", f"inputs.train-recommender={run_id}", "force=true", f"ray.num_cpus={num_cpus}"]
    m = measure(cmd)
    if m.returncode:
        raise SystemExit(f"recipe failed:\n{m.output[-3000:]}")
    manifest = store.manifest(out_run, "build-alignment-data")
    rows, stage_s = manifest["summary"]["rows"], manifest["timings"]["total"]
    counts = store.committed(out_run, "build-alignment-data").read_json("counts.json")
    return {"impl": "ray", "rows": rows, "stage_s": stage_s, "wall_s": round(m.wall_s, 2), "rows_per_s": round(rows / stage_s),
            "rows_per_wall_s": round(rows / m.wall_s), "peak_pss_mb": round(m.peak_pss_mb), "timings": manifest["timings"],
            "counts": counts}


def run_baseline(store: Store, run_id: str) -> dict:
    cmd = [sys.executable, str(ROOT / "bench" / "tasks_pandas_baseline.py"), "--store", store.root, "--run-id", run_id,
           "--out", str(OUT / f"tasks-pandas-{run_id}")]
    m = measure(cmd)
    if m.returncode:
        raise SystemExit(f"baseline failed:\n{m.output[-3000:]}")
    result = json.loads(m.output.strip().splitlines()[-1])
    return {"impl": "pandas", "rows": result["rows"], "stage_s": result["seconds"], "wall_s": round(m.wall_s, 2),
            "rows_per_s": round(result["rows"] / result["seconds"]), "rows_per_wall_s": round(result["rows"] / m.wall_s),
            "peak_pss_mb": round(m.peak_pss_mb), "counts": result["counts"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", default=str(OUT / "tasks-store"), help="store root holding the upstream run")
    parser.add_argument("--run-id", default="games", help="run with committed ingest + train-recommender")
    parser.add_argument("--fake-recommender", action="store_true", help="make missing upstream stages (random SASRec)")
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "amazon-video-games"))
    parser.add_argument("--max-users", type=int, default=0, help="with --fake-recommender: keep only the first N users")
    parser.add_argument("--num-cpus", type=int, default=2, help="CPUs of the recipe's local Ray")
    parser.add_argument("--only", choices=["ray", "pandas"], help="run one implementation only")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    store = Store(args.store)
    if args.fake_recommender:
        ensure_ingest(store, args.run_id, args.data, args.max_users)
    ensure_recommender(store, args.run_id, args.fake_recommender)
    results = []
    for repeat in range(args.repeats):
        if args.only != "pandas":
            results.append(run_recipe(store, args.run_id, args.num_cpus, repeat))
        if args.only != "ray":
            results.append(run_baseline(store, args.run_id))
    for result in results:
        print(json.dumps({k: v for k, v in result.items() if k != "counts"}), flush=True)
    if len({json.dumps(r["counts"], sort_keys=True) for r in results}) > 1:
        raise SystemExit("the implementations produced different counts")


if __name__ == "__main__":
    main()
