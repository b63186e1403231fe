"""Checks of the Kubernetes manifests under ``cluster/kuberay/`` (KubeRay RayCluster / RayJob /
RayService, the CronJob of the nightly explanations and its ConfigMap, ServiceAccount and RBAC).

Each ``check_*`` yields one line per problem; :func:`check_documents` runs them all over a set
of parsed documents, so a test can break a copy of a real manifest and see the same validator
catch it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from recexp.cluster.entrypoints import IMAGE_WORKDIR, ManifestError, parse_entrypoint
from recexp.cluster.resources import Bundle, NodeGroup, has_gpus, job_phases, kuberay_groups, place
from recexp.cluster.serving import check_serve_config, differences, serve_demands

API_VERSIONS = {
    "RayCluster": "ray.io/v1",
    "RayJob": "ray.io/v1",
    "RayService": "ray.io/v1",
    "CronJob": "batch/v1",
    "ConfigMap": "v1",
    "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}
EXAMPLE_VALUES = "recexp.io/example-values"
"""ConfigMap annotation: JSON ``{placeholder: example}`` substituted into the templates it holds."""
PLACEHOLDER = re.compile(r"@[A-Z_]+@")


@dataclass(frozen=True)
class Doc:
    """One YAML document of a manifest file; ``where`` names it in messages."""

    where: str
    body: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    @property
    def name(self) -> str:
        return str((self.body.get("metadata") or {}).get("name", ""))


@dataclass
class Context:
    """What the checks compare the manifests with."""

    repo: Path
    ray_version: str
    """``ray==`` pin of constraints.txt: every rayVersion and the image's base must match it."""
    launcher: list[NodeGroup] = field(default_factory=list)
    """Node types of the cluster-launcher config (the same jobs must fit there too)."""
    serve_config: dict[str, Any] | None = None
    """cluster/serve/deploy.yaml, which a RayService's serveConfigV2 must repeat."""
    clusters: dict[str, list[NodeGroup]] = field(default_factory=dict)
    """RayCluster name -> node groups (filled by :func:`check_documents`)."""


def load_documents(directory: Path, relative_to: Path) -> list[Doc]:
    """Every YAML document of every ``*.yaml`` file under ``directory`` (empty documents skipped)."""
    docs = []
    for path in sorted(directory.rglob("*.yaml")):
        for index, body in enumerate(yaml.safe_load_all(path.read_text())):
            if body is not None:
                where = f"{path.relative_to(relative_to)}#{index}"
                docs.append(Doc(where, body if isinstance(body, dict) else {"kind": f"<{type(body).__name__}>"}))
    return docs


def check_documents(docs: list[Doc], ctx: Context) -> list[str]:
    """Every problem of ``docs``, as ``"<file>#<doc> <Kind> <name>: <problem>"`` lines."""
    ctx.clusters = {d.name: kuberay_groups(d.body["spec"]) for d in docs if d.kind == "RayCluster" and _has_spec(d)}
    problems = []
    for doc in docs:
        problems += [f"{doc.where} {doc.kind} {doc.name}: {p}" for p in check_document(doc, docs, ctx)]
    return problems


def _has_spec(doc: Doc) -> bool:
    return isinstance(doc.body.get("spec"), dict) and "headGroupSpec" in doc.body["spec"]


def check_document(doc: Doc, docs: list[Doc], ctx: Context) -> Iterator[str]:
    if API_VERSIONS.get(doc.kind) is None:
        yield f"unexpected kind (known: {', '.join(API_VERSIONS)})"
        return
    if doc.body.get("apiVersion") != API_VERSIONS[doc.kind]:
        yield f"apiVersion {doc.body.get('apiVersion')!r}, expected {API_VERSIONS[doc.kind]!r}"
    if not doc.name:
        yield "metadata.name is missing"
    try:
        yield from CHECKS.get(doc.kind, _no_check)(doc, docs, ctx)
    except (KeyError, TypeError, AttributeError, ValueError) as exc:  # a missing or mistyped field
        yield f"malformed ({type(exc).__name__}: {exc})"


def _no_check(doc: Doc, docs: list[Doc], ctx: Context) -> Iterator[str]:
    return iter(())


# ----------------------------------------------------------------------------- RayCluster


