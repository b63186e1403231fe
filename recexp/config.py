"""Typed configuration: one dataclass per stage, YAML overrides, ``key=value`` overrides last.

The dataclasses below are the single source of truth: every key a user can set is a field
with a default and a docstring, and every value is checked in ``__post_init__``. A YAML file
(``--config``) only overrides defaults; dotted ``key=value`` arguments override the file.
Unknown keys, wrong types and invalid values fail with one message naming the key and
where it came from.

A YAML file may start with ``include: other.yaml`` (or a list): those files, resolved
relative to the including file, are merged first, so a variant config states only what differs.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from recexp.errors import ConfigError, InvalidValue, require

STAGES = (
    "ingest",
    "train-recommender",
    "build-alignment-data",
    "align",
    "evaluate",
    "explain",
    "serve",
    "pipeline",
)
"""Stage names, in pipeline order (``pipeline`` runs the others)."""


@dataclass
class StoreConfig:
    """Where artifacts live."""

    root: str = "./artifacts"
    """Artifact store root: a local directory or an fsspec URL such as ``s3://bucket/prefix``."""
    endpoint_url: str | None = None
    """S3-compatible endpoint (e.g. ``http://127.0.0.1:9000``); default: ``AWS_ENDPOINT_URL`` or AWS."""

    def __post_init__(self) -> None:
        require(bool(self.root.strip()), "root", "must not be empty")


@dataclass
class RayConfig:
    """How to reach Ray."""

    address: str | None = None
    """Cluster address (``auto``, ``ray://host:10001``); unset starts a local Ray."""
    num_cpus: int | None = None
    """CPUs of a local Ray (ignored when ``address`` is set)."""

    def __post_init__(self) -> None:
        require(self.num_cpus is None or self.num_cpus >= 1, "num_cpus", "must be >= 1")


DataFormat = Literal["amazon2018", "amazon2023", "recbole", "tabular", "synthetic"]


@dataclass
class DataConfig:
    """The raw interaction data set read by ``ingest``."""

    format: DataFormat = "synthetic"
    """``amazon2018`` (2014/2018 JSON lines), ``amazon2023``, ``recbole`` (atomic files),
    ``tabular`` (CSV/Parquet with named columns) or ``synthetic`` (generated, the demo default)."""
    path: str = ""
    """Directory (local or ``s3://``) holding the files; ignored for ``synthetic``."""
    interactions: list[str] = field(default_factory=list)
    """Glob(s) of interaction files relative to ``path``; empty: the format's default."""
    items: list[str] = field(default_factory=list)
    """Glob(s) of item metadata files relative to ``path``; empty: the format's default."""
    title_field: str = "title"
    """Name of the title column in item files (RecBole ``.item`` and tabular)."""
    user_field: str = "user_id"
    """User id column (RecBole and tabular)."""
    item_field: str = "item_id"
    """Item id column (RecBole and tabular)."""
    time_field: str = "timestamp"
    """Timestamp column (RecBole and tabular); absent: file order is the time order."""
    rating_field: str = "rating"
    """Rating column (RecBole and tabular); optional in the data."""
    synthetic_interactions: int = 20_000
    """Number of generated interactions (``synthetic`` only)."""
    synthetic_seed: int = 0
    """Seed of the generated data (``synthetic`` only)."""

    def __post_init__(self) -> None:
        require(self.format == "synthetic" or bool(self.path), "path", f"required for format {self.format!r}")
        require(self.synthetic_interactions >= 100, "synthetic_interactions", "must be >= 100")


@dataclass
class IngestConfig:
    """Filtering, subsampling and splitting done by ``ingest``."""

    k_core: int = 5
    """Iterative k-core: keep users and items with at least k interactions (0 = off)."""
    subsample_items: int = 0
    """RecExplainer subsampling: keep the N most frequent items (0 = off)."""
    subsample_users: int = 0
    """RecExplainer subsampling: then sample M users among those left (0 = all)."""
    seed: int = 0
    """Seed of every random choice in ingest."""
    max_reject_fraction: float = 0.01
    """Fail (commit nothing) when more than this fraction of input lines is rejected."""
    lines_per_block: int = 20_000
    """Lines parsed per Ray Data block; bounds worker memory."""
    min_sequence_length: int = 3
    """Users with fewer interactions after filtering are dropped (leave-one-out needs 3)."""

    def __post_init__(self) -> None:
        require(self.k_core >= 0, "k_core", "must be >= 0")
        require(self.subsample_items >= 0, "subsample_items", "must be >= 0")
        require(self.subsample_users >= 0, "subsample_users", "must be >= 0")
        require(0.0 <= self.max_reject_fraction <= 1.0, "max_reject_fraction", "must be in [0, 1]")
        require(self.lines_per_block >= 1, "lines_per_block", "must be >= 1")
        require(self.min_sequence_length >= 3, "min_sequence_length", "must be >= 3")


