"""The lifecycle every recipe shares: resolve the run, skip if committed, stage, commit.

A recipe (``ray_jobs/<stage>.py``) supplies one function ``run(ctx) -> summary``; this module
gives it a :class:`StageContext` (config, store, staging directory, upstream inputs, timers)
and owns everything around it, so that no recipe can forget to commit atomically or to
record its inputs.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from recexp import __version__
from recexp.config import RunConfig, to_dict
from recexp.store import StageDir, Store, new_run_id


@dataclass
class StageContext:
    """What a recipe's ``run`` receives."""

    cfg: RunConfig
    stage: str
    run_id: str
    store: Store
    out: StageDir
    """Staging directory: write every output here; it is published only on success."""
    upstream: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def input(self, stage: str) -> StageDir:
        """The committed output of an upstream ``stage`` (this run, or ``inputs.<stage>``)."""
        run_id = self.cfg.inputs.get(stage, self.run_id)
        directory = self.store.committed(run_id, stage)
        self.upstream[stage] = run_id
        return directory

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Time a named phase (recorded in the manifest)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)


def log(message: str) -> None:
    """Progress lines go to stderr so that stdout stays machine-readable."""
    print(f"[recexp] {message}", file=sys.stderr, flush=True)


def run_stage(stage: str, cfg: RunConfig, run: Callable[[StageContext], dict[str, Any]]) -> dict[str, Any]:
    """Run ``run`` for ``stage`` and commit its output; returns the stage's manifest.

    A stage already committed for this run id is skipped (its manifest is returned) unless
    ``force=true``. On any exception the staging directory is dropped and nothing is published.
    """
    run_id = cfg.run_id or new_run_id()
    if cfg.run_id is None:
        cfg.run_id = run_id
        log(f"run_id={run_id} (generated; pass run_id={run_id} to continue this run)")
    store = Store.from_config(cfg.store)
    existing = store.manifest(run_id, stage)
    if existing is not None and not cfg.force:
        log(f"{stage}: already committed at {store.stage_dir(run_id, stage).url()}; skipping (force=true re-runs it)")
        return existing
    ctx = StageContext(cfg, stage, run_id, store, store.begin(run_id, stage))
    started = time.time()
    try:
        summary = run(ctx)
    except BaseException:
        store.abort(ctx.out)
        raise
    ctx.timings["total"] = round(time.time() - started, 3)
    info = {
        "config": to_dict(cfg),
        "recexp_version": __version__,
        "upstream": ctx.upstream,
        "timings": ctx.timings,
        "started_at": started,
        "summary": summary,
    }
    manifest = store.commit(ctx.out, run_id, stage, info)
    log(f"{stage}: committed {len(manifest['files'])} files to {store.stage_dir(run_id, stage).url()}")
    return manifest


def init_ray(cfg: Any) -> None:
    """Connect to ``ray.address`` or start a local Ray (no-op if Ray is already up).

    ``cfg`` is a :class:`recexp.config.RayConfig`.
    """
    import ray

    if ray.is_initialized():
        return
    if cfg.address or os.environ.get("RAY_ADDRESS"):
        # A Ray job's driver (RAY_ADDRESS set by the job supervisor) joins its cluster, whose
        # resources are fixed: ray.num_cpus would make ray.init fail there, so it is ignored.
        ray.init(address=cfg.address)
    else:
        ray.init(num_cpus=cfg.num_cpus, include_dashboard=False)
    if not sys.stderr.isatty():
        ray.data.DataContext.get_current().enable_progress_bars = False
