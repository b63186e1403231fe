"""Tests of the synthetic Amazon 2018 generator: format, invariants, determinism, structure."""

from __future__ import annotations

import collections
import datetime
import gzip
import json
import random
import re
from pathlib import Path

import fsspec
import pytest

from recexp.data import synthetic
from recexp.data.synthetic import SyntheticSummary, generate

REVIEW_KEYS = ["overall", "verified", "reviewTime", "reviewerID", "asin", "reviewerName",
               "reviewText", "summary", "unixReviewTime"]
META_KEYS = ["asin", "title", "brand", "category", "description", "price"]
T2012 = int(datetime.datetime(2012, 1, 1, tzinfo=datetime.timezone.utc).timestamp())
T2019 = int(datetime.datetime(2019, 1, 1, tzinfo=datetime.timezone.utc).timestamp())


def _lines(path: str) -> list[str]:
    data = Path(path).read_bytes()
    if path.endswith(".gz"):
        data = gzip.decompress(data)
    text = data.decode("utf-8")
    assert text.endswith("\n")
    return text[:-1].split("\n")


def _reviews(summary: SyntheticSummary) -> list[dict]:
    return [json.loads(line) for path in summary.review_files for line in _lines(path)]


def _meta(summary: SyntheticSummary) -> dict[str, dict]:
    records = [json.loads(line) for line in _lines(summary.meta_file)]
    by_asin = {r["asin"]: r for r in records}
    assert len(by_asin) == len(records), "duplicate asin in metadata"
    return by_asin


def _sequences(reviews: list[dict]) -> dict[str, list[str]]:
    """Chronological asin sequence per reviewer."""
    events = collections.defaultdict(list)
    for r in reviews:
        events[r["reviewerID"]].append((r["unixReviewTime"], r["asin"]))
    return {u: [a for _, a in sorted(v)] for u, v in events.items()}


def _all_bytes(summary: SyntheticSummary) -> list[bytes]:
    return [Path(p).read_bytes() for p in [*summary.review_files, summary.meta_file]]


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSummary:
    """12,345 interactions in shards of 4,000 lines."""
    return generate(str(tmp_path_factory.mktemp("small")), 12_345, seed=3, shard_lines=4_000)


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSummary:
    """Large enough for the structure statistics to be stable (1,600 items, ~4,200 users)."""
    return generate(str(tmp_path_factory.mktemp("medium")), 40_000, seed=0)


@pytest.fixture(scope="module")
def medium_reviews(medium: SyntheticSummary) -> list[dict]:
    return _reviews(medium)


@pytest.fixture(scope="module")
def medium_sequences(medium_reviews: list[dict]) -> dict[str, list[str]]:
    return _sequences(medium_reviews)


def test_exact_line_count_and_shards(small: SyntheticSummary) -> None:
    sizes = [len(_lines(p)) for p in small.review_files]
    assert sizes == [4_000, 4_000, 4_000, 345]
    assert [Path(p).name for p in small.review_files] == [
        f"reviews-{i:05d}.json" for i in range(4)]
    assert Path(small.meta_file).name == "meta.json"
    reviews = _reviews(small)
    assert small.num_interactions == len(reviews) == 12_345
    assert small.num_users == len({r["reviewerID"] for r in reviews})
    assert small.num_items == len(_meta(small)) == 12_345 // 25


@pytest.mark.parametrize("n", [5, 7, 9, 11, 57])
def test_tiny_totals_keep_five_per_user(tmp_path: Path, n: int) -> None:
    summary = generate(str(tmp_path), n)
    counts = collections.Counter(r["reviewerID"] for r in _reviews(summary))
    assert sum(counts.values()) == n and summary.num_users == len(counts)
    assert min(counts.values()) >= 5


def test_deterministic_by_seed(tmp_path: Path, small: SyntheticSummary) -> None:
    again = generate(str(tmp_path / "a"), 12_345, seed=3, shard_lines=4_000)
    assert _all_bytes(again) == _all_bytes(small)
    other = generate(str(tmp_path / "b"), 12_345, seed=4, shard_lines=4_000)
    assert [p.rsplit("/", 1)[1] for p in other.review_files] == [
        p.rsplit("/", 1)[1] for p in small.review_files]
    old, new = _all_bytes(small), _all_bytes(other)
    assert all(a != b for a, b in zip(old, new))


