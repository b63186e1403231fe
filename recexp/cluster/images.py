"""Checks of what the manifests run on: the image (cluster/Dockerfile) and the cluster-launcher config.

The image must be built on the Ray release the project pins (constraints.txt), install the
project with those constraints and the pinned torch, cache the default LLM, and put the
repository at the working directory the manifests' relative config paths assume. The AWS
cluster-launcher config must pass Ray's own cluster schema (what ``ray up`` checks).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from recexp.cluster.entrypoints import IMAGE_WORKDIR


def pins(constraints: Path) -> dict[str, str]:
    """``name -> version`` of ``name==version`` lines (a local version such as ``+cpu`` dropped)."""
    found = {}
    for line in constraints.read_text().splitlines():
        name, sep, version = line.strip().partition("==")
        if sep:
            found[name.lower()] = version.split("+")[0]
    return found


def check_dockerfile(text: str, versions: dict[str, str]) -> Iterator[str]:
    """Base image, working directory, install and model cache of cluster/Dockerfile."""
    base = re.search(r"^ARG BASE=(\S+)", text, re.M) or re.search(r"^FROM (\S+)", text, re.M)
    wanted = f"rayproject/ray:{versions.get('ray')}-py312"
    if base is None or not base.group(1).startswith(wanted):
        yield f"base image {base.group(1) if base else None!r} is not {wanted}-* (the ray pin of constraints.txt)"
    if f"WORKDIR {IMAGE_WORKDIR}" not in text:
        yield f"WORKDIR must be {IMAGE_WORKDIR}: the manifests' relative config paths resolve there"
    for needle, why in ((f"torch=={versions.get('torch')}", "the pinned torch"),
                        ("constraints.txt", "the pinned versions"),
                        ("python -m recexp.llm.fetch_default", "the cached default model")):
        if needle not in text:
            yield f"does not install {why} ({needle!r} not found)"


def check_launcher(config: dict[str, Any]) -> Iterator[str]:
    """Ray's cluster schema (with the provider's defaults filled in, as ``ray up`` does) and node types."""
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    logging.getLogger("ray.autoscaler._private.util").setLevel(logging.WARNING)  # its INFO lines are noise here
    try:
        validate_config(prepare_config(config))
    except (jsonschema.ValidationError, ValueError, KeyError, TypeError) as exc:
        yield f"fails Ray's cluster-launcher schema: {str(exc).splitlines()[0]}"
        return
    types = config["available_node_types"]
    if not any(t.get("resources", {}).get("GPU", 0) > 0 for t in types.values()):
        yield "needs a GPU worker node type (resources: {GPU: n})"
    if not any(t.get("resources", {}).get("CPU", 0) > 0 and not t.get("resources", {}).get("GPU") for t in types.values()):
        yield "needs a CPU worker node type (resources: {CPU: n})"
