"""``recexp STAGE --config FILE [key=value ...]``: one entry point for every stage.

Each stage is a recipe module ``ray_jobs.<stage_with_underscores>`` exposing ``main(argv)``;
``python -m ray_jobs.<stage>`` runs the same code, which is what ``ray job submit`` uses.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from recexp.config import STAGES, RunConfig, field_docs, load_config
from recexp.errors import RecexpError

DESCRIPTIONS = {
    "ingest": "read raw interactions + item metadata, filter, split (Ray Data)",
    "train-recommender": "train the target recommender (SASRec / MF) with Ray Train",
    "build-alignment-data": "generate the RecExplainer alignment tasks (Ray Data)",
    "align": "LoRA-align an LLM to the recommender (Ray Train + DeepSpeed)",
    "evaluate": "alignment metrics against baselines",
    "explain": "batch explanations over whole catalogs (Ray Data)",
    "serve": "online explanation service (Ray Serve)",
    "pipeline": "run every stage in order, skipping committed ones",
}


def module_name(stage: str) -> str:
    return "ray_jobs." + stage.replace("-", "_")


def parse_stage_args(stage: str, argv: Sequence[str] | None) -> RunConfig:
    """Parse ``--config FILE key=value ...`` into a validated :class:`RunConfig`."""
    parser = argparse.ArgumentParser(
        prog=f"recexp {stage}",
        description=DESCRIPTIONS.get(stage, stage),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (set in YAML or as key=value):\n" + _keys_help(),
    )
    parser.add_argument("--config", help="YAML file under configs/ (overrides the defaults)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, applied last")
    args = parser.parse_args(argv)
    return load_config(args.config, args.overrides)


def _keys_help() -> str:
    return "\n".join(f"  {key} = {default}\n      {doc}" for key, default, doc in field_docs(RunConfig))


def run_main(stage: str, main: Callable[[RunConfig], Any], argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run ``main(cfg)``, turn user-facing errors into one line and exit code 2."""
    try:
        main(parse_stage_args(stage, argv))
    except RecexpError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (BotoCoreError, ClientError) as exc:
        # Missing credentials, unreachable endpoint, denied bucket: one line, no traceback wall.
        print(f"error: object storage: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, PermissionError) as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: recexp STAGE --config FILE [key=value ...]\n\nstages:")
        for stage in STAGES:
            print(f"  {stage:<22}{DESCRIPTIONS[stage]}")
        print("\n`recexp STAGE --help` lists every config key.")
        return 0
    stage, rest = argv[0], argv[1:]
    if stage not in STAGES:
        print(f"error: unknown stage {stage!r}; stages: {', '.join(STAGES)}", file=sys.stderr)
        return 2
    try:
        module = importlib.import_module(module_name(stage))
    except ModuleNotFoundError as exc:
        if exc.name != module_name(stage):
            raise
        print(f"error: stage '{stage}' is not built yet in this version of recexp", file=sys.stderr)
        return 2
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
