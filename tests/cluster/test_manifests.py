"""The cluster manifests (cluster/): they parse, name real modules, configs and files, agree with
the Serve config and the ScalingConfigs they run, and the validator catches each kind of breakage."""

from __future__ import annotations

import copy
import shlex
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from ray.serve.schema import ServeDeploySchema

from recexp.cluster.images import check_dockerfile, check_launcher, pins
from recexp.cluster.manifests import Context, Doc, check_documents, load_documents
from recexp.cluster.resources import NodeGroup, kuberay_groups, place, stage_phases
from recexp.cluster.validate import check_tree, load_context
from recexp.config import load_config

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
STAGE_JOBS = {"ingest", "train-recommender", "build-alignment-data", "align", "evaluate", "explain", "pipeline"}


@pytest.fixture(scope="module")
def tree() -> tuple[list[Doc], list[str]]:
    return check_tree(CLUSTER, ROOT)


@pytest.fixture(scope="module")
def ctx() -> Context:
    context, problems = load_context(CLUSTER, ROOT)
    assert problems == []
    return context


def by_kind(docs: list[Doc], kind: str) -> list[Doc]:
    return [d for d in docs if d.kind == kind]


def one(docs: list[Doc], kind: str, name: str | None = None) -> Doc:
    found = [d for d in by_kind(docs, kind) if name in (None, d.name)]
    assert len(found) == 1, f"{kind} {name}: {[d.name for d in found]}"
    return found[0]


def nightly_template(docs: list[Doc]) -> dict:
    """The RayJob the CronJob creates, with its ConfigMap's example values filled in."""
    configmap = one(docs, "ConfigMap", "recexp-nightly-explain")
    text = configmap.body["data"]["rayjob.yaml"]
    for placeholder, value in yaml.safe_load(configmap.body["metadata"]["annotations"]["recexp.io/example-values"]).items():
        text = text.replace(placeholder, value)
    return yaml.safe_load(text)


# ----------------------------------------------------------------------------- the shipped manifests


def test_shipped_manifests_pass_the_validator(tree: tuple[list[Doc], list[str]]) -> None:
    docs, problems = tree
    assert problems == []
    counts = {kind: len(by_kind(docs, kind)) for kind in {d.kind for d in docs}}
    assert counts == {"RayCluster": 1, "RayJob": 7, "RayService": 1, "CronJob": 1, "ConfigMap": 1,
                      "ServiceAccount": 1, "Role": 1, "RoleBinding": 1}


def test_kinds_and_api_versions(tree: tuple[list[Doc], list[str]]) -> None:
    docs, _ = tree
    expected = {"RayCluster": "ray.io/v1", "RayJob": "ray.io/v1", "RayService": "ray.io/v1", "CronJob": "batch/v1",
                "ConfigMap": "v1", "ServiceAccount": "v1", "Role": "rbac.authorization.k8s.io/v1",
                "RoleBinding": "rbac.authorization.k8s.io/v1"}
    assert {(d.kind, d.body["apiVersion"]) for d in docs} == set(expected.items())
    template = nightly_template(docs)
    assert (template["apiVersion"], template["kind"]) == ("ray.io/v1", "RayJob")


