"""Run a command and measure its wall time and the peak memory of its whole process tree.

Ray's driver starts the GCS, the raylet and the workers as descendants, so the tree is
"all Ray processes together". Memory is the proportional set size (PSS): shared pages (the
object store, shared libraries) are split between the processes that map them instead of
being counted once per process, so the sum is the tree's real footprint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass

import psutil


@dataclass
class Measured:
    returncode: int
    wall_s: float
    peak_pss_mb: float
    output: str


def tree_pss(root: psutil.Process) -> int:
    """Bytes of PSS summed over ``root`` and its descendants (processes that vanish are skipped)."""
    total = 0
    try:
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    for proc in procs:
        try:
            total += proc.memory_full_info().pss
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return total


def _set_priority(pid: int) -> None:
    """``RECEXP_BENCH_PRIORITY=-20``: give the measured process tree (its own session, hence its
    own scheduler autogroup on Linux) that nice value, to shield it from other jobs on a
    shared machine. Needs root; ignored where autogroups do not exist."""
    value = os.environ.get("RECEXP_BENCH_PRIORITY")
    if value:
        try:
            with open(f"/proc/{pid}/autogroup", "w") as f:
                f.write(value)
        except OSError as exc:
            print(f"[memwatch] cannot set the autogroup priority: {exc}", flush=True)


def measure(cmd: list[str], interval: float = 0.5, env: dict[str, str] | None = None) -> Measured:
    """Run ``cmd`` to completion, sampling the tree's PSS every ``interval`` seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    _set_priority(proc.pid)
    peak = 0
    done = threading.Event()
    chunks: list[bytes] = []
    reader = threading.Thread(target=lambda: (chunks.append(proc.stdout.read()), done.set()), daemon=True)
    reader.start()
    root = psutil.Process(proc.pid)
    while proc.poll() is None:
        peak = max(peak, tree_pss(root))
        time.sleep(interval)
    wall = time.perf_counter() - start
    done.wait(10)
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # leftovers of a local Ray, if any
    except ProcessLookupError:
        pass
    return Measured(proc.returncode, wall, peak / 2**20, b"".join(chunks).decode(errors="replace"))