@dataclass
class RecommenderConfig:
    """The target recommender trained by ``train-recommender`` (Ray Train)."""

    model: Literal["sasrec", "mf"] = "sasrec"
    """``sasrec`` (Kang & McAuley 2018) or ``mf`` (matrix factorisation)."""
    d: int = 64
    """Embedding size."""
    max_len: int = 50
    """History length the model sees (the most recent items)."""
    n_blocks: int = 2
    """SASRec: self-attention blocks."""
    n_heads: int = 1
    """SASRec: attention heads."""
    dropout: float = 0.2
    """SASRec: dropout rate."""
    norm_first: bool = True
    """SASRec: pre-LN (True) or post-LN (False) blocks."""
    loss: str = "ce"
    """SASRec: ``ce`` (full softmax), ``bce`` (sampled negatives, the original) or
    ``sampled_softmax``; MF: ``sampled_softmax``, ``bpr`` or ``ce``."""
    num_negatives: int = 0
    """Negatives per positive for sampled losses; 0: the model's default."""
    mf_user_repr: Literal["id", "history_mean"] = "history_mean"
    """MF: a learned vector per user id, or the mean of the history's item embeddings (lets
    downstream stages embed any history, as SASRec does)."""
    epochs: int = 30
    """Maximum epochs."""
    batch_size: int = 256
    """Sequences per step and worker."""
    lr: float = 1e-3
    """AdamW learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay (not on biases and norms)."""
    max_grad_norm: float = 5.0
    """Gradient clipping (0 = off)."""
    bucket_batches: int = 8
    """Group sequences of similar length within windows of this many batches (less padding)."""
    patience: int = 3
    """Early stopping: epochs without a better valid NDCG@10."""
    time_budget_min: float = 0.0
    """Stop after the first epoch that ends past this many minutes of training (0 = none)."""
    num_workers: int = 1
    """Ray Train workers (DDP: gloo on CPU, nccl on GPU)."""
    use_gpu: bool = False
    """One GPU per worker."""
    max_failures: int = 2
    """Worker failures to recover from (from the latest checkpoint)."""
    eval_batch_size: int = 512
    """Users per evaluation batch."""
    sampled_negatives: int = 100
    """``sampled100`` protocol: uniformly sampled unseen items per test user (seeded)."""
    topk: int = 50
    """Exported top-k list length per (user, position)."""
    neighbors: int = 10
    """Exported nearest items per item."""
    interested_fraction: float = 0.2
    """Per-user "interested" threshold: the score at this top fraction of the catalog."""
    not_interested_fraction: float = 0.5
    """Per-user "not interested" threshold: the score at this bottom fraction."""
    inference_actors: int = 2
    """Ray Data actors computing the top-k export."""
    seed: int = 0
    """Seed of initialisation, batching and sampled evaluation."""

    def __post_init__(self) -> None:
        sasrec_losses, mf_losses = ("ce", "bce", "sampled_softmax"), ("sampled_softmax", "bpr", "ce")
        allowed = sasrec_losses if self.model == "sasrec" else mf_losses
        require(self.loss in allowed, "loss", f"{self.model} supports {', '.join(allowed)}")
        require(self.d >= 1 and self.max_len >= 1, "d", "d and max_len must be >= 1")
        require(self.n_heads >= 1 and self.d % self.n_heads == 0, "n_heads", "must divide d")
        require(0.0 <= self.dropout < 1.0, "dropout", "must be in [0, 1)")
        require(self.epochs >= 1 and self.batch_size >= 1, "epochs", "epochs and batch_size must be >= 1")
        require(self.lr > 0, "lr", "must be > 0")
        require(self.patience >= 1, "patience", "must be >= 1")
        require(self.num_workers >= 1, "num_workers", "must be >= 1")
        require(self.max_failures >= -1, "max_failures", "must be >= -1 (-1: unlimited)")
        require(self.topk >= 1 and self.neighbors >= 1, "topk", "topk and neighbors must be >= 1")
        require(0 < self.interested_fraction < 1, "interested_fraction", "must be in (0, 1)")
        require(0 < self.not_interested_fraction < 1, "not_interested_fraction", "must be in (0, 1)")
        require(self.inference_actors >= 1, "inference_actors", "must be >= 1")


TASK_IDS = ("t1", "t2", "t3", "t4", "t5", "t6", "t7", "explain")
FORMS = ("behaviour", "intention", "hybrid")


