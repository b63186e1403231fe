"""The recexp command inside a manifest: ``python -m ray_jobs.<stage> [--config FILE] [key=value ...]``.

:func:`parse_entrypoint` checks it the way the job would run it in the image, whose working
directory is the repository: the module file exists, the config file and every repository file
the stage reads exist, and the config loads (unknown keys, wrong types and invalid values fail
here with the loader's own message).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from recexp.config import STAGES, RunConfig, load_config
from recexp.errors import ConfigError

PYTHONS = ("python", "python3")
IMAGE_WORKDIR = "/home/ray/recexp"
"""The repository inside the image (cluster/Dockerfile ``WORKDIR``; the pods' ``workingDir``)."""

STAGE_FILES = {
    "ingest": ("data.path",),
    "build-alignment-data": ("tasks.templates", "tasks.general_instructions"),
    "align": ("align.deepspeed_config",),
    "explain": ("explain.pairs",),
}
"""Config keys naming a file a stage reads (a local path must then be in the repository)."""


class ManifestError(Exception):
    """One problem of a manifest, worded for the person who edits it."""


@dataclass(frozen=True)
class Entrypoint:
    stage: str
    cfg: RunConfig


def repo_path(path: str, repo: Path) -> Path:
    """Where ``path`` (relative to the image's working directory, or absolute in the image) lies in
    ``repo``; a path leaving the repository is not in the image."""
    relative = path[len(IMAGE_WORKDIR) + 1:] if path.startswith(IMAGE_WORKDIR + "/") else path
    resolved = (repo / relative).resolve()
    if Path(relative).is_absolute() or not resolved.is_relative_to(repo.resolve()):
        raise ManifestError(f"{path}: outside the repository, so not in the image")
    return resolved


def parse_entrypoint(command: str, repo: Path) -> Entrypoint:
    """Check ``command`` and load the config it runs with; raises :class:`ManifestError`."""
    tokens = shlex.split(command)
    if len(tokens) < 3 or tokens[0] not in PYTHONS or tokens[1] != "-m" or not tokens[2].startswith("ray_jobs."):
        raise ManifestError(f"entrypoint {command!r}: expected `python -m ray_jobs.<stage> [--config FILE] [key=value ...]`")
    module = tokens[2]
    if not (repo / (module.replace(".", "/") + ".py")).is_file():
        raise ManifestError(f"entrypoint module {module}: no file {module.replace('.', '/')}.py in the repository")
    stage = module.removeprefix("ray_jobs.").replace("_", "-")
    if stage not in STAGES:
        raise ManifestError(f"entrypoint module {module}: not a recexp stage ({', '.join(STAGES)})")
    config, overrides = split_arguments(tokens[3:])
    cfg = load_stage_config(config, overrides, repo)
    check_stage_files(stage, cfg, repo)
    return Entrypoint(stage, cfg)


def split_arguments(args: list[str]) -> tuple[str | None, list[str]]:
    """``--config FILE`` / ``--config=FILE`` and the ``key=value`` overrides."""
    config, overrides, rest = None, [], list(args)
    while rest:
        arg = rest.pop(0)
        if arg == "--config" and rest:
            config = rest.pop(0)
        elif arg.startswith("--config="):
            config = arg.split("=", 1)[1]
        elif "=" in arg and not arg.startswith("-"):
            overrides.append(arg)
        else:
            raise ManifestError(f"entrypoint argument {arg!r}: expected --config FILE or key=value")
    return config, overrides


def load_stage_config(config: str | None, overrides: list[str], repo: Path) -> RunConfig:
    """The :class:`RunConfig` of ``--config`` (a repository file) plus ``overrides``."""
    path = None
    if config is not None:
        path = repo_path(config, repo)
        if not path.is_file():
            raise ManifestError(f"config file {config}: not in the repository")
    try:
        return load_config(str(path) if path else None, overrides)
    except ConfigError as exc:
        raise ManifestError(f"config {config or '(defaults)'}: {exc}") from None


def check_stage_files(stage: str, cfg: RunConfig, repo: Path) -> None:
    """Every local file the job's stages read is in the repository (URLs are not checked)."""
    stages = cfg.pipeline.stages if stage == "pipeline" else [stage]
    for key in (k for s in stages for k in STAGE_FILES.get(s, ())):
        section, name = key.split(".")
        value = getattr(getattr(cfg, section), name)
        if not value or "://" in value or _unused(key, cfg):
            continue
        if not _in_repo(value, repo):
            raise ManifestError(f"{key}={value}: not in the repository, so not in the image (use a repository path "
                                "or an s3:// URL)")


def _in_repo(path: str, repo: Path) -> bool:
    try:
        return repo_path(path, repo).exists()
    except ManifestError:
        return False


def _unused(key: str, cfg: RunConfig) -> bool:
    """Keys that the rest of the config switches off."""
    return (key == "data.path" and cfg.data.format == "synthetic") or (
        key == "align.deepspeed_config" and cfg.align.strategy != "deepspeed")
