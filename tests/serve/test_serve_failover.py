"""A replica killed under load: at most 1% of requests fail and the deployment recovers."""

from __future__ import annotations

import time

import pytest
import ray
from serve_support import serve_config, wait_ready
from load_loop import Load
from ray import serve

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]
REQUESTS = 300


def explainer_replicas() -> list[str]:
    names = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in names if a["namespace"] == "serve" and "#Explainer#" in a["name"]]


def test_killed_replica_loses_at_most_one_percent(store_root, start_app) -> None:
    cfg = serve_config(store_root, ["serve.min_replicas=2", "serve.max_replicas=2", "serve.max_queued_requests=-1"])
    url = start_app(cfg)
    victims = explainer_replicas()
    assert len(victims) == 2, victims
    with Load(url, clients=4, limit=REQUESTS) as load:
        while len(load.codes) < REQUESTS // 5:
            time.sleep(0.05)
        ray.kill(ray.get_actor(victims[0], namespace="serve"), no_restart=True)
        while len(load.codes) < REQUESTS:
            time.sleep(0.1)
    assert len(load.codes) == REQUESTS
    assert load.failed <= REQUESTS // 100, sorted(set(load.codes))  # <= 1%
    deadline = time.time() + 300
    while time.time() < deadline:
        status = serve.status().applications["recexp"].deployments["Explainer"]
        if status.replica_states.get("RUNNING", 0) == 2 and set(explainer_replicas()) - set(victims):
            break
        time.sleep(0.5)
    assert status.replica_states.get("RUNNING", 0) == 2 and victims[0] not in explainer_replicas()
    wait_ready(url)
