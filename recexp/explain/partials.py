"""Finished partitions of an ``explain`` run that survive a killed run.

The runner's staging directory is wiped by the next attempt, so the explanation partitions
are written elsewhere first: ``runs/<run_id>/.partials/explain/<plan>/part-<p>.parquet``,
where ``plan`` hashes everything that decides a partition's rows (:func:`plan_id`). A
re-run with the same plan finds the finished partitions and does only the missing ones;
a different request set or different settings get a fresh plan directory.

Each file is written under a temporary name and then moved to its final name, so a
partition file exists only complete; writing the same partition twice (a retried task)
replaces it, never duplicates it. After the stage has committed, :meth:`Partials.clear`
removes the directory (leftovers of a crash in between are harmless: a committed stage is
never re-run without ``force``).
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

from recexp.store import StageDir, Store

PART = re.compile(r"^part-(\d{5})\.parquet$")


def plan_id(requests: pa.Table, settings: Mapping[str, Any]) -> str:
    """16 hex digits over the request keys and positions and the JSON of ``settings``."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for name in ("user_id", "item_id", "position"):
        digest.update(np.ascontiguousarray(requests[name].to_numpy()).tobytes())
    return digest.hexdigest()[:16]


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


class Partials:
    """The partition files of one plan (local or object storage)."""

    def __init__(self, directory: StageDir) -> None:
        self.dir = directory

    @classmethod
    def of(cls, store: Store, run_id: str, stage: str, plan: str) -> Partials:
        """The plan's directory under ``runs/<run_id>/.partials/<stage>/``."""
        return cls(StageDir(store.fs, f"{store.base}/runs/{run_id}/.partials/{stage}/{plan}", store.prefix))

    @classmethod
    def root(cls, store: Store, run_id: str, stage: str) -> Partials:
        """Every plan of ``stage`` in ``run_id`` (for :meth:`clear`)."""
        return cls(StageDir(store.fs, f"{store.base}/runs/{run_id}/.partials/{stage}", store.prefix))

    def done(self) -> list[int]:
        """Indices of the partitions whose file exists, sorted."""
        names = [rel.rsplit("/", 1)[-1] for rel in self.dir.files()]
        return sorted(int(m.group(1)) for m in map(PART.match, names) if m)

    def write(self, index: int, table: pa.Table) -> None:
        """Write partition ``index`` atomically (temporary name, then move)."""
        tmp = f"{part_name(index)}.tmp-{secrets.token_hex(4)}"
        self.dir.write_table(tmp, table)
        self.dir.fs.mv(self.dir.child(tmp), self.dir.child(part_name(index)))

    def read(self, index: int) -> pa.Table:
        return self.dir.read_table(part_name(index))

    def remove(self, index: int) -> None:
        if self.dir.exists(part_name(index)):
            self.dir.fs.rm(self.dir.child(part_name(index)))

    def copy_to(self, index: int, target: StageDir, rel: str) -> None:
        """Copy partition ``index`` to ``rel`` under ``target`` (server-side on object storage)."""
        target.fs.makedirs(target.child(rel).rsplit("/", 1)[0], exist_ok=True)
        self.dir.fs.copy(self.dir.child(part_name(index)), target.child(rel))

    def clear(self) -> None:
        """Remove the directory and everything below it."""
        if self.dir.fs.exists(self.dir.path):
            self.dir.fs.rm(self.dir.path, recursive=True)
