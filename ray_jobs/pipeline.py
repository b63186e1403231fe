"""Recipe: pipeline — every stage in order under one run id, skipping committed ones.

    recexp pipeline --config configs/demo.yaml [run_id=...]
    ray job submit --working-dir . -- python -m ray_jobs.pipeline --config configs/demo.yaml

Re-submitting a failed run with the same ``run_id`` continues from the first stage that is
not committed yet.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Sequence

from recexp.cli import module_name, run_main
from recexp.config import RunConfig
from recexp.runner import log, run_stage
from recexp.store import Store, new_run_id

STAGE = "pipeline"


def run_pipeline(cfg: RunConfig) -> dict[str, dict]:
    """Run ``cfg.pipeline.stages``; returns each stage's summary. Stops at a stage not built yet."""
    if cfg.run_id is None:
        cfg.run_id = new_run_id()
        log(f"run_id={cfg.run_id} (generated; re-submit with run_id={cfg.run_id} to resume)")
    summaries = {}
    for stage in cfg.pipeline.stages:
        try:
            module = importlib.import_module(module_name(stage))
        except ModuleNotFoundError as exc:
            if exc.name != module_name(stage):
                raise
            log(f"{stage}: not built yet in this version of recexp; the pipeline stops here")
            break
        execute = getattr(module, "execute", None)  # recipes with work after their commit (explain's cleanup)
        summaries[stage] = (execute(cfg) if execute else run_stage(stage, cfg, module.run))["summary"]
    print_summary(cfg, summaries)
    print_results(cfg)
    return summaries


def print_summary(cfg: RunConfig, summaries: dict[str, dict]) -> None:
    store = Store.from_config(cfg.store)
    print(f"\nrecexp pipeline run {cfg.run_id} ({store.root}/runs/{cfg.run_id})")
    for stage, summary in summaries.items():
        print(f"  {stage:<22}" + ", ".join(f"{k}={_fmt(v)}" for k, v in summary.items()))


def print_results(cfg: RunConfig, samples: int = 3) -> None:
    """The evaluation table and the first ``samples`` explanations (with item titles), for the
    stages of this run that are committed."""
    store, run_id = Store.from_config(cfg.store), str(cfg.run_id)
    if store.is_committed(run_id, "evaluate"):
        print("\n" + store.committed(run_id, "evaluate").open("table.md", "r").read().strip())
    if not store.is_committed(run_id, "explain"):
        return
    rows = store.committed(run_id, "explain").read_table("explanations").sort_by([("user_id", "ascending"),
                                                                                 ("rank", "ascending")])
    catalog = store.committed(cfg.inputs.get("build-alignment-data", run_id), "build-alignment-data")
    titles = dict(zip(*catalog.read_table("catalog.parquet", columns=["item_id", "title"]).to_pydict().values()))
    print(f"\nexplanations ({min(samples, rows.num_rows)} of {rows.num_rows}):")
    for row in rows.slice(0, samples).to_pylist():
        print(f"  user {row['user_id']}, #{row['rank']} {titles.get(row['item_id'], row['item_id'])!r}: "
              f"{row['answer']} - {row['explanation'].strip()!r}")


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(STAGE, run_pipeline, argv)


if __name__ == "__main__":
    sys.exit(main())