@dataclass
class TasksConfig:
    """The RecExplainer alignment tasks built by ``build-alignment-data``."""

    tasks: list[str] = field(default_factory=lambda: list(TASK_IDS))
    """Task ids to build: t1 next item, t2 ranking, t3 interest, t4 item discrimination,
    t5 general instructions, t6 history reconstruction, t7 added item, explain."""
    forms: list[str] = field(default_factory=lambda: list(FORMS))
    """Prompt forms: behaviour (titles), intention (<user>/<item> slots), hybrid (slot + title)."""
    max_hist: int = 9
    """History length: the user's last ``max_hist`` items before the position."""
    seed: int = 0
    """Seed of every random choice (templates, sampled items, test users)."""
    rank_candidates: int = 5
    """T2: items sampled from the recommender's ranked list and shown shuffled."""
    t3_test_fraction: float = 0.3
    """T3: fraction of users (seeded) with a test pair."""
    explain_train: int = 2000
    """Explanation prompts in the train split."""
    explain_test: int = 500
    """Explanation prompts in the test split."""
    general_instructions: str = ""
    """T5: JSON-lines chat file (``{"messages": [...]}`` per line) mixed in; empty: none."""
    general_ratio: float = 0.1
    """T5: general rows as a fraction of the other train rows (capped by the file's size)."""
    templates: str = ""
    """YAML file of prompt templates replacing the built-in ones; empty: built-in."""
    users_per_partition: int = 2000
    """Users per output partition; partitions, not workers, decide the files, so output is
    byte-identical whatever the number of workers."""

    def __post_init__(self) -> None:
        for task in self.tasks:
            require(task in TASK_IDS, "tasks", f"unknown task {task!r} (known: {', '.join(TASK_IDS)})")
        for form in self.forms:
            require(form in FORMS, "forms", f"unknown form {form!r} (known: {', '.join(FORMS)})")
        require(self.max_hist >= 1, "max_hist", "must be >= 1")
        require(self.rank_candidates >= 2, "rank_candidates", "must be >= 2")
        require(0.0 <= self.t3_test_fraction <= 1.0, "t3_test_fraction", "must be in [0, 1]")
        require(self.explain_train >= 0 and self.explain_test >= 0, "explain_train", "must be >= 0")
        require(0.0 <= self.general_ratio <= 10.0, "general_ratio", "must be in [0, 10]")
        require(self.users_per_partition >= 1, "users_per_partition", "must be >= 1")


PIPELINE_STAGES = ("ingest", "train-recommender", "build-alignment-data", "align", "evaluate", "explain")


@dataclass
class PipelineConfig:
    """What ``recexp pipeline`` runs."""

    stages: list[str] = field(default_factory=lambda: list(PIPELINE_STAGES))
    """Stages to run in order; committed ones are skipped, so a failed run resumes where it stopped."""

    def __post_init__(self) -> None:
        for stage in self.stages:
            require(stage in PIPELINE_STAGES, "stages", f"unknown stage {stage!r} (known: {', '.join(PIPELINE_STAGES)})")


@dataclass
class RunConfig:
    """Everything a stage may read. Each stage uses the common keys and its own section."""

    run_id: str | None = None
    """Run id shared by all stages of one pipeline run; unset: generated and printed."""
    force: bool = False
    """Re-run a stage even if it is already committed for this run."""
    inputs: dict[str, str] = field(default_factory=dict)
    """Read an upstream stage from another run: ``inputs.ingest=<run_id>``."""
    store: StoreConfig = field(default_factory=StoreConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    data: DataConfig = field(default_factory=DataConfig)
    ingest: IngestConfig = field(default_factory=IngestConfig)
    recommender: RecommenderConfig = field(default_factory=RecommenderConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)

    def __post_init__(self) -> None:
        if self.run_id is not None:
            ok = bool(self.run_id) and all(c.isalnum() or c in "-_." for c in self.run_id)
            require(ok and not self.run_id.startswith("."), "run_id", "use letters, digits, '-', '_' or '.'")
        for stage in self.inputs:
            require(stage in STAGES, f"inputs.{stage}", f"unknown stage (known: {', '.join(STAGES)})")


# ----------------------------------------------------------------------------- loading


def load_config(path: str | None = None, overrides: typing.Sequence[str] = (), cls: type = RunConfig) -> Any:
    """Build ``cls`` from its defaults, the YAML file at ``path``, then ``key=value`` overrides."""
    raw: dict[str, Any] = {}
    sources: dict[str, str] = {}
    if path:
        _merge(raw, _read_yaml(Path(path), sources, seen=()), sources, str(path), record=False)
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r}: expected key=value")
        _set_dotted(raw, key.strip(), _parse_scalar(text))
        sources[key.strip()] = "command line"
    return _build(cls, raw, "", sources)