def test_reviews_independent_of_layout_and_titles(tmp_path: Path, small: SyntheticSummary,
                                                  ) -> None:
    other = generate(str(tmp_path), 12_345, seed=3, shard_lines=1_000, missing_title_fraction=0.5)
    assert len(other.review_files) == 13
    assert b"".join(_all_bytes(other)[:-1]) == b"".join(_all_bytes(small)[:-1])


def test_review_lines_have_amazon_2018_fields(small: SyntheticSummary) -> None:
    for line in (line for p in small.review_files for line in _lines(p)):
        r = json.loads(line)
        assert list(r) == REVIEW_KEYS
        assert type(r["overall"]) is float and r["overall"] in {1.0, 2.0, 3.0, 4.0, 5.0}
        assert type(r["verified"]) is bool
        assert type(r["unixReviewTime"]) is int and T2012 <= r["unixReviewTime"] < T2019
        day = datetime.datetime.fromtimestamp(r["unixReviewTime"], datetime.timezone.utc)
        assert r["reviewTime"] == f"{day.month:02d} {day.day}, {day.year}"
        assert re.fullmatch(r"A[0-9A-Z]{12}", r["reviewerID"])
        assert re.fullmatch(r"B0[0-9A-Z]{8}", r["asin"])
        for key in ("reviewerName", "reviewText", "summary"):
            assert isinstance(r[key], str) and r[key]
        assert len(r["reviewText"]) < 40  # short, so big files stay manageable


def test_ratings_skew_high(small: SyntheticSummary) -> None:
    stars = collections.Counter(r["overall"] for r in _reviews(small))
    assert stars[5.0] > 0.5 * small.num_interactions
    assert stars[5.0] > stars[4.0] > stars[3.0] and stars[1.0] > 0


def test_metadata_records(small: SyntheticSummary) -> None:
    platforms = set(synthetic.PLATFORMS)
    for asin, m in _meta(small).items():
        assert list(m) == META_KEYS
        assert re.fullmatch(r"B0[0-9A-Z]{8}", asin)
        assert isinstance(m["title"], str) and m["title"] and isinstance(m["brand"], str)
        cat = m["category"]
        assert cat[0] == "Video Games" and cat[1] in platforms
        assert cat[2] in {"Games", "Accessories"} and all(isinstance(c, str) for c in cat)
        assert 1 <= len(m["description"]) <= 2
        assert all(isinstance(s, str) and s.endswith(".") for s in m["description"])
        assert re.fullmatch(r"\$\d+\.\d\d", m["price"])


def test_sequences_are_valid(medium: SyntheticSummary, medium_reviews: list[dict]) -> None:
    reviews = medium_reviews
    meta = _meta(medium)
    assert all(r["asin"] in meta for r in reviews)
    pairs = [(r["reviewerID"], r["asin"]) for r in reviews]
    assert len(set(pairs)) == len(pairs), "a user reviewed an item twice"
    times = collections.defaultdict(list)
    for r in reviews:
        times[r["reviewerID"]].append(r["unixReviewTime"])
    lengths = [len(t) for t in times.values()]
    assert min(lengths) >= 5 and max(lengths) <= 54
    assert 8.5 <= sum(lengths) / len(lengths) <= 10.5
    assert len(set(lengths)) > 20  # lengths vary
    # Distinct days per user, so chronological order is unambiguous.
    assert all(len(set(t)) == len(t) for t in times.values())
    # File order is shuffled: a reader must sort by time.
    assert any(t != sorted(t) for t in times.values())


def test_missing_title_fraction(tmp_path: Path) -> None:
    summary = generate(str(tmp_path), 3_000, missing_title_fraction=0.1)
    meta = list(_meta(summary).values())
    untitled = [m for m in meta if "title" not in m]
    assert len(meta) == 200 and len(untitled) == 20
    assert all(list(m) == [k for k in META_KEYS if k != "title"] for m in untitled)


