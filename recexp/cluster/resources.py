"""Ray resources: what a cluster's node groups offer, what a recexp stage asks for, and whether it fits.

A node group is a set of identical nodes the autoscaler may start (a KubeRay head or worker
group, a cluster-launcher node type): CPUs and GPUs per node and the most nodes. A stage asks
for *phases*, each a list of bundles that must be placed at the same time (the Ray Train
workers plus a Ray Data task feeding them; an actor pool); a job's driver (``RayJob``
``entrypointNumCpus`` / ``entrypointNumGpus``) holds its bundle through every phase. A phase
fits when first-fit-decreasing places every bundle on some node of the groups at their maximum size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from recexp.config import RunConfig

EPS = 1e-9


@dataclass(frozen=True)
class NodeGroup:
    """Identical nodes: resources of one node and how many the autoscaler may start."""

    name: str
    cpus: float
    gpus: float
    max_nodes: int


@dataclass(frozen=True)
class Bundle:
    """``count`` identical resource requests placed together (one per worker / actor / task)."""

    what: str
    cpus: float
    gpus: float = 0.0
    count: int = 1


def quantity(value: Any) -> float:
    """A Kubernetes quantity (``8``, ``"8"``, ``"500m"``) as a number of CPUs / GPUs."""
    text = str(value).strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000
    return float(text)


# ----------------------------------------------------------------------------- node groups


def pod_group(name: str, group: dict[str, Any], max_nodes: int) -> NodeGroup:
    """A KubeRay head or worker group: ``rayStartParams`` win over the container's limits, as in KubeRay."""
    params = group.get("rayStartParams") or {}
    container = group["template"]["spec"]["containers"][0]
    resources = container.get("resources") or {}
    limits = {**(resources.get("requests") or {}), **(resources.get("limits") or {})}
    cpus = quantity(params.get("num-cpus", limits.get("cpu", 0)))
    gpus = quantity(params.get("num-gpus", limits.get("nvidia.com/gpu", 0)))
    return NodeGroup(name, cpus, gpus, max_nodes)


def kuberay_groups(spec: dict[str, Any]) -> list[NodeGroup]:
    """The head and every worker group (at ``maxReplicas``) of a RayCluster spec."""
    groups = [pod_group("head", spec["headGroupSpec"], 1)]
    for worker in spec.get("workerGroupSpecs") or []:
        groups.append(pod_group(worker["groupName"], worker, int(worker.get("maxReplicas", worker.get("replicas", 0)))))
    return groups


def launcher_groups(config: dict[str, Any]) -> list[NodeGroup]:
    """Node types of a Ray cluster-launcher config (the head type: one node)."""
    groups = []
    for name, node_type in config["available_node_types"].items():
        resources = node_type.get("resources") or {}
        most = 1 if name == config["head_node_type"] else min(node_type.get("max_workers", 0), config["max_workers"])
        groups.append(NodeGroup(name, float(resources.get("CPU", 0)), float(resources.get("GPU", 0)), int(most)))
    return groups


def has_gpus(groups: list[NodeGroup]) -> bool:
    return any(g.gpus > 0 and g.max_nodes > 0 for g in groups)


# ----------------------------------------------------------------------------- demands

DATA_TASK = Bundle("a Ray Data task", 1.0)


def _train(what: str, workers: int, cpus: int, use_gpu: bool) -> list[Bundle]:
    """Ray Train workers (``ScalingConfig``) plus the Ray Data task that streams their shards."""
    return [Bundle(what, float(cpus), 1.0 if use_gpu else 0.0, workers), DATA_TASK]


def stage_phases(stage: str, cfg: RunConfig, gpus_in_cluster: bool) -> list[tuple[str, list[Bundle]]]:
    """``(phase, bundles)`` of one stage as ``cfg`` configures it (``evaluate`` runs in the driver)."""
    rc, ac, ec = cfg.recommender, cfg.align, cfg.explain
    if stage in ("ingest", "build-alignment-data"):
        return [(f"{stage} (Ray Data)", [DATA_TASK])]
    if stage == "train-recommender":
        return [("train-recommender training", _train("Ray Train worker", rc.num_workers, rc.cpus_per_worker, rc.use_gpu)),
                ("train-recommender top-k export", [Bundle("top-k actor", 1.0, 0.0, rc.inference_actors)])]
    if stage == "align":
        return [("align training", _train("Ray Train worker", ac.num_workers, ac.cpus_per_worker, ac.use_gpu))]
    if stage == "explain":
        # ray_jobs/explain.py: explain.num_gpus, else one GPU per actor when the cluster has GPUs.
        gpus = ec.num_gpus if ec.num_gpus is not None else (1.0 if gpus_in_cluster else 0.0)
        return [("explain actors", [Bundle("explanation actor", float(ec.cpus_per_actor), gpus, ec.actors)])]
    return []


def job_phases(stage: str, cfg: RunConfig, gpus_in_cluster: bool) -> list[tuple[str, list[Bundle]]]:
    """Phases of a stage, or of every stage of ``pipeline.stages`` for the pipeline."""
    stages = cfg.pipeline.stages if stage == "pipeline" else [stage]
    return [phase for s in stages for phase in stage_phases(s, cfg, gpus_in_cluster)]


# ----------------------------------------------------------------------------- placement


def place(bundles: list[Bundle], groups: list[NodeGroup]) -> str | None:
    """First-fit-decreasing of ``bundles`` onto the nodes of ``groups``; ``None`` when all fit,
    else a description of the first request that found no node."""
    free = [[g.cpus, g.gpus] for g in groups for _ in range(g.max_nodes)]
    requests = [(b, i) for b in bundles for i in range(b.count)]
    for bundle, i in sorted(requests, key=lambda r: (r[0].gpus, r[0].cpus), reverse=True):
        node = next((n for n in free if n[0] + EPS >= bundle.cpus and n[1] + EPS >= bundle.gpus), None)
        if node is None:
            nodes = ", ".join(f"{g.name} ({g.max_nodes} x {g.cpus:g} CPU, {g.gpus:g} GPU)" for g in groups)
            return f"{bundle.what} #{i + 1} of {bundle.count} ({bundle.cpus:g} CPU, {bundle.gpus:g} GPU) fits no free node of {nodes}"
        node[0] -= bundle.cpus
        node[1] -= bundle.gpus
    return None
