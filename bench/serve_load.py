"""Bounded request loop against a running recexp service: RPS and p50/p95/p99 latency.

    python bench/serve_load.py --url http://127.0.0.1:8000 --path /v1/explain \
        --concurrency 16 --requests 200 [--token T] [--users 6 --items 20]

``concurrency`` clients (asyncio + aiohttp, one connection each) send ``requests`` requests in
all, each as soon as its previous answer came back (closed loop). Bodies cycle through
``user_id`` in ``[0, users)`` and ``item_id`` in ``[0, items)`` so that prompts differ.
Prints one JSON line: counts, status codes, seconds, requests/s and latency percentiles (ms)
of the successful requests. Only loopback URLs are accepted (a load tool, not an attack tool).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from typing import Any
from urllib.parse import urlparse

import aiohttp
import numpy as np

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def body_for(path: str, n: int, users: int, items: int) -> dict[str, Any]:
    """The ``n``-th request body of ``path``."""
    user, item = n % users, (7 * n + 3) % items
    if path == "/v1/recommend":
        return {"user_id": user, "k": 10}
    if path == "/v1/chat/completions":
        return {"model": "recexp:default", "messages": [{"role": "user", "content": f"Tell me about item {item}."}]}
    return {"user_id": user, "item_id": item}


async def _client(
    session: aiohttp.ClientSession, url: str, path: str, jobs: asyncio.Queue, out: list, users: int, items: int
) -> None:
    while True:
        try:
            n = jobs.get_nowait()
        except asyncio.QueueEmpty:
            return
        start = time.perf_counter()
        try:
            async with session.post(url + path, json=body_for(path, n, users, items)) as response:
                await response.read()
                status = response.status
        except aiohttp.ClientError:
            status = -1
        out.append((status, time.perf_counter() - start))


async def run_load(
    url: str, path: str = "/v1/explain", concurrency: int = 16, requests: int = 200, token: str | None = None,
    users: int = 6, items: int = 20, timeout_s: float = 300.0,
) -> dict[str, Any]:
    """Send ``requests`` requests from ``concurrency`` closed-loop clients; returns the summary."""
    host = urlparse(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"refusing to load {host}: serve_load only targets 127.0.0.1")
    jobs: asyncio.Queue = asyncio.Queue()
    for n in range(requests):
        jobs.put_nowait(n)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    out: list[tuple[int, float]] = []
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(headers=headers, timeout=timeout, connector=connector) as session:
        start = time.perf_counter()
        await asyncio.gather(*(_client(session, url, path, jobs, out, users, items) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return summarize(out, seconds, concurrency)


def summarize(results: list[tuple[int, float]], seconds: float, concurrency: int) -> dict[str, Any]:
    """Counts, throughput of successful requests and their latency percentiles."""
    ok = np.array([latency for status, latency in results if status == 200]) * 1000.0
    pct = {f"p{q}_ms": round(float(np.percentile(ok, q)), 1) if len(ok) else None for q in (50, 95, 99)}
    return {
        "requests": len(results), "ok": int(len(ok)), "status": dict(Counter(s for s, _ in results)),
        "concurrency": concurrency, "seconds": round(seconds, 3), "rps": round(len(ok) / seconds, 2), **pct,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--path", default="/v1/explain", choices=["/v1/explain", "/v1/recommend", "/v1/chat/completions"])
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--token", default=None)
    parser.add_argument("--users", type=int, default=6, help="user ids cycle through [0, users)")
    parser.add_argument("--items", type=int, default=20, help="item ids cycle through [0, items)")
    args = parser.parse_args()
    summary = asyncio.run(run_load(args.url, args.path, args.concurrency, args.requests, args.token,
                                   args.users, args.items))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
