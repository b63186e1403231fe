"""Artifact store: one root URI (local directory or any fsspec URL), atomic stage commits.

Layout under the root::

    runs/<run_id>/<stage>/manifest.json     the commit marker, written last
    runs/<run_id>/<stage>/...               the stage's files
    runs/<run_id>/.staging/<stage>/<attempt>/  where an attempt writes before it commits

A stage writes everything under its staging prefix, then :meth:`Store.commit` publishes it.
Locally that is a directory rename (atomic). On object storage, where prefixes cannot be
renamed, the files are copied server-side and ``manifest.json`` is written last: a stage is
committed exactly when its manifest exists, and readers only ever open committed stages, so a
crash at any point leaves nothing visible. The next attempt removes what a dead one left.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import IO, Any

import fsspec
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from recexp.errors import ConfigError, StoreError

MANIFEST = "manifest.json"
_HASH_CHUNK = 1 << 20


def new_run_id() -> str:
    """A sortable, unique run id such as ``20261123-230501-a1b2c3``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def storage_options(root: str, endpoint_url: str | None) -> dict[str, Any]:
    """fsspec options for ``root``; credentials come from the standard AWS variables."""
    if root.startswith(("s3://", "s3a://")) and endpoint_url:
        return {"client_kwargs": {"endpoint_url": endpoint_url}}
    return {}


def open_fs(url: str, endpoint_url: str | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """``(filesystem, path without protocol)`` for any URL or local path."""
    if "://" not in url:
        url = os.path.abspath(url)
    return fsspec.core.url_to_fs(url, **storage_options(url, endpoint_url))


def read_yaml(path: str, endpoint_url: str | None = None, what: str = "") -> Any:
    """The parsed YAML document at ``path`` (local or any fsspec URL).

    A missing file or invalid YAML is one :class:`ConfigError` naming ``what`` (the config
    field that names the file, e.g. ``tasks.templates``) and ``path``."""
    label = f"{what}: " if what else ""
    fs, fs_path = open_fs(path, endpoint_url)
    try:
        with fs.open(fs_path, "r", encoding="utf-8") as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"{label}file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{label}{path}: invalid YAML: {exc}") from None


@dataclass
class StageDir:
    """A directory of one stage, staging or committed, with typed read/write helpers."""

    fs: fsspec.AbstractFileSystem
    path: str
    """Path on ``fs`` (no protocol)."""
    protocol_prefix: str
    """``s3://`` for object storage, empty for local paths."""

    def child(self, rel: str) -> str:
        return f"{self.path}/{rel}" if rel else self.path

    def url(self, rel: str = "") -> str:
        """Full URL of ``rel`` (for libraries that take URLs)."""
        return self.protocol_prefix + self.child(rel)

    def open(self, rel: str, mode: str = "rb") -> IO:
        if "w" in mode:
            self.fs.makedirs(os.path.dirname(self.child(rel)) or self.path, exist_ok=True)
        return self.fs.open(self.child(rel), mode)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.child(rel))

    def write_json(self, rel: str, obj: Any) -> None:
        with self.open(rel, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)

    def read_json(self, rel: str) -> Any:
        with self.open(rel, "r") as f:
            return json.load(f)

    def write_table(self, rel: str, table: pa.Table, **kwargs: Any) -> None:
        with self.open(rel, "wb") as f:
            pq.write_table(table, f, **kwargs)

    def read_table(self, rel: str, columns: list[str] | None = None) -> pa.Table:
        """Read one Parquet file or a directory of them."""
        return pq.read_table(self.child(rel), columns=columns, filesystem=self.arrow_fs())

    def arrow_fs(self) -> pafs.FileSystem:
        """A pyarrow filesystem over ``fs`` (picklable, so Ray workers can write through it)."""
        if isinstance(self.fs, fsspec.implementations.local.LocalFileSystem):
            return pafs.LocalFileSystem()
        return pafs.PyFileSystem(pafs.FSSpecHandler(self.fs))

    def files(self) -> list[str]:
        """Relative paths of every file below this directory, sorted."""
        if not self.fs.exists(self.path):
            return []
        found = self.fs.find(self.path)
        return sorted(p[len(self.path) + 1 :] for p in found)


