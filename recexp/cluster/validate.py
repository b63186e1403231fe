"""``python -m recexp.cluster [cluster/]``: check every manifest under ``cluster/`` against the repository.

Layout checked: ``kuberay/**/*.yaml`` (Kubernetes documents, see :mod:`recexp.cluster.manifests`),
``aws/*.yaml`` (Ray cluster-launcher configs), ``serve/deploy.yaml`` (the Serve config a
RayService repeats) and ``Dockerfile`` (the image they all run). Exit status 1 and one line per
problem when anything is wrong.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

from recexp.cluster.images import check_dockerfile, check_launcher, pins
from recexp.cluster.manifests import Context, Doc, check_documents, load_documents
from recexp.cluster.resources import launcher_groups
from recexp.cluster.serving import check_serve_config

REPO = Path(__file__).resolve().parents[2]


def load_context(root: Path, repo: Path) -> tuple[Context, list[str]]:
    """The context of the checks, and the problems of the files it is read from (messages name
    files relative to the parent of ``root``; configs and modules are looked up in ``repo``)."""
    versions = pins(repo / "constraints.txt")
    ctx, problems = Context(repo, versions.get("ray", "")), []
    for path in sorted((root / "aws").glob("*.yaml")):
        config = yaml.safe_load(path.read_text())
        problems += [f"{path.relative_to(root.parent)}: {p}" for p in check_launcher(config)]
        if not problems:
            ctx.launcher += launcher_groups(config)
    deploy = root / "serve" / "deploy.yaml"
    if deploy.is_file():
        ctx.serve_config = yaml.safe_load(deploy.read_text())
        problems += [f"{deploy.relative_to(root.parent)}: {p}" for p in check_serve_config(ctx.serve_config, repo)]
    dockerfile = root / "Dockerfile"
    problems += [f"{dockerfile.relative_to(root.parent)}: {p}" for p in
                 (check_dockerfile(dockerfile.read_text(), versions) if dockerfile.is_file() else ["missing"])]
    return ctx, problems


def check_tree(root: Path, repo: Path = REPO) -> tuple[list[Doc], list[str]]:
    """The Kubernetes documents under ``root`` and every problem found under ``root``."""
    ctx, problems = load_context(root, repo)
    docs = load_documents(root / "kuberay", root.parent)
    return docs, problems + check_documents(docs, ctx)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m recexp.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=str(REPO / "cluster"), help="the cluster/ directory")
    root = Path(parser.parse_args(argv).root).resolve()
    docs, problems = check_tree(root)
    for problem in problems:
        print(problem)
    kinds = sorted({d.kind for d in docs})
    print(f"{root}: {len(docs)} Kubernetes documents ({', '.join(kinds)}), {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
