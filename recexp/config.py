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
    """CPUs of a local Ray (ignored when ``address`` is set and inside a Ray job)."""

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
    cpus_per_worker: int = 1
    """CPUs reserved per worker; also its torch thread count (Ray sets OMP_NUM_THREADS from it)."""
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
        require(self.cpus_per_worker >= 1, "cpus_per_worker", "must be >= 1")
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


@dataclass
class ServeConfig:
    """The online explanation service run by ``recexp serve`` (Ray Serve)."""

    host: str = "127.0.0.1"
    """Address the HTTP proxy binds; anything but loopback exposes the service to the network."""
    port: int = 8000
    """HTTP port."""
    auth_token: str | None = None
    """Bearer token required on every route but ``/healthz`` and ``/readyz``; unset: no auth."""
    model_name: str = "recexp"
    """OpenAI model id of the base LM (no adapter); ``<model_name>:<adapter>`` selects an adapter."""
    adapters: dict[str, str] = field(default_factory=dict)
    """Extra aligned adapters ``{name: run_id}`` (that run's ``align/model``) over the same base
    model and recommender; the served run's own adapter is always ``default``."""
    max_adapters_per_replica: int = 3
    """Adapters an Explainer replica keeps loaded; the least recently used one is unloaded."""
    form: str = ""
    """Explanation prompt form (behaviour, intention, hybrid); empty: the adapter's aligned form."""
    max_body_bytes: int = 65536
    """Largest request body accepted (413 above)."""
    max_history: int = 200
    """Longest ``history`` a request may send (422 above)."""
    max_k: int = 100
    """Largest ``k`` of ``/v1/recommend``."""
    max_new_tokens: int = 64
    """Tokens generated per explanation, and the cap of a chat request's ``max_tokens``."""
    follow_up: bool = True
    """Explain in two turns: the Yes / No answer from one forward over the explanation prompt,
    then the explanation as the reply to a plain-text "why?" turn (``explain_followup`` template 0,
    as the explain stage does); false: one pass (the answer read at the explanation's first token)."""
    max_prompt_tokens: int = 1024
    """Longest prompt in tokens (chat prompts above are refused with 422)."""
    dtype: str = "float32"
    """LLM weights dtype (``float32`` on CPU, ``bf16`` on GPU)."""
    torch_threads: int = 1
    """Torch threads per replica."""
    batch_max_size: int = 8
    """Explainer dynamic batching: most requests per batch (1 = unbatched)."""
    batch_wait_timeout_s: float = 0.02
    """Explainer dynamic batching: longest wait for a batch to fill."""
    min_replicas: int = 1
    """Explainer autoscaling: fewest replicas."""
    max_replicas: int = 2
    """Explainer autoscaling: most replicas."""
    target_ongoing_requests: float = 4.0
    """Explainer autoscaling: ongoing requests per replica the autoscaler aims at."""
    upscale_delay_s: float = 30.0
    """Explainer autoscaling: how long load must stay high before adding replicas."""
    downscale_delay_s: float = 300.0
    """Explainer autoscaling: how long load must stay low before removing replicas."""
    metrics_interval_s: float = 10.0
    """Explainer autoscaling: how often replicas report their load."""
    look_back_period_s: float = 30.0
    """Explainer autoscaling: window the load is averaged over."""
    max_ongoing_requests: int = 16
    """Requests one Explainer replica works on at once (a full batch plus the next one filling)."""
    max_queued_requests: int = 64
    """Requests waiting for an Explainer replica; more are refused with 503 and ``Retry-After``
    (-1: no limit)."""
    retry_after_s: int = 1
    """``Retry-After`` of a 503 under overload."""
    request_timeout_s: float = 120.0
    """End-to-end HTTP request timeout (the proxy answers 408 after it)."""
    health_check_period_s: float = 10.0
    """How often Serve checks each replica."""
    health_check_timeout_s: float = 30.0
    """A replica whose health check takes longer is restarted."""
    explainer_cpus: float = 1.0
    """CPUs reserved per Explainer replica."""
    recommender_cpus: float = 0.5
    """CPUs reserved per Recommender replica."""
    recommender_replicas: int = 1
    """Recommender replicas (it is cheap: top-k is one matrix product)."""
    rollout_surge_percent: int = 100
    """Extra replicas (percent of the target) started when a redeploy restarts replicas: old ones
    serve until their replacements are ready (0: replace in place, needs no spare resources)."""
    front_max_ongoing_requests: int = 512
    """Requests the ingress and each Recommender replica take at once (they are light: the
    ingress awaits the others, top-k is one matrix product); the Explainer's limits decide."""

    def __post_init__(self) -> None:
        require(1 <= self.port <= 65535, "port", "must be in [1, 65535]")
        require(self.auth_token is None or len(self.auth_token) >= 8, "auth_token", "use at least 8 characters")
        require(bool(self.model_name) and ":" not in self.model_name, "model_name", "non-empty, without ':'")
        for name in self.adapters:
            require(name.isidentifier() and name != "base", f"adapters.{name}", "use a Python identifier, not 'base'")
        require(self.form in ("",) + FORMS, "form", f"one of {', '.join(FORMS)} or empty")
        require(self.max_adapters_per_replica >= 1, "max_adapters_per_replica", "must be >= 1")
        for key in ("max_body_bytes", "max_history", "max_k", "max_new_tokens", "max_prompt_tokens", "torch_threads",
                    "batch_max_size", "max_ongoing_requests", "recommender_replicas", "front_max_ongoing_requests"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(self.max_queued_requests >= 1 or self.max_queued_requests == -1, "max_queued_requests", ">= 1 or -1")
        require(1 <= self.min_replicas <= self.max_replicas, "min_replicas", "need 1 <= min_replicas <= max_replicas")
        require(self.target_ongoing_requests > 0, "target_ongoing_requests", "must be > 0")
        require(0 <= self.rollout_surge_percent <= 100, "rollout_surge_percent", "must be in [0, 100]")
        require(self.batch_wait_timeout_s >= 0 and self.retry_after_s >= 0, "batch_wait_timeout_s", "must be >= 0")
        require(self.explainer_cpus > 0 and self.recommender_cpus > 0, "explainer_cpus", "CPUs must be > 0")


ALIGN_TASKS = ("t1", "t2", "t3", "t4", "t5", "t6", "t7")


@dataclass
class AlignConfig:
    """LoRA alignment of an LLM to the recommender (``align``): Ray Train + DeepSpeed."""

    model: str = "default"
    """Base LLM: ``default`` (SmolLM2-135M-Instruct, ``python -m recexp.llm.fetch_default``), an HF
    model directory, a ``.gguf`` file, or an ``s3://`` URL of either (copied to a local cache)."""
    form: Literal["behaviour", "intention", "hybrid"] = "intention"
    """Which prompt form of the alignment data to train on (RecExplainer-B / -I / -H)."""
    tasks: list[str] = field(default_factory=lambda: list(ALIGN_TASKS))
    """Task ids whose train rows are used (those present in the data; ``explain`` rows are not
    training targets)."""
    injection_mode: Literal["input_add", "input_replace", "every_layer"] = "input_add"
    """How projected recommender vectors enter the LLM at slot tokens (see recexp.llm.inject)."""
    max_rows: int = 0
    """Train on a seeded sample of this many rows (0 = all): bounded CPU runs, demos."""
    task_rows: dict[str, int] = field(default_factory=dict)
    """The task mix: at most this many (seeded sample) train rows of each named task, e.g.
    ``{t1: 800}`` so that a bounded run sees more T3 (tasks not named keep all rows); applied
    before ``max_rows``."""
    max_length: int = 512
    """Context length: a longer example is an error before training starts; packed rows' width."""
    batching: Literal["packed", "grouped", "padded"] = "packed"
    """``packed``: several examples per row, block-diagonal attention; ``grouped``: one example
    per row, similar lengths batched together; ``padded``: one per row, random order."""
    loss_per: Literal["token", "example"] = "token"
    """How the loss averages: ``token``: every response token counts the same (a 15-token T1
    title outweighs a one-word T3 answer 15 to 1); ``example``: each example's mean token loss
    counts the same."""
    micro_batch_size: int = 4
    """Rows per micro-batch and worker (packed rows when ``batching=packed``)."""
    grad_accum: int = 4
    """Micro-batches per optimizer step."""
    epochs: int = 1
    """Passes over the train rows."""
    max_steps: int = 0
    """Total optimizer steps, cycling epochs as needed (0 = ``epochs`` decide)."""
    time_budget_min: float = 0.0
    """Stop at the first step past this many minutes of training (0 = none)."""
    lr: float = 2e-4
    """Peak learning rate (AdamW), reached after ``warmup_steps``, then cosine decay to 10%."""
    warmup_steps: int = 10
    """Linear warm-up steps."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 = off)."""
    lora_r: int = 16
    """LoRA rank."""
    lora_alpha: int = 32
    """LoRA scaling numerator (update scaled by alpha / r)."""
    lora_dropout: float = 0.05
    """Dropout on the LoRA input."""
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    """Module name suffixes that get LoRA."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, ~30% more compute)."""
    strategy: Literal["deepspeed", "ddp"] = "deepspeed"
    """Distributed training: DeepSpeed ZeRO (``deepspeed_config``) or plain PyTorch DDP."""
    deepspeed_config: str = "configs/deepspeed/zero2.json"
    """DeepSpeed JSON (ZeRO stage etc.); batch sizes, clipping and precision are filled in from
    this section. Relative paths resolve against the working directory, then the repository."""
    num_workers: int = 1
    """Ray Train workers (gloo on CPU, nccl on GPU)."""
    cpus_per_worker: int = 1
    """CPUs per worker; also its torch thread count."""
    use_gpu: bool = False
    """One GPU per worker; bf16 autocast (fp32 on CPU)."""
    checkpoint_every: int = 50
    """Optimizer steps between checkpoints (a checkpoint is also taken at the end)."""
    max_failures: int = 2
    """Worker failures to recover from (from the latest checkpoint)."""
    log_every: int = 5
    """Optimizer steps between log lines / ``train_log.jsonl`` rows."""
    merged: bool = False
    """Also export base + adapter merged into one ordinary checkpoint."""
    seed: int = 0
    """Seed of LoRA / connector initialisation, row sampling and batch order."""

    def __post_init__(self) -> None:
        for task in self.tasks:
            require(task in ALIGN_TASKS, "tasks", f"unknown task {task!r} (known: {', '.join(ALIGN_TASKS)})")
        require(bool(self.tasks), "tasks", "must not be empty")
        for task, count in self.task_rows.items():
            require(task in self.tasks, "task_rows", f"{task!r} is not one of the tasks {self.tasks}")
            require(count >= 1, "task_rows", f"{task}: must be >= 1, got {count}")
        require(self.max_rows >= 0 and self.max_steps >= 0, "max_rows", "max_rows and max_steps must be >= 0")
        require(self.max_length >= 16, "max_length", "must be >= 16")
        require(self.micro_batch_size >= 1 and self.grad_accum >= 1, "micro_batch_size", "micro_batch_size and grad_accum must be >= 1")
        require(self.epochs >= 1, "epochs", "must be >= 1")
        require(self.lr > 0 and self.warmup_steps >= 0, "lr", "lr must be > 0 and warmup_steps >= 0")
        require(self.lora_r >= 1 and self.lora_alpha >= 1, "lora_r", "lora_r and lora_alpha must be >= 1")
        require(0.0 <= self.lora_dropout < 1.0, "lora_dropout", "must be in [0, 1)")
        require(bool(self.lora_targets), "lora_targets", "must not be empty")
        require(self.num_workers >= 1 and self.cpus_per_worker >= 1, "num_workers", "num_workers and cpus_per_worker must be >= 1")
        require(self.checkpoint_every >= 1 and self.log_every >= 1, "checkpoint_every", "checkpoint_every and log_every must be >= 1")
        require(self.max_failures >= -1, "max_failures", "must be >= -1 (-1: unlimited)")


EVAL_MODELS = ("aligned", "unaligned", "base", "base-icl", "popularity", "random")
EVAL_TASKS = ("t1", "t2", "t3", "t6", "item-recovery", "t7")


@dataclass
class EvaluateConfig:
    """RecExplainer's Table 1 protocol on the test rows (``evaluate``), with baselines."""

    models: list[str] = field(default_factory=lambda: list(EVAL_MODELS))
    """Models to evaluate: ``aligned`` (the align stage's export, on its form's rows), ``unaligned``
    (the same model before training: seeded connectors, no-op LoRA; same rows), ``base`` (the base LM
    zero-shot on behaviour rows), ``base-icl`` (the same with ``icl_shots`` train examples),
    ``popularity``, ``random``."""
    tasks: list[str] = field(default_factory=lambda: ["t1", "t2", "t3", "t6", "item-recovery"])
    """Tasks: t1 (HR/NDCG@k of k beams), t2 (graded NDCG@k), t3 (Yes/No logit accuracy), t6
    (history coverage ratio), item-recovery (T4 iid2title accuracy), t7 (added-item accuracy)."""
    form: str = ""
    """Rows the aligned and unaligned models answer (behaviour, intention, hybrid); empty: the
    form the aligned model was trained on (its ``recexp.json``)."""
    max_rows: int = 100
    """Test rows per task and form, the same examples in every form (seeded); 0 = all."""
    batch_size: int = 8
    """Prompts per generation batch."""
    candidates: int = 5
    """T1 beams (answers returned) and the k of HR@k / NDCG@k."""
    title_tokens: int = 48
    """New tokens for a one-title answer (T1, item recovery, T7)."""
    list_tokens: int = 160
    """New tokens for a list answer (T2, T6)."""
    fuzzy: float = 0.0
    """Fuzzy title grounding: the ``difflib`` ratio a title must reach (0 = exact normalised match)."""
    icl_shots: int = 2
    """``base-icl``: train examples put before each prompt."""
    icl_pool: int = 200
    """``base-icl``: train rows per task the examples are drawn from."""
    max_length: int = 2048
    """Longest prompt in tokens; longer prompts are skipped and counted."""
    device: str = "auto"
    """``auto`` (CUDA when available), ``cpu``, ``cuda``, ``cuda:1``..."""
    dtype: str = ""
    """LLM weights dtype: empty = float32; ``bf16`` on a GPU."""
    seed: int = 0
    """Seed of row selection, few-shot examples, fresh connectors and the random baseline."""
    samples: int = 3
    """Answers per model and task kept in ``samples.json``."""
    compare: list[str] = field(default_factory=list)
    """Run ids whose committed ``evaluate`` metrics go beside this run's in ``comparison.md``."""
    explanations: bool = False
    """Also score the committed ``explain`` stage's explanations (task ``explanations``: unique-sentence
    ratio, length, faithfulness of cited history items); ``evaluate.max_rows`` of them, 0 = all."""
    explanation_runs: list[str] = field(default_factory=list)
    """More runs with a committed ``explain`` stage (e.g. another form's adapter) whose explanations of
    the same (user, item) pairs are sources for the distinction classifier (and are judged as models
    named by their run id)."""
    classifiers: bool = True
    """With ``explanations``: RecExplainer's distinction classifier (which source wrote an explanation;
    needs >= 2 sources) and coherence predictor (the recommender's score from the text), on
    sentence-encoder features, when at least ``classifier_min_rows`` explanations per source exist."""
    classifier_min_rows: int = 20
    """Fewest explanations (per source) the classifiers need; fewer: they are skipped and logged."""
    classifier_folds: int = 5
    """k of the seeded k-fold cross-validation of both classifiers."""
    classifier_l2: float = 1.0
    """L2 penalty of the logistic regression and the ridge regression."""
    encoder: str = "minilm"
    """Sentence encoder: ``minilm`` (all-MiniLM-L6-v2, fetched once with
    ``python -m recexp.explain.fetch_encoder``) or a local Hugging Face model directory."""

    def __post_init__(self) -> None:
        for model in self.models:
            require(model in EVAL_MODELS, "models", f"unknown model {model!r} (known: {', '.join(EVAL_MODELS)})")
        for task in self.tasks:
            require(task in EVAL_TASKS, "tasks", f"unknown task {task!r} (known: {', '.join(EVAL_TASKS)})")
        require(self.form in ("",) + FORMS, "form", f"one of {', '.join(FORMS)} or empty")
        for key in ("max_rows", "icl_shots", "samples"):
            require(getattr(self, key) >= 0, key, "must be >= 0")
        for key in ("batch_size", "candidates", "title_tokens", "list_tokens", "icl_pool", "max_length"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(0.0 <= self.fuzzy <= 1.0, "fuzzy", "must be in [0, 1]")
        require(self.classifier_min_rows >= 2, "classifier_min_rows", "must be >= 2")
        require(2 <= self.classifier_folds <= self.classifier_min_rows, "classifier_folds",
                "must be >= 2 and <= classifier_min_rows")
        require(self.classifier_l2 > 0, "classifier_l2", "must be > 0")
        require(bool(self.encoder.strip()), "encoder", "must not be empty")


@dataclass
class ExplainConfig:
    """Batch explanations of recommendations (``explain``): a Ray Data actor pool of LLM workers."""

    pairs: str = ""
    """Parquet or CSV file (local or ``s3://``) of ``user_id, item_id`` pairs to explain; empty:
    every user (or ``users``) x their top-``k`` items from ``train-recommender``'s topk.parquet."""
    users: list[int] = field(default_factory=list)
    """Top-k mode: only these user ids (empty: all users)."""
    k: int = 5
    """Top-k mode: items explained per user (the first ``k`` of the user's last exported ranking)."""
    form: str = ""
    """Prompt form (behaviour, intention, hybrid); empty: the form the aligned model was trained on."""
    template: int = 0
    """Index of the ``uidiid2explan`` template used for every prompt (fixed: same request, same
    prompt), and of the ``explain_followup`` question asked after the answer."""
    follow_up: bool = True
    """Explain in two turns: the Yes / No answer from one forward over the explanation prompt,
    then the explanation as the reply to a plain-text "why?" turn (an aligned model trained on
    short answers stops after "Yes" otherwise); false: one pass from the prompt itself."""
    max_new_tokens: int = 64
    """Most tokens generated per explanation."""
    do_sample: bool = False
    """Sample (``temperature``, ``top_p``) instead of greedy / beam decoding."""
    temperature: float = 1.0
    """Sampling temperature (``do_sample`` only)."""
    top_p: float = 1.0
    """Nucleus sampling mass (``do_sample`` only)."""
    num_beams: int = 1
    """Beam search width (1 = greedy or sampling)."""
    repetition_penalty: float = 1.0
    """``generate``'s repetition penalty (1 = none)."""
    batch_size: int = 16
    """Prompts per generation batch (length-sorted, left-padded, KV cache)."""
    partition_size: int = 256
    """Requests per committed partition: the unit of resumption after a kill."""
    actors: int = 2
    """LLM workers in the Ray Data actor pool."""
    cpus_per_actor: int = 1
    """CPUs reserved per worker; also its torch thread count."""
    num_gpus: float | None = None
    """GPUs per worker; unset: 1 when the Ray cluster has GPUs, else 0."""
    dtype: str = ""
    """LLM weights dtype: empty = bf16 on a GPU, float32 on CPU."""
    max_prompt_tokens: int = 2048
    """Longest prompt in tokens (a longer one is an error naming the request)."""
    reuse_runs: list[str] = field(default_factory=list)
    """Earlier runs whose committed explanations are copied instead of regenerated when their
    (user, item, adapter) matches a request (ignored with ``force=true``); each output carries
    its reused rows, so last night's run alone covers all earlier ones."""

    def __post_init__(self) -> None:
        require(self.form in ("",) + FORMS, "form", f"one of {', '.join(FORMS)} or empty")
        for key in ("k", "max_new_tokens", "num_beams", "batch_size", "partition_size", "actors", "cpus_per_actor",
                    "max_prompt_tokens"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        require(self.template >= 0, "template", "must be >= 0")
        require(self.temperature > 0 and 0 < self.top_p <= 1, "temperature", "need temperature > 0, 0 < top_p <= 1")
        require(self.repetition_penalty > 0, "repetition_penalty", "must be > 0")
        require(self.num_gpus is None or self.num_gpus >= 0, "num_gpus", "must be >= 0")


@dataclass
class JudgeConfig:
    """LLM judge of explanations (RecExplainer's 0-3 rubric) over any OpenAI-compatible
    ``/chat/completions`` endpoint; ``evaluate`` asks it when ``evaluate.explanations`` is set and
    ``base_url`` is not empty."""

    base_url: str = ""
    """Endpoint base URL up to ``/v1`` (``http://127.0.0.1:8000/v1``; the judge POSTs to
    ``<base_url>/chat/completions``); empty: no judge."""
    model: str = ""
    """Model name sent in every request (``gpt-4o``, or ``recexp`` for this project's server)."""
    api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key, sent as ``Authorization: Bearer``; unset or empty
    variable: no header. The key itself is never stored in configs or artifacts."""
    rubric: str = ""
    """YAML file with ``system`` and ``user`` templates (``$history``, ``$item``, ``$explanation``);
    empty: the built-in RecExplainer rubric (``recexp/explain/judge_rubric.yaml``)."""
    max_rows: int = 100
    """Explanations judged per source (the first ones by user and item); 0 = all."""
    max_tokens: int = 64
    """Most tokens of a judge reply."""
    temperature: float = 0.0
    """Judge sampling temperature (0 = greedy, reproducible)."""
    timeout_s: float = 60.0
    """Seconds one HTTP request may take."""
    retries: int = 3
    """Retries of a request after a connection error, a timeout, HTTP 408, 429 or 5xx."""
    backoff_s: float = 1.0
    """Wait before retry ``i`` (0-based): ``backoff_s * 2**i`` seconds (longer when the endpoint's
    ``Retry-After`` says so)."""
    concurrency: int = 4
    """Requests in flight at once."""

    def __post_init__(self) -> None:
        url = self.base_url.strip()
        require(not url or url.startswith(("http://", "https://")), "base_url", "must start with http:// or https://")
        require(not url or bool(self.model.strip()), "model", "must be set when judge.base_url is")
        require(not self.api_key_env or self.api_key_env.replace("_", "a").isalnum(), "api_key_env",
                "must be an environment variable name (letters, digits, '_')")
        for key in ("max_tokens", "concurrency"):
            require(getattr(self, key) >= 1, key, "must be >= 1")
        for key in ("max_rows", "retries", "temperature", "backoff_s"):
            require(getattr(self, key) >= 0, key, "must be >= 0")
        require(self.timeout_s > 0, "timeout_s", "must be > 0")


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
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    align: AlignConfig = field(default_factory=AlignConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
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
