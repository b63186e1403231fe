"""Recipe: evaluate — RecExplainer's Table 1 protocol on the test split, against baselines.

    recexp evaluate --config configs/demo.yaml [evaluate.max_rows=50 ...]
    recexp evaluate store.root=./artifacts run_id=<run> evaluate.max_rows=50 \\
        [inputs.align=<run> inputs.build-alignment-data=<run> inputs.ingest=<run>]
    python -m ray_jobs.evaluate --config ... [key=value ...]        # what `ray job submit` runs

Inputs: ``align/model/`` (the aligned export and its ``recexp.json``), ``build-alignment-data``
(test rows per task and form, train rows for the few-shot prompts, ``catalog.parquet``) and
``ingest`` (sequences: popularity counts, the histories the baselines skip).

setup:     read the selected test rows (``evaluate.max_rows`` per task, the same examples in
           every form), the catalog and the popularity counts.
aligned:   the export on its form's rows (``evaluate.form`` overrides).
unaligned: the align stage's model before training (base LM, seeded connectors, LoRA at its
           no-op init; ``recexp.explain.models``) on the same rows (``unaligned``), and on
           behaviour rows zero-shot (``base``) and with ``evaluate.icl_shots`` train examples
           (``base-icl``).
baselines: ``popularity`` and ``random`` on the same examples.
explanations (``evaluate.explanations=true``): the committed ``explain`` stage's explanations
           (``inputs.explain=<run>``): unique-sentence ratio, length, and faithfulness of the
           history items they cite against leave-one-out attribution with the recommender
           (``recexp.explain.quality``). The pipeline runs ``explain`` after ``evaluate``, so this
           is a second evaluation (another ``run_id`` with ``inputs.*``, or ``force=true``).
           With ``judge.base_url``: RecExplainer's 0-3 LLM judge over HTTP; with
           ``evaluate.classifiers`` (default) and enough rows: the distinction classifier (this run's
           explanations vs those of ``evaluate.explanation_runs``) and the coherence predictor on
           sentence embeddings (``recexp.explain.explanation_eval``).
commit:    ``metrics.json`` (flat ``<model>/<task>/<metric>``), ``table.md``, ``metrics.png``,
           ``samples.json``, and ``comparison.md`` beside the runs of ``evaluate.compare``.

The work is local to this process (one model at a time, on the GPU when there is one): the
row limit, not a cluster, bounds it. Compare committed runs later with
``python -m recexp.explain.report --store ROOT RUN_A RUN_B``.
"""

from __future__ import annotations

import gc
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow.dataset as pads

from recexp.cli import run_main
from recexp.config import EvaluateConfig
from recexp.errors import DataError
from recexp.explain import report
from recexp.explain.baselines import popularity_order, random_order
from recexp.explain.eval_rows import TASKS, Row, few_shot_rows, read_rows, select
from recexp.explain.encoder import load_encoder
from recexp.explain.evaluate import Evaluation, evaluate_baseline, evaluate_llm
from recexp.explain.explanation_eval import MAIN_SOURCE, judge_sources, probe_sources
from recexp.explain.models import load_unaligned, resolve_device
from recexp.explain.quality import explanation_quality
from recexp.llm.aligned import AlignedLM
from recexp.llm.collate import Collator
from recexp.llm.export import MANIFEST_FILE, load_aligned
from recexp.recommender.export import load as load_recommender
from recexp.recommender.popularity import Popularity
from recexp.runner import StageContext, log, run_stage
from recexp.store import StageDir

STAGE = "evaluate"
MODEL_DIR = "model"
BEHAVIOUR = "behaviour"
EXPLANATIONS_DIR = "explanations"
EXPLANATION_COLUMNS = ("user_id", "item_id", "position", "explanation", "rec_score")
HEADLINE = ("t1/hr@5", "t3/acc")
"""Metrics repeated in the stage summary (the pipeline prints it); all are in ``metrics.json``."""