class Store:
    """The artifact store of one root URI."""

    def __init__(self, root: str, endpoint_url: str | None = None) -> None:
        self.endpoint_url = endpoint_url
        self.fs, self.base = open_fs(root, endpoint_url)
        self.base = self.base.rstrip("/")
        protocol = self.fs.protocol if isinstance(self.fs.protocol, str) else self.fs.protocol[0]
        self.prefix = "" if protocol in ("file", "local") else f"{protocol}://"
        self.root = self.prefix + self.base

    @classmethod
    def from_config(cls, cfg: Any) -> "Store":
        """From a :class:`recexp.config.StoreConfig`."""
        return cls(cfg.root, cfg.endpoint_url)

    def _dir(self, path: str) -> StageDir:
        return StageDir(self.fs, path, self.prefix)

    def stage_dir(self, run_id: str, stage: str) -> StageDir:
        return self._dir(f"{self.base}/runs/{run_id}/{stage}")

    # ------------------------------------------------------------------ reading

    def manifest(self, run_id: str, stage: str) -> dict[str, Any] | None:
        """The manifest of a committed stage, or None when it is not committed."""
        d = self.stage_dir(run_id, stage)
        try:
            return d.read_json(MANIFEST)
        except FileNotFoundError:
            return None

    def is_committed(self, run_id: str, stage: str) -> bool:
        return self.manifest(run_id, stage) is not None

    def committed(self, run_id: str, stage: str) -> StageDir:
        """The committed output of ``stage`` in ``run_id``; a clear error if there is none."""
        if not self.is_committed(run_id, stage):
            raise StoreError(
                f"stage '{stage}' of run '{run_id}' is not committed in {self.root} "
                f"(run it first, or point to another run with inputs.{stage}=<run_id>)"
            )
        return self.stage_dir(run_id, stage)

    def runs(self) -> list[str]:
        """Run ids present under the root, sorted."""
        base = f"{self.base}/runs"
        if not self.fs.exists(base):
            return []
        return sorted(os.path.basename(p.rstrip("/")) for p in self.fs.ls(base, detail=False))

    # ------------------------------------------------------------------ writing

    def begin(self, run_id: str, stage: str) -> StageDir:
        """A fresh, empty staging directory for a new attempt at ``stage``.

        Leftovers of earlier attempts that never committed are removed first.
        """
        staging_root = f"{self.base}/runs/{run_id}/.staging/{stage}"
        if self.fs.exists(staging_root):
            self.fs.rm(staging_root, recursive=True)
        attempt = f"{staging_root}/{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}"
        self.fs.makedirs(attempt, exist_ok=True)
        return self._dir(attempt)

    def abort(self, staging: StageDir) -> None:
        """Drop an attempt's staging directory (nothing becomes visible)."""
        if self.fs.exists(staging.path):
            self.fs.rm(staging.path, recursive=True)

    def commit(self, staging: StageDir, run_id: str, stage: str, info: dict[str, Any]) -> dict[str, Any]:
        """Publish ``staging`` as ``runs/<run_id>/<stage>`` with a manifest; returns the manifest.

        ``info`` goes into the manifest beside the file list (config, upstream run ids, timings).
        """
        files = [{"path": rel, **_size_and_sha256(staging.fs, staging.child(rel))} for rel in staging.files()]
        manifest = {"run_id": run_id, "stage": stage, "files": files, "committed_at": time.time(), **info}
        final = self.stage_dir(run_id, stage)
        if self.prefix:
            self._publish_by_copy(staging, final, manifest)
        else:
            self._publish_by_rename(staging, final, manifest)
        return manifest

    def _publish_by_rename(self, staging: StageDir, final: StageDir, manifest: dict[str, Any]) -> None:
        staging.write_json(MANIFEST, manifest)
        if os.path.exists(final.path):
            # A forced re-run: move the old output aside first so the rename below is atomic.
            trash = f"{os.path.dirname(staging.path)}/replaced-{secrets.token_hex(4)}"
            os.rename(final.path, trash)
            os.rename(staging.path, final.path)
            self.fs.rm(trash, recursive=True)
        else:
            os.makedirs(os.path.dirname(final.path), exist_ok=True)
            os.rename(staging.path, final.path)

    def _publish_by_copy(self, staging: StageDir, final: StageDir, manifest: dict[str, Any]) -> None:
        # Un-commit first (manifest gone = invisible), then replace the files, manifest last.
        if self.fs.exists(final.path):
            if final.exists(MANIFEST):
                self.fs.rm(final.child(MANIFEST))
            self.fs.rm(final.path, recursive=True)
        for entry in manifest["files"]:
            self.fs.copy(staging.child(entry["path"]), final.child(entry["path"]))
        final.write_json(MANIFEST, manifest)
        self.abort(staging)


