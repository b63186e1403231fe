"""The service reads a run from object storage (the moto S3 server) exactly as from a directory."""

from __future__ import annotations

import pytest
import requests
import serve_fakes
from serve_support import reference_explanations, serve_config

pytestmark = [pytest.mark.s3, pytest.mark.timeout(600)]


def test_serves_a_run_stored_in_s3(s3_endpoint, tmp_path, start_app) -> None:
    root = "s3://recexp/serve-store"
    serve_fakes.build_store(root, tmp_path, endpoint_url=s3_endpoint)
    cfg = serve_config(root, [f"store.endpoint_url={s3_endpoint}"])
    url = start_app(cfg)
    reply = requests.post(f"{url}/v1/recommend", json={"user_id": 4, "k": 5}, timeout=60)
    assert reply.status_code == 200, reply.text
    assert reply.json()["run_id"] == "run-a" and len(reply.json()["items"]) == 5
    history = serve_fakes.HISTORIES[4]
    assert not {i["item_id"] for i in reply.json()["items"]} & set(history)
    explained = requests.post(f"{url}/v1/explain", json={"user_id": 4, "item_id": 0}, timeout=120)
    assert explained.status_code == 200, explained.text
    got = explained.json()
    assert (got["answer"], got["explanation"]) == reference_explanations(cfg, "run-a", [(history, 0)])[0]
    assert got["adapter_run_id"] == "run-a"