@dataclass
class Inputs:
    """Everything read from the upstream stages."""

    titles: list[str]
    manifest: dict[str, Any]
    form: str
    rows: dict[str, dict[str, list[Row]]]
    """``{form: {task: selected test rows}}`` for the evaluated form and ``behaviour``."""
    icl: dict[str, list[Row]]
    """Behaviour rows with the few-shot examples in front, per task."""
    sequences: dict[int, np.ndarray]
    counts: np.ndarray


def selected_rows(data: StageDir, cfg: EvaluateConfig, form: str) -> dict[str, list[Row]]:
    """The selected test rows of every task that has rows in ``form``."""
    selected = {task: select(read_rows(data, TASKS[task], form, "test"), cfg.max_rows, cfg.seed) for task in cfg.tasks}
    return {task: rows for task, rows in selected.items() if rows}


def icl_rows(data: StageDir, cfg: EvaluateConfig, behaviour: dict[str, list[Row]]) -> dict[str, list[Row]]:
    """Behaviour test rows preceded by ``icl_shots`` train examples of the same task."""
    out = {}
    for task, rows in behaviour.items():
        pool = read_rows(data, TASKS[task], BEHAVIOUR, "train", head=cfg.icl_pool)
        out[task] = few_shot_rows(rows, pool, cfg.icl_shots, cfg.seed)
    return out


def read_sequences(ingest: StageDir, n_items: int) -> tuple[dict[int, np.ndarray], np.ndarray]:
    """``{user: chronological item ids}`` and the training-interaction count of every item."""
    table = ingest.read_table("sequences.parquet", columns=["user_id", "item_ids"])
    counts = Popularity.fit(table["item_ids"], n_items, table["user_id"].to_numpy()).counts.numpy()
    users = table["user_id"].to_pylist()
    return {int(u): np.asarray(s, dtype=np.int64) for u, s in zip(users, table["item_ids"].to_pylist())}, counts


def aligned_form(cfg: EvaluateConfig, manifest: dict[str, Any]) -> str:
    """``evaluate.form``, else the form the export was trained on."""
    form = cfg.form or manifest.get("form") or ""
    if not form:
        raise DataError(f"the aligned model's {MANIFEST_FILE} names no form; set evaluate.form")
    return str(form)


def prepare(ctx: StageContext) -> Inputs:
    """Read the test rows, few-shot rows, catalog and popularity from the upstream stages."""
    cfg = ctx.cfg.evaluate
    align, data, ingest = ctx.input("align"), ctx.input("build-alignment-data"), ctx.input("ingest")
    if not align.exists(f"{MODEL_DIR}/{MANIFEST_FILE}"):
        raise DataError(f"upstream stage 'align' has no aligned model at {align.url(MODEL_DIR)}")
    if not data.exists("catalog.parquet"):
        raise DataError(f"upstream stage 'build-alignment-data' has no catalog.parquet at {data.url()}")
    manifest = align.read_json(f"{MODEL_DIR}/{MANIFEST_FILE}")
    form = aligned_form(cfg, manifest)
    titles = data.read_table("catalog.parquet", columns=["title"])["title"].to_pylist()
    rows = {form: selected_rows(data, cfg, form)}
    if {"base", "base-icl"} & set(cfg.models):
        rows[BEHAVIOUR] = selected_rows(data, cfg, BEHAVIOUR)
    icl = icl_rows(data, cfg, rows[BEHAVIOUR]) if "base-icl" in cfg.models else {}
    sequences, counts = read_sequences(ingest, len(titles))
    if cfg.tasks and not rows[form]:
        raise DataError(f"build-alignment-data has no {form} test rows for tasks {cfg.tasks}")
    return Inputs(titles, manifest, form, rows, icl, sequences, counts)


def to_device(model: AlignedLM, device: str) -> AlignedLM:
    """The model and its (non-submodule) recommender on ``device``."""
    target = resolve_device(device)
    model.recommender.to(target)
    return model.to(target)