def _read_yaml(path: Path, sources: dict[str, str], seen: tuple[Path, ...]) -> dict[str, Any]:
    """Read a YAML mapping, merging its ``include`` files first (paths relative to it)."""
    if path.resolve() in seen:
        raise ConfigError(f"{path}: include cycle")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    includes = data.pop("include", [])
    merged: dict[str, Any] = {}
    for inc in [includes] if isinstance(includes, str) else includes:
        included = _read_yaml(path.parent / inc, sources, seen + (path.resolve(),))
        _merge(merged, included, sources, str(path.parent / inc), record=False)
    _merge(merged, data, sources, str(path))
    return merged


def _merge(dst: dict, src: dict, sources: dict[str, str], origin: str, prefix: str = "", record: bool = True) -> None:
    """Deep-merge ``src`` into ``dst``, remembering which file set each leaf key."""
    for key, value in src.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, sources, origin, dotted + ".", record)
        else:
            dst[key] = value
        if record:
            sources[dotted] = origin


def _parse_scalar(text: str) -> Any:
    """``key=value`` values are YAML scalars: ``5`` is an int, ``true`` a bool, ``[a, b]`` a list."""
    try:
        return yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def _set_dotted(raw: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def _where(key: str, sources: dict[str, str]) -> str:
    """Best source for ``key``: itself, else the nearest parent, else the defaults."""
    parts = key.split(".")
    for n in range(len(parts), 0, -1):
        origin = sources.get(".".join(parts[:n]))
        if origin:
            return f" (from {origin})"
    return ""


def _build(cls: type, raw: Any, prefix: str, sources: dict[str, str]) -> Any:
    """Instantiate dataclass ``cls`` from mapping ``raw``, checking keys and types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping{_where(prefix.rstrip('.'), sources)}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        key = prefix + unknown[0]
        raise ConfigError(f"unknown key '{key}'{_where(key, sources)}; known keys here: {', '.join(sorted(fields))}")
    kwargs = {}
    for name, value in raw.items():
        key = prefix + name
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = _build(hints[name], value, key + ".", sources)
        else:
            kwargs[name] = _coerce(hints[name], value, key, sources)
    try:
        return cls(**kwargs)
    except InvalidValue as exc:
        key = prefix + exc.key
        raise ConfigError(f"invalid value for '{key}'{_where(key, sources)}: {exc.message}") from None


def _coerce(tp: Any, value: Any, key: str, sources: dict[str, str]) -> Any:
    """Check ``value`` against annotation ``tp``; convert only where lossless (int -> float)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(arg, value, key, sources)
            except ConfigError:
                continue
        return _type_error(tp, value, key, sources)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"invalid value for '{key}'{_where(key, sources)}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            return _type_error(tp, value, key, sources)
        return [_coerce(args[0], v, f"{key}[{i}]", sources) for i, v in enumerate(items)]
    if origin is dict:
        if not isinstance(value, dict):
            return _type_error(tp, value, key, sources)
        return {str(k): _coerce(args[1], v, f"{key}.{k}", sources) for k, v in value.items()}
    return _coerce_plain(tp, value, key, sources)


def _coerce_plain(tp: type, value: Any, key: str, sources: dict[str, str]) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        # An id such as run_id=20240101 arrives as an int from YAML; a string is what was meant.
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return str(value)
    return _type_error(tp, value, key, sources)


def _type_error(tp: Any, value: Any, key: str, sources: dict[str, str]) -> Any:
    name = getattr(tp, "__name__", None) or str(tp).replace("typing.", "")
    raise ConfigError(f"wrong type for '{key}'{_where(key, sources)}: expected {name}, got {value!r}")


# ----------------------------------------------------------------------------- introspection


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-data view of a config (for manifests and logs)."""
    return dataclasses.asdict(cfg)


def field_docs(cls: type, prefix: str = "") -> list[tuple[str, str, str]]:
    """``(dotted key, default, docstring)`` for every leaf field of ``cls`` (for ``--help``)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for node, nxt in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant):
            docs[node.target.id] = " ".join(str(nxt.value.value).split())  # type: ignore[union-attr]
    hints = typing.get_type_hints(cls)
    rows = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            rows += field_docs(hints[f.name], f"{prefix}{f.name}.")
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        rows.append((prefix + f.name, repr(default), docs.get(f.name, "")))
    return rows