def test_gzip_output_matches_plain(tmp_path: Path, small: SyntheticSummary) -> None:
    packed = generate(str(tmp_path), 12_345, seed=3, shard_lines=4_000, compress=True)
    assert all(p.endswith(".json.gz") for p in [*packed.review_files, packed.meta_file])
    for gz, plain in zip([*packed.review_files, packed.meta_file],
                         [*small.review_files, small.meta_file]):
        assert gzip.decompress(Path(gz).read_bytes()) == Path(plain).read_bytes()
    again = generate(str(tmp_path / "again"), 12_345, seed=3, shard_lines=4_000, compress=True)
    assert _all_bytes(again) == _all_bytes(packed)  # gzip header has no time or name


def test_writes_through_fsspec_filesystem(small: SyntheticSummary) -> None:
    fs = fsspec.filesystem("memory")
    summary = generate("/synthetic-test/out", 12_345, seed=3, shard_lines=4_000, filesystem=fs)
    try:
        assert summary.review_files[0] == "/synthetic-test/out/reviews-00000.json"
        got = [fs.cat_file(p) for p in [*summary.review_files, summary.meta_file]]
        assert got == _all_bytes(small)
    finally:
        fs.rm("/synthetic-test", recursive=True)


def test_popularity_has_a_long_tail(medium: SyntheticSummary, medium_reviews: list[dict]) -> None:
    counts = sorted(collections.Counter(r["asin"] for r in medium_reviews).values(),
                    reverse=True)
    top = sum(counts[: medium.num_items // 10]) / medium.num_interactions
    assert top > 0.3  # 3x what a uniform catalog gives


def test_structure_is_learnable(medium_sequences: dict[str, list[str]]) -> None:
    """A first-order Markov model must beat popularity by far at predicting the last item."""
    seqs = medium_sequences
    users = sorted(seqs)
    test_users, train_users = users[::5], [u for i, u in enumerate(users) if i % 5]
    transitions: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    popularity: collections.Counter = collections.Counter()
    for u in train_users:
        popularity.update(seqs[u])
        for a, b in zip(seqs[u], seqs[u][1:]):
            transitions[a][b] += 1
    ranked = [a for a, _ in popularity.most_common()]
    hits = {"markov": 0, "popularity": 0}
    for u in test_users:
        *history, target = seqs[u]
        seen = set(history)
        top_pop = [a for a in ranked if a not in seen][:10]
        top_markov = [a for a, _ in transitions[history[-1]].most_common() if a not in seen][:10]
        top_markov += [a for a in top_pop if a not in top_markov][: 10 - len(top_markov)]
        hits["popularity"] += target in top_pop
        hits["markov"] += target in top_markov
    markov, pop = (hits[k] / len(test_users) for k in ("markov", "popularity"))
    assert markov > 0.2 and markov > 3 * pop, (markov, pop)


def test_consecutive_items_share_platform_and_publisher(
        medium: SyntheticSummary, medium_sequences: dict[str, list[str]]) -> None:
    """Order matters: neighbours agree on (platform, publisher) far more than after shuffling."""
    meta = _meta(medium)
    seqs = list(medium_sequences.values())

    def agreement(sequences: list[list[str]]) -> float:
        key = {a: (m["category"][1], m["brand"]) for a, m in meta.items()}
        pairs = [(a, b) for s in sequences for a, b in zip(s, s[1:])]
        return sum(key[a] == key[b] for a, b in pairs) / len(pairs)

    rng = random.Random(0)
    shuffled = [rng.sample(s, len(s)) for s in seqs]
    assert agreement(seqs) > agreement(shuffled) + 0.1


@pytest.mark.parametrize("kwargs", [
    {"num_interactions": 4},
    {"num_interactions": 100, "num_items": 50},
    {"num_interactions": 100, "shard_lines": 0},
    {"num_interactions": 100, "missing_title_fraction": 1.5},
    {"num_interactions": 100, "seed": -1},
])
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate(str(tmp_path), **kwargs)


def test_cli_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert synthetic.main([str(tmp_path / "cli"), "--interactions", "500", "--seed", "2",
                           "--compress"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["num_interactions"] == 500 and printed["num_items"] == 200
    assert printed["meta_file"].endswith("meta.json.gz")
    assert all(Path(p).exists() for p in printed["review_files"])
