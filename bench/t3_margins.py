"""T3 diagnosis: the Yes - No margin of an aligned model on a seeded sample of train and test rows.

    .venv/bin/python bench/t3_margins.py --root ./artifacts --run signal3 --rows 60

Per split: the share of Yes labels, the accuracy of ``margin > 0``, the margin's ROC AUC and
the mean margin of Yes and of No rows. An accuracy near the Yes share with positive margins on
both label sets is a model that answers Yes everywhere (miscalibrated, or not learned: compare
the train split, which it was trained on).
"""

from __future__ import annotations

import argparse
import random
import statistics

import torch

from recexp.explain.eval_rows import TASKS, read_rows
from recexp.explain.generate import generate_batched
from recexp.explain.metrics import margin_auc
from recexp.explain.two_turn import answer_token_ids
from recexp.llm.collate import Collator
from recexp.llm.export import load_aligned
from recexp.store import Store


def split_report(model, collator: Collator, rows: list[dict], ids: tuple[int, int]) -> dict[str, float]:
    gen = generate_batched(model, collator, rows, batch_size=8, max_new_tokens=1, score_ids=ids)
    margins = [yes - no for yes, no in gen.first_scores or []]
    labels = [row["response"] for row in rows]
    return {
        "rows": len(rows), "yes_share": sum(label == "Yes" for label in labels) / len(rows),
        "acc": sum((m > 0) == (label == "Yes") for m, label in zip(margins, labels)) / len(rows),
        "auc": margin_auc(margins, labels),
        "mean_margin_yes": statistics.mean(m for m, label in zip(margins, labels) if label == "Yes"),
        "mean_margin_no": statistics.mean(m for m, label in zip(margins, labels) if label != "Yes"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="./artifacts")
    parser.add_argument("--run", required=True)
    parser.add_argument("--form", default="intention")
    parser.add_argument("--rows", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    store = Store(args.root)
    model, tokenizer = load_aligned(store.committed(args.run, "align").url("model"))
    collator = Collator(tokenizer, model.slots, 512)
    data = store.committed(args.run, "build-alignment-data")
    for split in ("train", "test"):
        rows = read_rows(data, TASKS["t3"], args.form, split)
        random.Random(0).shuffle(rows)
        report = split_report(model, collator, rows[: args.rows], answer_token_ids(tokenizer))
        print(split, {k: round(v, 3) for k, v in report.items()}, flush=True)


if __name__ == "__main__":
    main()