def check_cluster_spec(spec: dict[str, Any], ctx: Context, cpu_and_gpu_groups: bool) -> Iterator[str]:
    """A RayCluster spec (also a RayService's ``rayClusterConfig``): version, autoscaling, groups, image layout."""
    if str(spec.get("rayVersion")) != ctx.ray_version:
        yield f"rayVersion {spec.get('rayVersion')!r} differs from ray=={ctx.ray_version} in constraints.txt"
    if spec.get("enableInTreeAutoscaling") is not True:
        yield "enableInTreeAutoscaling must be true: the worker groups scale with the jobs"
    workers = spec.get("workerGroupSpecs") or []
    for group in workers:
        low, now, high = (int(group.get(k, 0)) for k in ("minReplicas", "replicas", "maxReplicas"))
        if not (0 <= low <= now <= high and high >= 1):
            yield f"worker group {group.get('groupName')}: need 0 <= minReplicas <= replicas <= maxReplicas, maxReplicas >= 1"
    for group in [spec["headGroupSpec"], *workers]:
        container = group["template"]["spec"]["containers"][0]
        if container.get("workingDir") != IMAGE_WORKDIR:
            yield (f"container {container.get('name')}: workingDir must be {IMAGE_WORKDIR} (the repository in the image), "
                   "where the jobs' relative config paths resolve")
    groups = kuberay_groups(spec)[1:]
    if cpu_and_gpu_groups and not (any(g.gpus == 0 for g in groups) and has_gpus(groups)):
        yield "needs a CPU worker group and a GPU worker group"


def check_raycluster(doc: Doc, docs: list[Doc], ctx: Context) -> Iterator[str]:
    yield from check_cluster_spec(doc.body["spec"], ctx, cpu_and_gpu_groups=True)


# ----------------------------------------------------------------------------- RayJob


def job_cluster(spec: dict[str, Any], ctx: Context) -> tuple[str, list[NodeGroup]]:
    """The cluster a RayJob runs on: its own ``rayClusterSpec`` or the RayCluster its ``clusterSelector`` names."""
    if "rayClusterSpec" in spec:
        return "its rayClusterSpec", kuberay_groups(spec["rayClusterSpec"])
    name = (spec.get("clusterSelector") or {}).get("ray.io/cluster")
    if name not in ctx.clusters:
        raise ManifestError(f"clusterSelector ray.io/cluster={name!r} names no RayCluster of the manifests "
                            f"({', '.join(ctx.clusters) or 'none'})")
    return f"RayCluster {name}", ctx.clusters[name]


def check_rayjob(doc: Doc, docs: list[Doc], ctx: Context) -> Iterator[str]:
    """Entrypoint, config and files (see :mod:`recexp.cluster.entrypoints`), and that every phase of the
    job fits its cluster (and the cluster-launcher config) with the driver's reservation."""
    spec = doc.body["spec"]
    try:
        entry = parse_entrypoint(str(spec.get("entrypoint", "")), ctx.repo)
        cluster, groups = job_cluster(spec, ctx)
    except ManifestError as exc:
        yield str(exc)
        return
    if entry.stage == "serve":
        yield "the serve stage runs until stopped: deploy it with the RayService, not a RayJob"
    if "rayClusterSpec" in spec:
        yield from check_cluster_spec(spec["rayClusterSpec"], ctx, cpu_and_gpu_groups=False)
    driver = Bundle("the job's driver", float(spec.get("entrypointNumCpus", 0)), float(spec.get("entrypointNumGpus", 0)))
    targets = [(cluster, groups)] + ([("the cluster-launcher config", ctx.launcher)] if ctx.launcher else [])
    for name, target in targets:
        if missing := place([driver], target):
            yield f"the job's driver does not fit {name}: {missing}"
            continue
        for phase, bundles in job_phases(entry.stage, entry.cfg, has_gpus(target)):
            if missing := place([driver, *bundles], target):
                yield f"{phase} does not fit {name}: {missing}"


# ----------------------------------------------------------------------------- CronJob + ConfigMap


def check_configmap(doc: Doc, docs: list[Doc], ctx: Context) -> Iterator[str]:
    """RayJob templates held in a ConfigMap are checked as RayJobs, placeholders replaced by the examples."""
    for key, text in (doc.body.get("data") or {}).items():
        template = _template(doc, str(text))
        if template is None:
            continue
        leftover = sorted(set(PLACEHOLDER.findall(yaml.safe_dump(template))))
        if leftover:
            yield f"data.{key}: placeholders {leftover} have no example in annotation {EXAMPLE_VALUES}"
        inner = Doc(f"{doc.where} data.{key}", template)
        yield from (f"data.{key}: {p}" for p in check_document(inner, docs, ctx))


