"""A new run rolled out on a running application (``serve.run`` again): no request fails and the
new run answers afterwards."""

from __future__ import annotations

import time

import pytest
import requests
from serve_support import reference_explanations, serve_config
from load_loop import Load
from ray import serve

from recexp.serve.app import APP_NAME, application

pytestmark = pytest.mark.timeout(600)
INPUTS = ["inputs.ingest=run-a", "inputs.train-recommender=run-a", "inputs.build-alignment-data=run-a"]


def test_new_run_replaces_the_old_without_dropping_requests(store_root, start_app) -> None:
    url = start_app(serve_config(store_root, ["serve.max_replicas=1", "serve.max_queued_requests=-1"]))
    port = url.rsplit(":", 1)[1]
    new = serve_config(store_root, ["run_id=run-b", f"serve.port={port}", "serve.max_replicas=1",
                                    "serve.max_queued_requests=-1", *INPUTS])
    with Load(url, clients=3) as load:
        time.sleep(2)
        serve.run(application(new), name=APP_NAME, route_prefix="/")
        time.sleep(2)
    assert load.codes and load.failed == 0, sorted(set(load.codes))
    got = requests.post(f"{url}/v1/explain", json={"history": [1, 2, 3], "item_id": 7}, timeout=60).json()
    assert (got["run_id"], got["adapter_run_id"]) == ("run-b", "run-b")
    assert (got["answer"], got["explanation"]) == reference_explanations(new, "run-b", [([1, 2, 3], 7)])[0]