def evaluate_aligned(ctx: StageContext, inputs: Inputs) -> Evaluation:
    """The aligned export on its form's rows."""
    cfg = ctx.cfg.evaluate
    if "aligned" not in cfg.models:
        return Evaluation()
    model, tokenizer = load_aligned(
        ctx.input("align").url(MODEL_DIR), dtype=cfg.dtype or None, endpoint_url=ctx.cfg.store.endpoint_url
    )
    model = to_device(model, cfg.device)
    collator = Collator(tokenizer, model.slots, cfg.max_length)
    return evaluate_llm("aligned", model, collator, inputs.rows[inputs.form], inputs.titles, cfg)


def evaluate_unaligned(ctx: StageContext, inputs: Inputs) -> Evaluation:
    """``unaligned`` on the aligned form's rows, ``base`` / ``base-icl`` on behaviour rows."""
    cfg = ctx.cfg.evaluate
    runs = {"unaligned": inputs.rows[inputs.form], "base": inputs.rows.get(BEHAVIOUR, {}), "base-icl": inputs.icl}
    wanted = {name: rows for name, rows in runs.items() if name in cfg.models and rows}
    if "unaligned" in wanted and inputs.form == BEHAVIOUR and "base" in wanted:
        log("evaluate: form is behaviour, so 'unaligned' would repeat 'base'; skipping it")
        wanted.pop("unaligned")
    result = Evaluation()
    if not wanted:
        return result
    model, tokenizer = load_unaligned(
        inputs.manifest, seed=cfg.seed, dtype=cfg.dtype or None, endpoint_url=ctx.cfg.store.endpoint_url
    )
    model = to_device(model, cfg.device)
    collator = Collator(tokenizer, model.slots, cfg.max_length)
    for name, rows in wanted.items():
        with ctx.phase(name):
            result.add(evaluate_llm(name, model, collator, rows, inputs.titles, cfg))
    return result


def evaluate_baselines(cfg: EvaluateConfig, inputs: Inputs) -> Evaluation:
    """``popularity`` and ``random`` on the aligned form's examples (behaviour for tasks it lacks)."""
    rows = {**inputs.rows.get(BEHAVIOUR, {}), **inputs.rows[inputs.form]}
    orders = {"popularity": popularity_order(inputs.counts), "random": random_order(len(inputs.titles), cfg.seed)}
    result = Evaluation()
    for name, order in orders.items():
        if name in cfg.models:
            result.add(evaluate_baseline(name, order, rows, inputs.sequences, cfg))
    return result


def read_explanations(explain: StageDir) -> list[dict[str, Any]]:
    """The written explanations of a committed ``explain`` stage (with ``rec_score`` when it has one)."""
    names = pads.dataset(explain.child(EXPLANATIONS_DIR), filesystem=explain.arrow_fs(), format="parquet").schema.names
    table = explain.read_table(EXPLANATIONS_DIR, columns=[c for c in EXPLANATION_COLUMNS if c in names])
    return [r for r in table.to_pylist() if r["explanation"]]


def judge_and_probes(ctx: StageContext, inputs: Inputs, written: list[dict[str, Any]], max_hist: int) -> Evaluation:
    """The LLM judge (when ``judge.base_url`` is set) and the classifiers (``evaluate.classifiers``)
    over this run's explanations and those of ``evaluate.explanation_runs``."""
    cfg = ctx.cfg.evaluate
    sources = {MAIN_SOURCE: written}
    sources.update({run: read_explanations(ctx.store.committed(run, "explain")) for run in cfg.explanation_runs})
    out = Evaluation()
    if ctx.cfg.judge.base_url:
        out.add(judge_sources(sources, inputs.sequences, inputs.titles, max_hist, ctx.cfg.judge, cfg.samples,
                              ctx.cfg.store.endpoint_url))
    if cfg.classifiers:
        out.metrics.update(probe_sources(sources, lambda: load_encoder(cfg.encoder, resolve_device(cfg.device)), cfg))
    return out


