"""Autoscaling: the Explainer goes from 1 replica up under sustained load and back down after
it stops (``configs/serve/test.yaml``: 1 s up, 3 s down), observed through ``serve.status()``."""

from __future__ import annotations

import time

import pytest
from serve_support import serve_config
from load_loop import Load
from ray import serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
STARTUP_S = 300  # a new replica loads its model; on a busy 2-core machine that takes minutes


def running_replicas() -> int:
    deployment = serve.status().applications["recexp"].deployments["Explainer"]
    return deployment.replica_states.get("RUNNING", 0)


def wait_for(condition, timeout: float) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.5)
    return False


def test_explainer_scales_up_under_load_and_back_down(store_root, start_app) -> None:
    cfg = serve_config(store_root, ["serve.min_replicas=1", "serve.max_replicas=2", "serve.max_queued_requests=-1"])
    url = start_app(cfg)
    assert running_replicas() == 1
    with Load(url, clients=6) as load:
        scaled_up = wait_for(lambda: running_replicas() == 2, timeout=STARTUP_S)
    assert scaled_up, "no second replica under sustained load"
    assert load.codes and load.failed == 0
    assert wait_for(lambda: running_replicas() == 1, timeout=STARTUP_S), "did not scale back down"