def test_every_entrypoint_module_config_and_file_exists(tree: tuple[list[Doc], list[str]]) -> None:
    docs, _ = tree
    jobs = [d.body for d in by_kind(docs, "RayJob")] + [nightly_template(docs)]
    stages = []
    for job in jobs:
        tokens = shlex.split(job["spec"]["entrypoint"])
        assert tokens[:2] == ["python", "-m"]
        module, config = tokens[2], tokens[tokens.index("--config") + 1]
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), module
        assert (ROOT / config).is_file(), config
        cfg = load_config(str(ROOT / config), [t for t in tokens[5:] if "=" in t])
        assert cfg.store.root.startswith("s3://"), "cluster jobs keep artifacts in object storage"
        if module.endswith(("ingest", "pipeline")):
            assert cfg.data.path.startswith("s3://")
        if cfg.align.strategy == "deepspeed":
            assert (ROOT / cfg.align.deepspeed_config).is_file()
        stages.append(module.removeprefix("ray_jobs.").replace("_", "-"))
    assert set(stages[:-1]) == STAGE_JOBS and stages[-1] == "explain"
    cron = one(docs, "CronJob").body["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert "/templates/rayjob.yaml" in cron["containers"][0]["args"][0]
    assert cron["volumes"][0]["configMap"]["name"] == "recexp-nightly-explain"
    assert "configs/explain/nightly.yaml" in nightly_template(docs)["spec"]["entrypoint"]
    assert (ROOT / "cluster/Dockerfile").is_file() and (ROOT / "cluster/aws/cluster.yaml").is_file()


def test_rayservice_runs_the_serve_config_of_deploy_yaml(tree: tuple[list[Doc], list[str]]) -> None:
    docs, _ = tree
    embedded = yaml.safe_load(one(docs, "RayService").body["spec"]["serveConfigV2"])
    deploy = yaml.safe_load((CLUSTER / "serve/deploy.yaml").read_text())
    for config in (embedded, deploy):
        schema = ServeDeploySchema.model_validate(config)
        assert [a.import_path for a in schema.applications] == ["recexp.serve.app:build"]
    assert embedded["http_options"].pop("host") == "0.0.0.0"
    assert deploy["http_options"].pop("host") == "127.0.0.1"
    assert embedded == deploy
    args = dict(deploy["applications"][0]["args"])
    cfg = load_config(str(ROOT / args.pop("config")), [f"{k}={v}" for k, v in args.items()])
    assert (cfg.serve.port, cfg.serve.request_timeout_s) == (deploy["http_options"]["port"], 120.0)


def test_worker_groups_fit_the_scaling_configs(tree: tuple[list[Doc], list[str]]) -> None:
    docs, _ = tree
    groups = {g.name: g for g in kuberay_groups(one(docs, "RayCluster").body["spec"])}
    assert (groups["head"].cpus, groups["cpu"].gpus) == (0, 0)
    gpu = groups["gpu"]
    assert (gpu.cpus, gpu.gpus, gpu.max_nodes) == (8, 1, 4)
    cfg = load_config(str(ROOT / "configs/cluster/games.yaml"))
    # align: 2 workers x (4 CPU + 1 GPU), next to the pipeline driver's GPU: 3 of the 4 GPU pods.
    assert (cfg.align.num_workers, cfg.align.cpus_per_worker, cfg.align.use_gpu) == (2, 4, True)
    assert cfg.align.num_workers + one(docs, "RayJob", "recexp-games-v1-pipeline").body["spec"]["entrypointNumGpus"] <= gpu.max_nodes
    assert cfg.align.cpus_per_worker <= gpu.cpus
    (_, align), = stage_phases("align", cfg, gpus_in_cluster=True)
    assert place(align, list(groups.values())) is None
    crowded = load_config(str(ROOT / "configs/cluster/games.yaml"), ["align.num_workers=5"])
    (_, too_many), = stage_phases("align", crowded, gpus_in_cluster=True)
    assert "Ray Train worker #5 of 5 (4 CPU, 1 GPU)" in place(too_many, list(groups.values()))
    nightly = load_config(str(ROOT / "configs/explain/nightly.yaml"))
    (_, actors), = stage_phases("explain", nightly, gpus_in_cluster=True)
    assert (actors[0].count, actors[0].cpus, actors[0].gpus) == (4, 2, 1)  # one GPU per actor on a GPU cluster


def test_placement_is_first_fit_decreasing_over_whole_nodes() -> None:
    from recexp.cluster.resources import Bundle

    nodes = [NodeGroup("a", 4, 0, 2)]
    assert place([Bundle("w", 3, count=2), Bundle("t", 1, count=2)], nodes) is None
    assert "w #3 of 3" in place([Bundle("w", 3, count=3)], nodes)
    assert "w #1 of 1 (1 CPU, 1 GPU)" in place([Bundle("w", 1, 1)], nodes)


# ----------------------------------------------------------------------------- broken copies are caught


def _job(name: str) -> Callable[[list[Doc]], dict]:
    return lambda docs: one(docs, "RayJob", name).body["spec"]


def _service(docs: list[Doc]) -> dict:
    return one(docs, "RayService").body["spec"]


def _edit_serve(old: str, new: str) -> Callable[[list[Doc]], None]:
    def edit(docs: list[Doc]) -> None:
        _service(docs)["serveConfigV2"] = _service(docs)["serveConfigV2"].replace(old, new)
    return edit


BREAKAGES = {
    "wrong entrypoint module": (
        lambda d: _job("recexp-games-v1-align")(d).update(entrypoint="python -m ray_jobs.aling --config configs/cluster/games.yaml"),
        "recexp-games-v1-align: entrypoint module ray_jobs.aling: no file ray_jobs/aling.py in the repository"),
    "not a recipe command": (
        lambda d: _job("recexp-games-v1-ingest")(d).update(entrypoint="python train.py"),
        "recexp-games-v1-ingest: entrypoint 'python train.py': expected `python -m ray_jobs.<stage>"),
    "missing config file": (
        lambda d: _job("recexp-games-v1-evaluate")(d).update(entrypoint="python -m ray_jobs.evaluate --config configs/nope.yaml"),
        "recexp-games-v1-evaluate: config file configs/nope.yaml: not in the repository"),
    "unknown config key": (
        lambda d: _job("recexp-games-v1-explain")(d).update(entrypoint=_job("recexp-games-v1-explain")(d)["entrypoint"] + " explain.actor=2"),
        "unknown key 'explain.actor' (from command line)"),
    "data outside the image": (
        lambda d: _job("recexp-games-v1-ingest")(d).update(entrypoint="python -m ray_jobs.ingest --config configs/datasets/ml-100k.yaml"),
        "recexp-games-v1-ingest: data.path=../shared/data/ml-100k: not in the repository"),
    "more align workers than GPU pods": (
        lambda d: _job("recexp-games-v1-align")(d).update(entrypoint=_job("recexp-games-v1-align")(d)["entrypoint"] + " align.num_workers=8"),
        "align training does not fit RayCluster recexp: Ray Train worker #5 of 8 (4 CPU, 1 GPU)"),
    "driver asks for more than a pod": (
        lambda d: _job("recexp-games-v1-pipeline")(d).update(entrypointNumGpus=2),
        "the job's driver does not fit RayCluster recexp"),
    "unknown cluster": (
        lambda d: _job("recexp-games-v1-align")(d).update(clusterSelector={"ray.io/cluster": "other"}),
        "clusterSelector ray.io/cluster='other' names no RayCluster"),
    "wrong apiVersion": (
        lambda d: one(d, "RayCluster").body.update(apiVersion="ray.io/v1alpha1"),
        "RayCluster recexp: apiVersion 'ray.io/v1alpha1', expected 'ray.io/v1'"),
    "rayVersion not the pinned Ray": (
        lambda d: one(d, "RayCluster").body["spec"].update(rayVersion="2.9.0"),
        "rayVersion '2.9.0' differs from ray=="),
    "autoscaling off": (
        lambda d: one(d, "RayCluster").body["spec"].update(enableInTreeAutoscaling=False),
        "enableInTreeAutoscaling must be true"),
    "no GPU worker group": (
        lambda d: one(d, "RayCluster").body["spec"]["workerGroupSpecs"].pop(),
        "needs a CPU worker group and a GPU worker group"),
    "container outside the repository": (
        lambda d: one(d, "RayCluster").body["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0].pop("workingDir"),
        "container ray-head: workingDir must be /home/ray/recexp"),
    "serve config drifts from deploy.yaml": (
        _edit_serve("run_id: games-v1", "run_id: games-v2"),
        "serveConfigV2 differs from cluster/serve/deploy.yaml at applications.0.args.run_id"),
    "serve config fails Serve's schema": (
        _edit_serve("import_path: recexp.serve.app:build", "import_path: build"),
        "serveConfigV2: fails Serve's schema: applications.0.import_path"),
    "serve builder missing": (
        _edit_serve("recexp.serve.app:build", "recexp.serve.app:built"),
        "import_path recexp.serve.app:built: recexp.serve.app defines no 'built'"),
    "proxy bound to loopback": (
        _edit_serve("host: 0.0.0.0", "host: 127.0.0.1"),
        "http_options.host must be 0.0.0.0 in a pod"),
    "serve port differs from serve.port": (
        _edit_serve("port: 8000", "port: 8001"),
        "http_options.port 8001 differs from serve.port 8000"),
    "serve replicas do not fit": (
        lambda d: _service(d)["rayClusterConfig"]["workerGroupSpecs"][0].update(maxReplicas=1, replicas=1, minReplicas=1),
        "the Serve replicas do not fit rayClusterConfig: Recommender replica #1 of 1 (0.5 CPU, 0 GPU)"),
    "template key unknown": (
        lambda d: one(d, "ConfigMap").body["data"].update(
            {"rayjob.yaml": one(d, "ConfigMap").body["data"]["rayjob.yaml"].replace("inputs.align=", "inputs.aling=")}),
        "data.rayjob.yaml: config configs/explain/nightly.yaml: invalid value for 'inputs.aling'"),
    "template placeholder without example": (
        lambda d: one(d, "ConfigMap").body["data"].update(
            {"rayjob.yaml": one(d, "ConfigMap").body["data"]["rayjob.yaml"].replace("games-v1 inputs.ingest", "@RUN@ inputs.ingest")}),
        "placeholders ['@RUN@'] have no example"),
    "cron reads a missing template": (
        lambda d: one(d, "CronJob").body["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"].__setitem__(
            0, "kubectl create -f /templates/rayjob-v2.yaml"),
        "/templates/rayjob-v2.yaml: no such key in ConfigMap 'recexp-nightly-explain'"),
    "cron account may not create RayJobs": (
        lambda d: one(d, "Role").body["rules"][0].update(verbs=["get"]),
        "serviceAccountName 'recexp-rayjob-submitter' is not bound to a Role that may create rayjobs"),
    "bad cron schedule": (
        lambda d: one(d, "CronJob").body["spec"].update(schedule="nightly"),
        "schedule 'nightly' is not a five-field cron expression"),
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_a_broken_copy_of_a_real_manifest_is_caught(tree: tuple[list[Doc], list[str]], ctx: Context, breakage: str) -> None:
    docs, _ = tree
    broken = [Doc(d.where, copy.deepcopy(d.body)) for d in docs]
    edit, expected = BREAKAGES[breakage]
    edit(broken)
    problems = check_documents(broken, ctx)
    assert any(expected in p for p in problems), problems


def test_image_and_launcher_checks_catch_drift() -> None:
    versions = pins(ROOT / "constraints.txt")
    text = (CLUSTER / "Dockerfile").read_text()
    assert list(check_dockerfile(text, versions)) == []
    assert versions["ray"] in text and f"torch=={versions['torch']}" in text
    older = text.replace(f"rayproject/ray:{versions['ray']}-py312", "rayproject/ray:2.9.0-py312")
    assert any("is not rayproject/ray:" in p for p in check_dockerfile(older, versions))
    moved = text.replace("WORKDIR /home/ray/recexp", "WORKDIR /app")
    assert any("WORKDIR must be /home/ray/recexp" in p for p in check_dockerfile(moved, versions))
    launcher = yaml.safe_load((CLUSTER / "aws/cluster.yaml").read_text())
    assert list(check_launcher(copy.deepcopy(launcher))) == []
    assert set(launcher["available_node_types"]) == {"head", "cpu_worker", "gpu_worker"}
    launcher["available_node_types"]["gpu_worker"]["resources"]["GPU"] = 0.5  # the schema wants whole GPUs
    assert any("fails Ray's cluster-launcher schema" in p for p in check_launcher(launcher))


def test_command_line_reports_problems_with_its_exit_status(tmp_path: Path) -> None:
    copy_root = tmp_path / "cluster"
    subprocess.run(["cp", "-r", str(CLUSTER), str(copy_root)], check=True)
    job = copy_root / "kuberay/jobs/align.yaml"
    job.write_text(job.read_text().replace("ray_jobs.align", "ray_jobs.aling"))
    bad = subprocess.run([sys.executable, "-m", "recexp.cluster", str(copy_root)], capture_output=True, text=True, timeout=300)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    lines = bad.stdout.splitlines()
    assert lines[0] == ("cluster/kuberay/jobs/align.yaml#0 RayJob recexp-games-v1-align: "
                        "entrypoint module ray_jobs.aling: no file ray_jobs/aling.py in the repository")
    assert lines[-1].endswith("14 Kubernetes documents (ConfigMap, CronJob, RayCluster, RayJob, RayService, Role, "
                              "RoleBinding, ServiceAccount), 1 problems")
