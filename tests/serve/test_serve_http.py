"""The service over real HTTP on 127.0.0.1: every endpoint, the error paths, multiplexed
adapters and dynamic batching, against answers computed without Serve."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests
import serve_fakes
import torch
from serve_support import TOKEN, reference_chat, reference_explanations, serve_config
from ray import serve

from recexp.recommender import load
from recexp.serve.artifacts import encoder_url, load_catalog
from recexp.serve.deployments import Explainer

pytestmark = pytest.mark.timeout(600)
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PAIRS = [([1, 2, 3], 7), ([4, 5, 6, 7], 5), ([0, 8, 9], 1), ([12, 13], 19), ([15, 16, 17, 18], 3), ([5], 6)]


@pytest.fixture(scope="module")
def service(store_root, start_app):
    cfg = serve_config(store_root, [
        f"serve.auth_token={TOKEN}", "serve.adapters.b=run-b", "serve.adapters.c=run-c",
        "serve.max_adapters_per_replica=2", "serve.max_replicas=1", "serve.max_ongoing_requests=8",
        "serve.max_queued_requests=4",
    ])
    return start_app(cfg), cfg


def post(url: str, path: str, body, headers=AUTH) -> requests.Response:
    return requests.post(url + path, json=body, headers=headers, timeout=120)


def explain(url: str, history: list[int], item: int, adapter: str | None = None) -> dict:
    body = {"history": history, "item_id": item} | ({"adapter": adapter} if adapter else {})
    response = post(url, "/v1/explain", body)
    assert response.status_code == 200, response.text
    return response.json()


# ----------------------------------------------------------------------------- health, auth, docs


def test_health_probes_need_no_token(service) -> None:
    url, _ = service
    assert requests.get(f"{url}/healthz", timeout=10).json()["status"] == "ok"
    ready = requests.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200 and ready.json() == {"status": "ready", "run_id": "run-a"}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-token-000"}, {"Authorization": TOKEN}])
def test_every_other_route_needs_the_token(service, headers) -> None:
    url, _ = service
    response = post(url, "/v1/recommend", {"user_id": 0}, headers=headers)
    assert response.status_code == 401 and response.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(f"{url}/docs", headers=headers, timeout=10).status_code == 401


def test_openapi_docs(service) -> None:
    url, _ = service
    assert "swagger" in requests.get(f"{url}/docs", headers=AUTH, timeout=10).text.lower()
    paths = requests.get(f"{url}/openapi.json", headers=AUTH, timeout=10).json()["paths"]
    assert {"/v1/recommend", "/v1/explain", "/v1/chat/completions", "/healthz", "/readyz"} <= set(paths)


# ----------------------------------------------------------------------------- recommend


def expected_top(cfg, history: list[int], k: int) -> tuple[list[int], list[float]]:
    model = load(encoder_url(cfg))
    with torch.no_grad():
        scores = model.full_scores(torch.tensor([history[-model.max_len:]]))[0]
    scores[history] = float("-inf")
    top = torch.topk(scores, k)
    return top.indices.tolist(), top.values.tolist()


@pytest.mark.parametrize("body, history", [
    ({"user_id": 2, "k": 5}, serve_fakes.HISTORIES[2]),
    ({"history": [5, 3, 1], "k": 4}, [5, 3, 1]),
])
def test_recommend_matches_the_recommender(service, body, history) -> None:
    url, cfg = service
    response = post(url, "/v1/recommend", body)
    assert response.status_code == 200, response.text
    got = response.json()
    ids, scores = expected_top(cfg, history, body["k"])
    assert [i["item_id"] for i in got["items"]] == ids and got["run_id"] == "run-a"
    assert np.allclose([i["score"] for i in got["items"]], scores, atol=1e-5)
    titles = load_catalog(cfg).titles
    assert [i["title"] for i in got["items"]] == [titles[i] for i in ids]


# ----------------------------------------------------------------------------- explain


def test_explain_matches_the_model_loaded_alone(service) -> None:
    url, cfg = service
    got = [explain(url, h, i) for h, i in PAIRS[:3]]
    want = reference_explanations(cfg, "run-a", PAIRS[:3])
    assert [(g["answer"], g["explanation"]) for g in got] == want
    model = load(encoder_url(cfg))
    for (history, item), g in zip(PAIRS, got):
        with torch.no_grad():
            score = float(model.full_scores(torch.tensor([history]))[0, item])
        assert g["rec_score"] == pytest.approx(score, abs=1e-5) and 0.0 <= g["rec_percentile"] <= 1.0
        assert (g["model"], g["adapter"], g["run_id"], g["adapter_run_id"]) == ("recexp:default", "default", "run-a", "run-a")


def test_explain_by_user_id_uses_the_ingested_history(service) -> None:
    url, cfg = service
    response = post(url, "/v1/explain", {"user_id": 1, "item_id": 0})
    assert response.status_code == 200, response.text
    want = reference_explanations(cfg, "run-a", [(serve_fakes.HISTORIES[1], 0)])
    assert (response.json()["answer"], response.json()["explanation"]) == want[0]


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("path, body, message", [
    ("/v1/recommend", {"user_id": 99}, "unknown user_id 99"),
    ("/v1/recommend", {"history": [1, 50]}, "unknown history item 50"),
    ("/v1/explain", {"user_id": 0, "item_id": 999}, "unknown item_id 999"),
    ("/v1/explain", {"user_id": 0, "item_id": 1, "adapter": "nope"}, "unknown adapter 'nope'"),
    ("/v1/chat/completions", {"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, "unknown model"),
    ("/v1/chat/completions", {"model": "recexp:nope", "messages": [{"role": "user", "content": "hi"}]},
     "unknown adapter"),
])
def test_unknown_ids_are_404_with_a_clear_message(service, path, body, message) -> None:
    url, _ = service
    response = post(url, path, body)
    assert response.status_code == 404 and message in response.json()["detail"], response.text


@pytest.mark.parametrize("path, body, field", [
    ("/v1/recommend", {"user_id": "1"}, "body.user_id"),
    ("/v1/recommend", {"user_id": 1, "k": "5"}, "body.k"),
    ("/v1/recommend", {"user_id": 1, "k": 101}, "body.k"),
    ("/v1/recommend", {"user_id": 1, "bogus": 1}, "body.bogus"),
    ("/v1/recommend", {"user_id": 1, "history": [1]}, "exactly one of user_id and history"),
    ("/v1/recommend", {"history": [1] * 201}, "body.history"),
    ("/v1/explain", {"user_id": 1}, "body.item_id"),
    ("/v1/explain", {"user_id": 1, "item_id": 2, "adapter": "../x"}, "body.adapter"),
    ("/v1/chat/completions", {"model": "recexp", "messages": []}, "body.messages"),
    ("/v1/chat/completions", {"model": "recexp", "messages": [{"role": "root", "content": "x"}]}, "role"),
])
def test_bad_requests_are_422_naming_the_field(service, path, body, field) -> None:
    url, _ = service
    response = post(url, path, body)
    assert response.status_code == 422 and field in response.json()["detail"], response.text


def test_large_bodies_are_413(service) -> None:
    url, cfg = service
    body = {"user_id": 1, "pad": "x" * cfg.serve.max_body_bytes}
    assert post(url, "/v1/recommend", body).status_code == 413
    chunked = requests.post(f"{url}/v1/recommend", data=iter([b"{" + b" " * 70000, b"}"]), headers=AUTH, timeout=30)
    assert chunked.status_code == 413


# ----------------------------------------------------------------------------- OpenAI-compatible chat


def test_openai_client_chat_completions(service) -> None:
    openai = pytest.importorskip("openai")
    url, cfg = service
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=TOKEN, max_retries=0)
    messages = [{"role": "system", "content": "You are an assistant."},
                {"role": "user", "content": "Will the user like Mario Kart? Answer Yes or No."}]
    assert {m.id for m in client.models.list()} == {"recexp", "recexp:default", "recexp:b", "recexp:c"}
    for model, run_id in (("recexp:default", "run-a"), ("recexp", None)):
        reply = client.chat.completions.create(model=model, messages=messages, max_tokens=6, temperature=0)
        want = reference_chat(cfg, run_id, messages, 6)
        assert reply.choices[0].message.content == want and reply.model == model
        assert reply.usage.completion_tokens <= 6 and reply.usage.prompt_tokens > 0
        stream = client.chat.completions.create(model=model, messages=messages, max_tokens=6, stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == want
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{url}/v1", api_key="wrong-token-000", max_retries=0).chat.completions.create(
            model="recexp", messages=messages)


# ----------------------------------------------------------------------------- multiplexing, batching


def test_adapters_on_one_replica_match_each_loaded_alone(service) -> None:
    url, cfg = service
    pairs = PAIRS[:3]
    want = {name: reference_explanations(cfg, run, pairs) for name, run in
            (("default", "run-a"), ("b", "run-b"), ("c", "run-c"))}
    assert want["b"] != want["default"] and want["c"] != want["b"]  # the adapters do differ
    # Sequential, cycling through three adapters with room for two: every switch reloads (LRU).
    for name in ("b", "c", "default", "b", "c"):
        got = [explain(url, h, i, adapter=name) for h, i in pairs]
        assert [(g["answer"], g["explanation"]) for g in got] == want[name], name
        assert {g["adapter_run_id"] for g in got} == {"run-a" if name == "default" else f"run-{name}"}
    # Concurrent and interleaved.
    jobs = [(name, k) for k in range(len(pairs)) for name in ("default", "b")] * 2
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: explain(url, *pairs[job[1]], adapter=job[0]), jobs))
    for (name, k), got in zip(jobs, results):
        assert (got["answer"], got["explanation"]) == want[name][k]
    status = serve.status().applications["recexp"].deployments["Explainer"]
    assert status.replica_states.get("RUNNING") == 1


def test_dynamic_batching_gives_the_unbatched_answers(service) -> None:
    url, cfg = service
    handle = serve.get_deployment_handle(Explainer.name, app_name="recexp")
    before = handle.batch_sizes.remote().result()
    pairs = PAIRS + PAIRS[:2]  # 8: within max_ongoing_requests, so none waits in the queue
    with ThreadPoolExecutor(len(pairs)) as pool:
        results = list(pool.map(lambda p: explain(url, *p), pairs))
    want = reference_explanations(cfg, "run-a", PAIRS)
    assert [(r["answer"], r["explanation"]) for r in results] == want + want[:2]
    after = handle.batch_sizes.remote().result()
    grown = {size: after.get(size, 0) - before.get(size, 0) for size in after}
    assert max(size for size, n in grown.items() if n) > 1, grown  # requests were batched together


def test_overload_is_503_with_retry_after(service) -> None:
    url, _ = service
    with ThreadPoolExecutor(48) as pool:
        responses = list(pool.map(lambda _: post(url, "/v1/explain", {"user_id": 0, "item_id": 3}), range(48)))
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and 200 in codes and 503 in codes, codes
    rejected = next(r for r in responses if r.status_code == 503)
    assert rejected.headers["Retry-After"] == "1"
