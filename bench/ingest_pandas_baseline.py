"""Baseline for bench/ingest_scale.py: the same ingest done the obvious way in one pandas process.

Loads every review file whole with ``pandas.read_json(lines=True)``, then titles, dedup,
5-core and chronological sequences with pandas operations. No reject handling: it is the
"load everything" reference that the streaming recipe is compared with.

    .venv/bin/python bench/ingest_pandas_baseline.py DIR
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd


def main(directory: str) -> None:
    d = Path(directory)
    meta = pd.read_json(d / "meta.json", lines=True)
    meta = meta[meta["title"].fillna("").str.strip() != ""]
    reviews = pd.concat([pd.read_json(f, lines=True) for f in sorted(d.glob("reviews-*.json"))], ignore_index=True)
    df = reviews[["reviewerID", "asin", "unixReviewTime"]]
    df = df[df["asin"].isin(meta["asin"])]
    df = df.sort_values(["reviewerID", "unixReviewTime"], kind="stable").drop_duplicates(["reviewerID", "asin"])
    while True:  # iterative 5-core
        users = df.groupby("reviewerID")["asin"].transform("size")
        items = df.groupby("asin")["reviewerID"].transform("size")
        keep = (users >= 5) & (items >= 5)
        if keep.all():
            break
        df = df[keep]
    sequences = df.groupby("reviewerID", sort=False)["asin"].agg(list)
    out = d.parent / (d.name + "-pandas.parquet")
    sequences.reset_index().to_parquet(out)
    print(f"{len(sequences)} users, {df['asin'].nunique()} items, {len(df)} interactions")


if __name__ == "__main__":
    main(sys.argv[1])