def _template(doc: Doc, text: str) -> dict[str, Any] | None:
    """The RayJob in ``text`` with the ConfigMap's example values substituted, else None."""
    examples = json.loads(((doc.body.get("metadata") or {}).get("annotations") or {}).get(EXAMPLE_VALUES, "{}"))
    for placeholder, value in examples.items():
        text = text.replace(placeholder, str(value))
    try:
        body = yaml.safe_load(text)
    except yaml.YAMLError:
        return None
    return body if isinstance(body, dict) and body.get("kind") == "RayJob" else None


def check_cronjob(doc: Doc, docs: list[Doc], ctx: Context) -> Iterator[str]:
    """Schedule, service account (bound to a Role that may create RayJobs) and the templates it reads."""
    spec = doc.body["spec"]
    if len(str(spec.get("schedule", "")).split()) != 5:
        yield f"schedule {spec.get('schedule')!r} is not a five-field cron expression"
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    account = pod.get("serviceAccountName")
    if account not in _rayjob_creators(docs):
        yield f"serviceAccountName {account!r} is not bound to a Role that may create rayjobs"
    read = list(_mounted_files(pod, docs))
    yield from (problem for problem, _ in read if problem)
    if not any(is_template for _, is_template in read):
        yield "its containers read no RayJob template from a mounted ConfigMap"


def _rayjob_creators(docs: list[Doc]) -> set[str]:
    """Service accounts bound (RoleBinding) to a Role allowing ``create`` on ``rayjobs``."""
    roles = {d.name for d in docs if d.kind == "Role" and any(
        "rayjobs" in r.get("resources", []) and "create" in r.get("verbs", []) for r in d.body.get("rules", []))}
    return {s["name"] for d in docs if d.kind == "RoleBinding" and d.body["roleRef"]["name"] in roles
            for s in d.body.get("subjects", []) if s.get("kind") == "ServiceAccount"}


def _mounted_files(pod: dict[str, Any], docs: list[Doc]) -> Iterator[tuple[str | None, bool]]:
    """``(problem, is_rayjob_template)`` for every ``<mountPath>/<file>`` a container's command names."""
    maps = {d.name: d for d in docs if d.kind == "ConfigMap"}
    volumes = {v["name"]: v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v}
    for container in pod["containers"]:
        script = " ".join(map(str, container.get("command", []) + container.get("args", [])))
        for mount in container.get("volumeMounts", []):
            configmap = maps.get(volumes.get(mount["name"], ""))
            for file in re.findall(re.escape(mount["mountPath"].rstrip("/")) + r"/([\w.-]+)", script):
                if configmap is None or file not in (configmap.body.get("data") or {}):
                    yield f"{mount['mountPath']}/{file}: no such key in ConfigMap {volumes.get(mount['name'])!r}", False
                else:
                    yield None, _template(configmap, str(configmap.body["data"][file])) is not None


# ----------------------------------------------------------------------------- RayService

POD_HTTP_HOST = "0.0.0.0"
"""Serve's proxy must bind every interface in a pod, or the Service KubeRay creates cannot reach it."""


def check_rayservice(doc: Doc, docs: list[Doc], ctx: Context) -> Iterator[str]:
    """serveConfigV2: Serve's schema, the application's builder and args, the same config as
    cluster/serve/deploy.yaml (but the bind address), a serve port on the head; replicas fit."""
    spec = doc.body["spec"]
    config = yaml.safe_load(str(spec.get("serveConfigV2", "")))
    if not isinstance(config, dict):
        yield "serveConfigV2 must be a YAML mapping (a Serve config file)"
        return
    yield from (f"serveConfigV2: {p}" for p in check_serve_config(config, ctx.repo))
    if ctx.serve_config is not None:
        diff = differences(config, ctx.serve_config, ignore={"http_options.host"})
        if diff:
            yield f"serveConfigV2 differs from cluster/serve/deploy.yaml at {', '.join(diff)}"
    http = config.get("http_options") or {}
    if http.get("host") != POD_HTTP_HOST:
        yield f"serveConfigV2 http_options.host must be {POD_HTTP_HOST} in a pod, not {http.get('host')!r}"
    cluster = spec["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p.get("name"): p.get("containerPort") for p in head.get("ports", [])}
    if ports.get("serve") != http.get("port", 8000):
        yield f"the head container needs a port named serve = http_options.port ({http.get('port', 8000)})"
    yield from check_cluster_spec(cluster, ctx, cpu_and_gpu_groups=False)
    missing = place(serve_demands(config, ctx.repo), kuberay_groups(cluster))
    if missing:
        yield f"the Serve replicas do not fit rayClusterConfig: {missing}"


CHECKS = {
    "RayCluster": check_raycluster,
    "RayJob": check_rayjob,
    "RayService": check_rayservice,
    "CronJob": check_cronjob,
    "ConfigMap": check_configmap,
}
