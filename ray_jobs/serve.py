"""Recipe: serve — the online explanation service on Ray Serve, in the foreground.

    recexp serve --config configs/serve/local.yaml store.root=... run_id=... serve.port=8000 \
        [serve.auth_token=...]

setup:  check that the run's stages are committed (ingest, train-recommender,
        build-alignment-data, align; ``inputs.<stage>`` may point to other runs); start Ray.
run:    deploy ingress + Recommender + Explainer (``recexp.serve.app``) on ``serve.host``:``serve.port``
        and wait; Ctrl-C (or SIGTERM) shuts Serve down cleanly.
commit: nothing: a service publishes no artifacts. Deploying another run id on a running
        cluster (``serve run`` / ``serve deploy``) rolls it out through ``user_config``.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Sequence
from types import FrameType

from recexp.cli import run_main
from recexp.config import RunConfig
from recexp.errors import ConfigError
from recexp.runner import init_ray, log
from recexp.serve.artifacts import stage_of

STAGE = "serve"
NEEDED = ("ingest", "train-recommender", "build-alignment-data", "align")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_run(cfg: RunConfig) -> None:
    """Every stage the service reads must be committed (one clear error otherwise)."""
    if cfg.run_id is None:
        raise ConfigError("serve needs run_id=<a run whose align stage is committed>")
    for stage in NEEDED:
        stage_of(cfg, stage)
    for name, run_id in cfg.serve.adapters.items():
        stage_of(cfg, "align", run_id)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve_forever(cfg: RunConfig) -> None:
    """Deploy and block until interrupted; Serve is shut down on the way out."""
    from recexp.serve.app import start, stop

    check_run(cfg)
    if cfg.serve.host not in LOOPBACK:
        log(f"warning: binding {cfg.serve.host}: the service is reachable from the network")
    if cfg.serve.auth_token is None and cfg.serve.host not in LOOPBACK:
        log("warning: no serve.auth_token: anyone who reaches the port can use the service")
    init_ray(cfg.ray)
    # Explicit handlers: a process started in the background inherits SIGINT as ignored.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        url = start(cfg)
        log(f"serving run {cfg.run_id} at {url} (docs: {url}/docs); Ctrl-C stops")
        while True:
            # Short naps: Ray's threads may take the SIGINT, and Python then only raises
            # KeyboardInterrupt when the main thread next runs (a 1-hour sleep would hide it).
            time.sleep(0.5)
    except KeyboardInterrupt:
        log("interrupted: shutting Serve down")
    finally:
        stop()


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(STAGE, serve_forever, argv)


if __name__ == "__main__":
    sys.exit(main())
