"""Shared fixtures: a real S3-protocol server on 127.0.0.1, one Ray cluster per module, real data.

The S3 server is moto in server mode, in its own process: Ray workers are separate processes
and reach it over HTTP exactly as they would reach S3. Dummy credentials are set for the whole
session before any Ray process starts, so workers inherit them.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` and ``gpu`` tests are opt-in (RECEXP_SLOW=1 / RECEXP_GPU=1) and reported as skipped."""
    for item in items:
        if "slow" in item.keywords and not os.environ.get("RECEXP_SLOW"):
            item.add_marker(pytest.mark.skip(reason="slow: set RECEXP_SLOW=1 (make test-slow)"))
        if "gpu" in item.keywords and not os.environ.get("RECEXP_GPU"):
            item.add_marker(pytest.mark.skip(reason="gpu: set RECEXP_GPU=1 on a CUDA machine"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>`` of a moto S3 server with an empty bucket ``recexp``."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        _wait_for_port(port, proc)
        import boto3

        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="recexp")
        yield endpoint
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("moto server exited at start-up")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"moto server did not listen on port {port}")


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster (2 CPUs) per test module."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
