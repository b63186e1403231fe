"""Checks of a Serve config file (``cluster/serve/deploy.yaml``, a RayService's ``serveConfigV2``).

Serve's own schema (``ray.serve.schema.ServeDeploySchema``) validates the structure; then every
application's builder must exist in the repository and its ``args`` (``config`` + dotted
overrides, as ``recexp.serve.app:build`` reads them) must load, with the HTTP options Serve
takes from the file agreeing with the ``serve.*`` keys the application was configured with.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

from recexp.cluster.entrypoints import ManifestError, load_stage_config
from recexp.cluster.resources import Bundle
from recexp.config import RunConfig


def check_serve_config(config: dict[str, Any], repo: Path) -> Iterator[str]:
    """Problems of one Serve config file's content."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    try:
        ServeDeploySchema.model_validate(config)
    except ValidationError as exc:
        yield "fails Serve's schema: " + "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return
    for app in config.get("applications", []):
        try:
            check_builder(app["import_path"], repo)
            cfg = application_config(app, repo)
        except ManifestError as exc:
            yield f"application {app.get('name')}: {exc}"
            continue
        yield from (f"application {app.get('name')}: {p}" for p in http_agreement(config, cfg))


def check_builder(import_path: str, repo: Path) -> None:
    """``module:attr`` (or ``module.attr``) names a top-level function or name of a repository module."""
    module, _, attr = import_path.partition(":") if ":" in import_path else import_path.rpartition(".")
    path = repo / (module.replace(".", "/") + ".py")
    if not path.is_file():
        raise ManifestError(f"import_path {import_path}: no file {path.relative_to(repo)} in the repository")
    tree = ast.parse(path.read_text())
    names = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
    if attr not in names:
        raise ManifestError(f"import_path {import_path}: {module} defines no {attr!r}")


def application_config(app: dict[str, Any], repo: Path) -> RunConfig:
    """The :class:`RunConfig` that ``recexp.serve.app:build(args)`` would build."""
    args = dict(app.get("args") or {})
    config = args.pop("config", None)
    return load_stage_config(config, [f"{key}={value}" for key, value in args.items()], repo)


def http_agreement(config: dict[str, Any], cfg: RunConfig) -> Iterator[str]:
    """Serve's cluster-wide HTTP options come from the file: they must say what ``serve.*`` says."""
    http = config.get("http_options") or {}
    if int(http.get("port", 8000)) != cfg.serve.port:
        yield f"http_options.port {http.get('port', 8000)} differs from serve.port {cfg.serve.port}"
    if "request_timeout_s" in http and float(http["request_timeout_s"]) != cfg.serve.request_timeout_s:
        yield f"http_options.request_timeout_s {http['request_timeout_s']} differs from serve.request_timeout_s"


def serve_demands(config: dict[str, Any], repo: Path) -> list[Bundle]:
    """Replicas of every application at full scale (the ingress reserves no CPU)."""
    bundles = []
    for app in config.get("applications", []):
        try:
            s = application_config(app, repo).serve
        except ManifestError:
            continue  # reported by check_serve_config
        bundles += [Bundle("Explainer replica", s.explainer_cpus, 0.0, s.max_replicas),
                    Bundle("Recommender replica", s.recommender_cpus, 0.0, s.recommender_replicas)]
    return bundles


def differences(a: Any, b: Any, ignore: Collection[str] = (), prefix: str = "") -> list[str]:
    """Dotted paths where two parsed YAML values differ (``ignore``: paths allowed to)."""
    if prefix.rstrip(".") in ignore:
        return []
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b), key=str)
                for d in differences(a.get(k), b.get(k), ignore, f"{prefix}{k}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, ignore, f"{prefix}{i}.")]
    return [] if a == b else [prefix.rstrip(".") or "(the whole file)"]
