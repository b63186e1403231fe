"""Evaluation results for people: a Markdown table, a bar chart, several runs side by side.

Input is the flat metrics dict of :mod:`recexp.explain.evaluate` (``<model>/<task>/<metric>``).
Tables show the quality metrics (HR, NDCG, accuracy, HCR); bookkeeping values (``rows``,
``skipped``, ``grounded``) are summarised under the table. A missing value (a model that cannot
answer a task, e.g. the base model on slot-only tasks) shows as ``—``.

    python -m recexp.explain.report --store ./artifacts RUN_A RUN_B   # compare committed runs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

MODEL_ORDER = ("aligned", "unaligned", "base", "base-icl", "popularity", "random")
EXPLANATIONS = "explanations"
TASK_ORDER = ("t1", "t2", "t3", "t6", "item-recovery", "t7", EXPLANATIONS)
BOOKKEEPING = ("rows", "skipped", "grounded")
UNCHARTED = ("words_", "judge_", "coherence_", "distinction_sources", "distinction_rows")
"""Metric name prefixes not on a 0..1 scale (explanation lengths, judge scores 0-3 and counts,
R^2 and Pearson r, which can be negative): in the tables, not the chart."""
MISSING = "—"


def parse_key(key: str) -> tuple[str, str, str]:
    """``model/task/metric`` -> its three parts."""
    parts = key.split("/")
    if len(parts) != 3:
        raise ValueError(f"metric key {key!r} is not model/task/metric")
    return parts[0], parts[1], parts[2]


def _ordered(values: set[str], order: Sequence[str]) -> list[str]:
    """``values`` in ``order`` first, the rest alphabetically."""
    return [v for v in order if v in values] + sorted(values - set(order))


def quality_columns(metrics: Mapping[str, float]) -> list[tuple[str, str]]:
    """``(task, metric)`` pairs with a quality metric, tasks in protocol order."""
    pairs = {parse_key(k)[1:] for k in metrics if parse_key(k)[2] not in BOOKKEEPING}
    tasks = _ordered({t for t, _ in pairs}, TASK_ORDER)
    return [(t, m) for t in tasks for m in sorted(m for tt, m in pairs if tt == t)]


def models_of(metrics: Mapping[str, float]) -> list[str]:
    """Model names in the conventional order."""
    return _ordered({parse_key(k)[0] for k in metrics}, MODEL_ORDER)


def _cell(value: float | None) -> str:
    return MISSING if value is None else f"{value:.4f}"


def metrics_table(metrics: Mapping[str, float]) -> str:
    """One row per model, one column per task metric, then the rows scored per task, then the
    explanation metrics (if any) as their own table."""
    columns = [(t, m) for t, m in quality_columns(metrics) if t != EXPLANATIONS]
    lines = [
        "| model | " + " | ".join(f"{t} {m}" for t, m in columns) + " |",
        "| --- |" + " ---: |" * len(columns),
    ]
    for model in models_of(metrics):
        if any(f"{model}/{t}/{m}" in metrics for t, m in columns):
            cells = [_cell(metrics.get(f"{model}/{t}/{m}")) for t, m in columns]
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + bookkeeping_lines(metrics) + explanation_table(metrics)


def explanation_table(metrics: Mapping[str, float]) -> str:
    """``| model | metric | value |`` for the ``explanations`` task; empty when there is none."""
    keys = [k for k in metrics if parse_key(k)[1] == EXPLANATIONS and parse_key(k)[2] != "rows"]
    if not keys:
        return ""
    lines = ["", "| model | explanation metric | value |", "| --- | --- | ---: |"]
    lines += [f"| {parse_key(k)[0]} | {parse_key(k)[2]} | {metrics[k]:.4f} |" for k in sorted(keys)]
    return "\n".join(lines) + "\n" + probe_lines(metrics)


def probe_lines(metrics: Mapping[str, float]) -> str:
    """One line per judged model (mean, score histogram, unparsed replies) and the distinction
    accuracy against chance; empty when neither ran."""
    lines = []
    for model in models_of(metrics):
        values = {parse_key(k)[2]: v for k, v in metrics.items() if k.startswith(f"{model}/{EXPLANATIONS}/")}
        if "judge_n" in values:
            histogram = ", ".join(f"{s}: {int(values.get(f'judge_score_{s}', 0))}" for s in range(4))
            mean = f"{values['judge_mean']:.2f}" if "judge_mean" in values else MISSING
            lines.append(f"- {model}: judge mean {mean} (0-3) over {int(values['judge_n'])} explanations; "
                         f"scores {histogram}; {int(values['judge_unparsed'])} replies unparsed")
        if "distinction_acc" in values:
            lines.append(f"- distinction: accuracy {values['distinction_acc']:.4f} vs chance "
                         f"{values['distinction_chance']:.4f} ({int(values['distinction_sources'])} sources, "
                         f"{int(values['distinction_rows'])} explanations)")
    return ("\n" + "\n".join(lines) + "\n") if lines else ""


def bookkeeping_lines(metrics: Mapping[str, float]) -> str:
    """Rows scored per model and task, prompts skipped, share of answers grounded."""
    lines = []
    for model in models_of(metrics):
        parts = []
        for task in _ordered({parse_key(k)[1] for k in metrics if k.startswith(model + "/")}, TASK_ORDER):
            rows = metrics.get(f"{model}/{task}/rows")
            text = f"{task} {int(rows) if rows is not None else 0} rows"
            if f"{model}/{task}/grounded" in metrics:
                text += f" ({metrics[f'{model}/{task}/grounded']:.0%} grounded)"
            if f"{model}/{task}/skipped" in metrics:
                text += f", {int(metrics[f'{model}/{task}/skipped'])} too long"
            parts.append(text)
        lines.append(f"- {model}: " + "; ".join(parts))
    return "\n".join(lines) + "\n"


def comparison_table(runs: Mapping[str, Mapping[str, float]]) -> str:
    """Several runs (e.g. one per form) side by side: one row per model and task metric."""
    merged: dict[str, float] = {}
    for metrics in runs.values():
        merged.update({k: 0.0 for k in metrics})
    lines = ["| model | metric | " + " | ".join(runs) + " |", "| --- | --- |" + " ---: |" * len(runs)]
    for model in models_of(merged):
        for task, metric in quality_columns(merged):
            key = f"{model}/{task}/{metric}"
            if key in merged:
                cells = [_cell(m.get(key)) for m in runs.values()]
                lines.append(f"| {model} | {task} {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def bar_chart(metrics: Mapping[str, float], target: str | Path | IO[bytes], title: str = "") -> None:
    """Grouped bars: one group per task metric, one bar per model; PNG to a path or binary file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = [(t, m) for t, m in quality_columns(metrics) if not m.startswith(UNCHARTED)]
    models = models_of(metrics)
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.4 * len(columns) + 2), 4.0))
    for m, model in enumerate(models):
        xs = [c + (m - (len(models) - 1) / 2) * width for c in range(len(columns))]
        ys = [metrics.get(f"{model}/{t}/{name}", 0.0) for t, name in columns]
        ax.bar(xs, ys, width=width, label=model)
    ax.set_xticks(range(len(columns)), [f"{t}\n{name}" for t, name in columns])
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(title or "alignment metrics (test split)")
    ax.legend(fontsize=8, ncol=min(len(models), 3))
    fig.tight_layout()
    fig.savefig(target, format="png", dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Print the comparison table of committed ``evaluate`` stages."""
    from recexp.store import Store

    parser = argparse.ArgumentParser(prog="python -m recexp.explain.report", description=__doc__.split("\n")[0])
    parser.add_argument("--store", default="./artifacts", help="store root (local or s3://)")
    parser.add_argument("--endpoint-url", default=None, help="S3-compatible endpoint")
    parser.add_argument("runs", nargs="+", help="run ids with a committed evaluate stage")
    args = parser.parse_args(argv)
    store = Store(args.store, args.endpoint_url)
    runs = {run: store.committed(run, "evaluate").read_json("metrics.json") for run in args.runs}
    print(comparison_table(runs), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