def evaluate_explanations(ctx: StageContext, inputs: Inputs) -> Evaluation:
    """Diversity, length and faithfulness of the committed ``explain`` stage's explanations, and
    the judge and classifiers (:func:`judge_and_probes`)."""
    cfg = ctx.cfg.evaluate
    explain = ctx.input("explain")
    written = read_explanations(explain)
    rows = sorted(written, key=lambda r: (r["user_id"], r["item_id"]))[: cfg.max_rows or None]
    if not rows:
        raise DataError(f"upstream stage 'explain' has no explanations at {explain.url(EXPLANATIONS_DIR)}")
    manifest = ctx.store.manifest(ctx.upstream["explain"], "explain") or {}
    max_hist = manifest.get("config", {}).get("tasks", {}).get("max_hist", ctx.cfg.tasks.max_hist)
    recommender = load_recommender(inputs.manifest["recommender"]["uri"], endpoint_url=ctx.cfg.store.endpoint_url)
    metrics, records = explanation_quality(recommender, rows, inputs.sequences, inputs.titles, int(max_hist))
    task = report.EXPLANATIONS
    samples = [{"model": "aligned", "task": task, "explanation": r["explanation"], "user_id": r["user_id"],
                "item_id": r["item_id"], **record} for r, record in list(zip(rows, records))[: cfg.samples]]
    metrics["rows"] = float(len(rows))
    result = Evaluation({f"aligned/{task}/{k}": v for k, v in metrics.items()}, samples)
    result.add(judge_and_probes(ctx, inputs, written, int(max_hist)))
    return result


def write_report(ctx: StageContext, inputs: Inputs, result: Evaluation) -> None:
    """``metrics.json``, ``table.md``, ``metrics.png``, ``samples.json``, ``comparison.md``."""
    metrics = dict(sorted(result.metrics.items()))
    ctx.out.write_json("metrics.json", metrics)
    ctx.out.write_json("samples.json", result.samples)
    title = f"run {ctx.run_id}: aligned form {inputs.form}"
    with ctx.out.open("table.md", "w") as f:
        f.write(f"# Alignment evaluation, {title}\n\n" + report.metrics_table(metrics))
    with ctx.out.open("metrics.png", "wb") as f:
        report.bar_chart(metrics, f, title)
    if ctx.cfg.evaluate.compare:
        runs = {run: ctx.store.committed(run, STAGE).read_json("metrics.json") for run in ctx.cfg.evaluate.compare}
        runs[ctx.run_id] = metrics
        with ctx.out.open("comparison.md", "w") as f:
            f.write(report.comparison_table(runs))


def run(ctx: StageContext) -> dict[str, Any]:
    cfg = ctx.cfg.evaluate
    with ctx.phase("prepare"):
        inputs = prepare(ctx)
    counts = {form: {task: len(rows) for task, rows in by_task.items()} for form, by_task in inputs.rows.items()}
    log(f"evaluate: form {inputs.form}; test rows {counts}")
    with ctx.phase("aligned"):
        result = evaluate_aligned(ctx, inputs)
    gc.collect()  # the aligned model is gone: free it before the unaligned one loads
    result.add(evaluate_unaligned(ctx, inputs))
    with ctx.phase("baselines"):
        result.add(evaluate_baselines(cfg, inputs))
    if cfg.explanations:
        with ctx.phase("explanations"):
            result.add(evaluate_explanations(ctx, inputs))
    with ctx.phase("report"):
        write_report(ctx, inputs, result)
    log("evaluate:\n" + report.metrics_table(result.metrics))
    headline = {k: round(v, 4) for k, v in sorted(result.metrics.items()) if k.split("/", 1)[1] in HEADLINE}
    return {"form": inputs.form, "rows": counts, **headline}


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(STAGE, lambda cfg: run_stage(STAGE, cfg, run), argv)


if __name__ == "__main__":
    sys.exit(main())