def _size_and_sha256(fs: fsspec.AbstractFileSystem, path: str) -> dict[str, Any]:
    digest = hashlib.sha256()
    size = 0
    with fs.open(path, "rb") as f:
        while chunk := f.read(_HASH_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, "sha256": digest.hexdigest()}


def verify(stage: StageDir, manifest: dict[str, Any]) -> None:
    """Check every file of a committed stage against its manifest entry (size and sha256)."""
    for entry in manifest["files"]:
        actual = _size_and_sha256(stage.fs, stage.child(entry["path"]))
        if actual != {"size": entry["size"], "sha256": entry["sha256"]}:
            raise StoreError(f"{stage.url(entry['path'])}: content differs from its manifest")


def put_dir(local: str, stage: StageDir, rel: str) -> None:
    """Upload the local directory ``local`` (recursively) to ``rel`` under ``stage``."""
    for dirpath, _, names in os.walk(local):
        for name in sorted(names):
            src = os.path.join(dirpath, name)
            dest = os.path.relpath(src, local).replace(os.sep, "/")
            with open(src, "rb") as fin, stage.open(f"{rel}/{dest}", "wb") as fout:
                fout.write(fin.read())



def cache_root() -> str:
    """``$RECEXP_CACHE`` or ``~/.cache/recexp``: where remote artifacts are copied to."""
    return os.environ.get("RECEXP_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "recexp"))


def _remote_version(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """Names, sizes and versions (ETag or modification time) of the files at ``path``."""
    infos = fs.find(path, detail=True).values() if fs.isdir(path) else [fs.info(path)]
    entries = sorted(
        f"{i['name']}|{i.get('size')}|{i.get('ETag') or i.get('LastModified') or i.get('mtime')}" for i in infos
    )
    return hashlib.sha256("\n".join(entries).encode()).hexdigest()[:16]


def _newest_cached(prefix: str, name: str, uri: str) -> str:
    """The most recent cached copy of a URI that is gone from its store (offline use)."""
    parent, stem = os.path.split(prefix)
    found = [os.path.join(parent, d, name) for d in (os.listdir(parent) if os.path.isdir(parent) else [])
             if d.startswith(stem + "-") and os.path.exists(os.path.join(parent, d, name))]
    if not found:
        raise FileNotFoundError(f"not found: {uri}")
    return max(found, key=os.path.getmtime)


def cached_copy(uri: str, endpoint_url: str | None, namespace: str) -> str:
    """A local path with the files of ``uri``: ``uri`` itself when it is local, else a copy under
    ``<cache_root>/<namespace>/``, keyed by the URI and the remote files' names, sizes and
    versions, so an artifact re-written under the same URI (``force=true``) is fetched again;
    when the remote is gone, the newest cached copy serves. Copies land in a temporary sibling
    first and are renamed into place."""
    if "://" not in uri or uri.startswith("file://"):
        return os.path.expanduser(uri.removeprefix("file://"))
    fs, remote = open_fs(uri, endpoint_url)
    prefix = os.path.join(cache_root(), namespace, hashlib.sha256(uri.encode()).hexdigest()[:16])
    name = os.path.basename(remote.rstrip("/"))
    if not fs.exists(remote):
        return _newest_cached(prefix, name, uri)
    target = os.path.join(f"{prefix}-{_remote_version(fs, remote)}", name)
    if os.path.exists(target):
        return target
    tmp = f"{target}.tmp{os.getpid()}"
    os.makedirs(os.path.dirname(target), exist_ok=True)
    if fs.isdir(remote):
        fs.get(remote.rstrip("/") + "/", tmp + "/", recursive=True)
    else:
        fs.get(remote, tmp)
    if not os.path.exists(target):
        os.replace(tmp, target)
    return target
