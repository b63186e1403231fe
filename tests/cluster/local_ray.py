"""A real two-node Ray cluster on 127.0.0.1, started with the venv's ``ray start`` and stopped
by process id: other Ray clusters on this machine (other users' jobs) are never touched, so
``ray stop`` (which stops every Ray process of the machine) is not used.

Each node gets its own ports (all chosen free), its own CPU count, a custom resource naming it
and its own short ``--temp-dir`` under one root (Unix socket paths must stay under ~107 bytes).
Ray 2.60 turns token authentication on for new clusters: the cluster gets its own token file in
that temp dir (``RAY_AUTH_MODE=token``, ``RAY_AUTH_TOKEN_PATH``), nothing is read from or
written to ``~/.ray``, and clients send the token as a bearer header.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

RAY = str(Path(sys.executable).with_name("ray"))
HEAD_PORTS = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
              "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
              "metrics-export-port")
NODE_PORTS = HEAD_PORTS[3:]
OBJECT_STORE_BYTES = 150 * 1024**2


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (all sockets held open until every port is chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


@dataclass
class LocalCluster:
    """Handles of a running local cluster: addresses, the ``ray start`` processes, their logs."""

    temp_dir: Path
    env: dict[str, str]
    """Environment of every Ray process (and so of jobs): the caller's plus the token settings."""
    token: str = field(default_factory=lambda: secrets.token_hex(32))
    gcs_address: str = ""
    dashboard_url: str = ""
    procs: list[subprocess.Popen] = field(default_factory=list)
    nodes: int = 0
    """Nodes started and alive."""
    attempts: int = 0
    """``ray start`` commands run (each names its temp dir and log)."""

    def __post_init__(self) -> None:
        token_file = self.temp_dir / "auth_token"  # the root: shared by the nodes and the clients
        token_file.write_text(self.token)
        token_file.chmod(0o600)
        # A loaded 2-core machine can take more than Ray's default 60 s to start the dashboard.
        self.env = {"RAY_DASHBOARD_STARTUP_TIMEOUT_S": "600", **self.env,
                    "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}
        self.env.pop("RAY_AUTH_TOKEN", None)

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start_node(self, head: bool, num_cpus: int, resources: dict[str, float]) -> tuple[subprocess.Popen, Path]:
        """``ray start --block`` one node in its own session (so it never gets our terminal's signals)."""
        names = HEAD_PORTS if head else NODE_PORTS
        ports = dict(zip(names, free_ports(len(names))))
        # Each node gets its own temp dir: nodes on one host sharing one would share the session's
        # runtime_resources/, and one node's cleanup would delete a working_dir the other still runs in.
        self.attempts += 1
        node_dir = self.temp_dir / f"node{self.attempts}"
        args = [RAY, "start", "--block", "--node-ip-address=127.0.0.1", f"--num-cpus={num_cpus}",
                f"--resources={json.dumps(resources)}", f"--object-store-memory={OBJECT_STORE_BYTES}",
                f"--temp-dir={node_dir}", "--disable-usage-stats"]
        args += [f"--{name}={port}" for name, port in ports.items()]
        if head:
            args += ["--head", "--include-dashboard=true", "--dashboard-host=127.0.0.1"]
            self.gcs_address = f"127.0.0.1:{ports['port']}"
            self.dashboard_url = f"http://127.0.0.1:{ports['dashboard-port']}"
        else:
            args += [f"--address={self.gcs_address}"]
        with open(self.temp_dir / f"ray-start-{self.attempts}.log", "wb") as log:  # the child keeps its own copy
            proc = subprocess.Popen(args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc, node_dir

    def add_node(self, head: bool, num_cpus: int, resources: dict[str, float], attempts: int = 3) -> None:
        """Start a node and wait until it is alive. Ray gives a new raylet 30 s to register, which a
        loaded machine can miss: such a start is cleaned up and tried again (fresh ports and dir)."""
        for attempt in range(attempts):
            proc, node_dir = self.start_node(head, num_cpus, resources)
            try:
                self.wait_nodes(self.nodes + 1, proc)
                self.nodes += 1
                return
            except StartupError:
                if attempt == attempts - 1:
                    raise
                self.procs.remove(proc)
                _terminate(_tree([proc]) | _by_temp_dir(node_dir))

    def logs(self) -> str:
        """Tails of the ``ray start`` outputs and of Ray's record of subprocesses that died (for failures)."""
        files = sorted(self.temp_dir.glob("ray-start-*.log")) + sorted(self.temp_dir.glob("node*/session_*/logs/ray_process_exit.log"))
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in files)

    def get(self, path: str) -> dict:
        """GET ``path`` from the dashboard's REST API (with the cluster's token) as JSON."""
        request = urllib.request.Request(self.dashboard_url + path, headers=self.headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def alive_nodes(self) -> list[dict]:
        """The state API's view of the alive nodes (``node_id``, ``resources_total``, ...)."""
        rows = self.get("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return [row for row in rows if row["state"] == "ALIVE"]

    def wait_nodes(self, n: int, proc: subprocess.Popen, timeout: float = 600.0) -> list[dict]:
        """Wait until ``n`` nodes are alive; :class:`StartupError` if ``proc`` (a ``ray start``) exits first."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if proc.poll() is not None:
                raise StartupError(f"ray start exited early:\n{self.logs()}")
            with contextlib.suppress(OSError, KeyError, ValueError):  # the dashboard is not up yet
                nodes = self.alive_nodes()
                if len(nodes) >= n:
                    return nodes
            time.sleep(1.0)
        raise RuntimeError(f"{n} Ray nodes not alive after {timeout}s:\n{self.logs()}")

    def stop(self) -> None:
        """Terminate every process these ``ray start`` commands started (found by ancestry and by
        our temp dir in their command line), then remove the temp dir."""
        _terminate(_tree(self.procs) | _by_temp_dir(self.temp_dir))
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class StartupError(RuntimeError):
    """A ``ray start`` exited before its node was up."""


def _tree(procs: list[subprocess.Popen]) -> set[psutil.Process]:
    """The running processes among ``procs`` and all their descendants."""
    found = set()
    for p in (p for p in procs if p.poll() is None):  # an exited one's pid may belong to someone else now
        with contextlib.suppress(psutil.Error):
            root = psutil.Process(p.pid)
            found |= {root, *root.children(recursive=True)}
    return found


def _terminate(procs: set[psutil.Process]) -> None:
    """SIGTERM, then SIGKILL what is left after 10 s."""
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(list(procs), timeout=10)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=10)


def _by_temp_dir(temp_dir: Path) -> set[psutil.Process]:
    """Processes naming our temp dir in their command line or holding a file open in it: Ray
    daemons and agents (which rename themselves, e.g. ``ray::DashboardAgent``) orphaned by a dead parent."""
    found, mark = set(), str(temp_dir)
    for proc in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if any(mark in arg for arg in proc.info["cmdline"] or ()) or any(mark in f.path for f in proc.open_files()):
                found.add(proc)
    return found - {psutil.Process()}


@contextlib.contextmanager
def local_cluster(nodes: list[tuple[int, dict[str, float]]], env: dict[str, str]) -> Iterator[LocalCluster]:
    """A head plus ``len(nodes) - 1`` worker nodes, ``(num_cpus, resources)`` each; stopped on exit."""
    cluster = LocalCluster(Path(tempfile.mkdtemp(prefix="rx-", dir="/tmp")), env)
    try:
        for i, (cpus, resources) in enumerate(nodes):
            cluster.add_node(head=i == 0, num_cpus=cpus, resources=resources)
        yield cluster
    finally:
        cluster.stop()
