"""``recexp serve`` in the foreground: serves over HTTP, Ctrl-C shuts it down cleanly."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
from serve_support import TEST_CONFIG, free_port, wait_ready

pytestmark = pytest.mark.timeout(900)
ROOT = Path(__file__).resolve().parents[2]


def recexp_serve(*args: str) -> list[str]:
    return [sys.executable, "-m", "ray_jobs.serve", "--config", str(TEST_CONFIG), *args]


def test_unknown_run_is_one_clear_error(tmp_path) -> None:
    done = subprocess.run(recexp_serve(f"store.root={tmp_path}", "run_id=missing"), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "error: stage 'ingest' of run 'missing' is not committed" in done.stderr


def wait_for_line(lines: list[str], text: str, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline and not any(text in line for line in lines):
        time.sleep(0.2)


def test_serves_until_interrupted(store_root) -> None:
    port = free_port()
    args = [f"store.root={store_root}", "run_id=run-a", f"serve.port={port}", "tasks.max_hist=2",
            "ray.num_cpus=2", "serve.auth_token=cli-token-123"]
    proc = subprocess.Popen(recexp_serve(*args), cwd=ROOT, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, timeout=400)
        reply = requests.post(f"{url}/v1/recommend", json={"user_id": 0, "k": 3},
                              headers={"Authorization": "Bearer cli-token-123"}, timeout=30)
        assert reply.status_code == 200 and len(reply.json()["items"]) == 3
        wait_for_line(lines, "[recexp] serving run run-a", timeout=120)  # serve.run has returned
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            pytest.fail("no exit 120 s after SIGINT; its last lines:\n" + "".join(lines[-40:]))
        reader.join(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    ours = [line.strip() for line in lines if line.startswith("[recexp]")]
    assert proc.returncode == 0, "".join(lines[-50:])
    assert f"[recexp] serving run run-a at {url} (docs: {url}/docs); Ctrl-C stops" in ours, ours
    assert "[recexp] interrupted: shutting Serve down" in ours, ours
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{url}/healthz", timeout=5)
