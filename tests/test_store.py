"""Artifact store: atomic commits on a local directory and on a real S3-protocol server."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from recexp.errors import ConfigError, StoreError
from recexp.store import MANIFEST, Store, read_yaml, verify


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path) -> Store:
    if request.param == "local":
        return Store(str(tmp_path / "artifacts"))
    endpoint = request.getfixturevalue("s3_endpoint")
    return Store(f"s3://recexp/{tmp_path.name}", endpoint_url=endpoint)


def write_stage(store: Store, run_id: str, payload: bytes = b"hello") -> dict:
    staging = store.begin(run_id, "ingest")
    with staging.open("data/blob.bin", "wb") as f:
        f.write(payload)
    staging.write_table("t.parquet", pa.table({"x": [1, 2, 3]}))
    staging.write_json("stats.json", {"n": 3})
    return store.commit(staging, run_id, "ingest", {"config": {"k": 1}, "upstream": {}})


def test_commit_publishes_files_and_manifest(store: Store) -> None:
    manifest = write_stage(store, "r1")
    committed = store.committed("r1", "ingest")
    assert committed.read_json("stats.json") == {"n": 3}
    assert committed.read_table("t.parquet")["x"].to_pylist() == [1, 2, 3]
    entry = {e["path"]: e for e in manifest["files"]}["data/blob.bin"]
    assert entry == {"path": "data/blob.bin", "size": 5, "sha256": hashlib.sha256(b"hello").hexdigest()}
    assert sorted(entry["path"] for entry in manifest["files"]) == ["data/blob.bin", "stats.json", "t.parquet"]
    assert store.manifest("r1", "ingest")["config"] == {"k": 1}
    verify(committed, manifest)
    assert store.runs() == ["r1"]
    # Nothing of the attempt is left behind.
    assert not store.fs.exists(f"{store.base}/runs/r1/.staging/ingest") or not store.fs.ls(f"{store.base}/runs/r1/.staging/ingest")


def test_uncommitted_attempt_is_invisible_and_cleaned(store: Store) -> None:
    staging = store.begin("r2", "ingest")
    staging.write_json("partial.json", {"half": True})
    assert not store.is_committed("r2", "ingest")
    with pytest.raises(StoreError, match="not committed"):
        store.committed("r2", "ingest")
    again = store.begin("r2", "ingest")  # the next attempt removes the dead one's files
    assert not store.fs.exists(staging.path)
    assert again.files() == []


def test_force_replaces_committed_output(store: Store) -> None:
    write_stage(store, "r3", b"old")
    write_stage(store, "r3", b"newer")
    committed = store.committed("r3", "ingest")
    with committed.open("data/blob.bin") as f:
        assert f.read() == b"newer"
    assert len(store.manifest("r3", "ingest")["files"]) == 3


def test_verify_detects_tampering(store: Store) -> None:
    manifest = write_stage(store, "r4")
    committed = store.committed("r4", "ingest")
    with committed.open("data/blob.bin", "wb") as f:
        f.write(b"HELLO")
    with pytest.raises(StoreError, match="differs from its manifest"):
        verify(committed, manifest)


def test_manifest_is_valid_json_written_last(store: Store) -> None:
    write_stage(store, "r5")
    with store.stage_dir("r5", "ingest").open(MANIFEST, "r") as f:
        manifest = json.load(f)
    assert manifest["run_id"] == "r5" and manifest["stage"] == "ingest"


def test_read_yaml_local_and_s3_with_errors_naming_field_and_file(store: Store) -> None:
    """One reader for YAML files named in a config (task templates, judge rubric)."""
    stage = store.begin("r1", "yaml")
    with stage.open("good.yaml", "w") as f:
        f.write("a: 1\nb: [x, y]\n")
    with stage.open("bad.yaml", "w") as f:
        f.write("a: [1, 2\n")
    assert read_yaml(stage.url("good.yaml"), store.endpoint_url, "x.file") == {"a": 1, "b": ["x", "y"]}
    missing = stage.url("missing.yaml")
    with pytest.raises(ConfigError, match=f"^x.file: file not found: {missing}$"):
        read_yaml(missing, store.endpoint_url, "x.file")
    with pytest.raises(ConfigError, match=f"^x.file: {stage.url('bad.yaml')}: invalid YAML: "):
        read_yaml(stage.url("bad.yaml"), store.endpoint_url, "x.file")
    with pytest.raises(ConfigError, match="^file not found: "):
        read_yaml(missing, store.endpoint_url)
