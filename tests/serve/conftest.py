"""Fixtures of the service tests: a committed tiny run and a running Serve app.

Every module that serves gets its own Ray cluster (``ray_cluster``) and shuts Serve down
before Ray goes (``start_app`` depends on ``ray_cluster``, so it is torn down first).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import serve_fakes
from serve_support import wait_ready

from recexp.config import RunConfig


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A local store with run ``run-a`` and adapters ``b`` and ``c`` (runs ``run-b``, ``run-c``)."""
    work = tmp_path_factory.mktemp("serve")
    serve_fakes.build_store(str(work / "store"), work, adapters={"b": 20, "c": 30})
    return str(work / "store")


@pytest.fixture(scope="module")
def start_app(ray_cluster: None) -> Iterator[Callable[[RunConfig], str]]:
    """``start(cfg) -> base URL``; Serve is shut down when the module ends."""
    from recexp.serve.app import start, stop

    def _start(cfg: RunConfig) -> str:
        url = start(cfg)
        wait_ready(url, cfg.serve.auth_token)
        return url

    try:
        yield _start
    finally:
        stop()
