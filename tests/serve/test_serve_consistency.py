"""The explain stage's Explainer and the service's ExplainerCore give the same answer and
explanation for the same (history, item), two-turn or one-pass (their components side by side on
the committed tiny run; no Ray needed)."""

from __future__ import annotations

import pyarrow as pa
import pytest
from serve_support import reference_explanations, serve_config

from recexp.explain.batch import Explainer, ExplainSettings
from recexp.explain.requests import REQUEST_SCHEMA
from recexp.llm.export import load_aligned
from recexp.serve.artifacts import encoder_url, load_catalog, model_url
from recexp.serve.explainer import DEFAULT, ExplainerCore
from recexp.tasks.templates import load_templates

PAIRS = [([1, 2, 3], 7), ([4, 5, 6, 7], 5), ([0, 8, 9], 1), ([12, 13], 19), ([15, 16, 17, 18], 3), ([5], 6)]


def requests_of(pairs: list[tuple[list[int], int]]) -> pa.Table:
    n = len(pairs)
    return pa.table({
        "user_id": [-1] * n, "item_id": [item for _, item in pairs], "rank": [-1] * n, "rec_score": [float("nan")] * n,
        "position": [len(history) for history, _ in pairs], "history": [history for history, _ in pairs],
    }, schema=REQUEST_SCHEMA)


def batch_stage(cfg, follow_up: bool) -> list[tuple[str, str]]:
    """What ``recexp explain`` writes for ``PAIRS`` with the serving settings (hybrid, template 0)."""
    model, tokenizer = load_aligned(model_url(cfg, "run-a"), recommender_uri=encoder_url(cfg))
    s = cfg.serve
    settings = ExplainSettings("hybrid", 0, cfg.tasks.max_hist, 4, s.max_new_tokens, s.max_prompt_tokens, "-", "run-a",
                               "t", follow_up=follow_up)
    table, _ = Explainer(model, tokenizer, load_catalog(cfg), load_templates(), settings).explain(requests_of(PAIRS))
    return list(zip(table["answer"].to_pylist(), table["explanation"].to_pylist()))


def service(cfg) -> list[tuple[str, str]]:
    """What ``POST /v1/explain`` answers for ``PAIRS`` in one dynamic batch."""
    core = ExplainerCore(cfg)
    adapter = core.resident[DEFAULT]
    got = core.explain_batch(adapter, [core.explain_row(adapter, history, item, -1) for history, item in PAIRS])
    return [(g["answer"], g["explanation"]) for g in got]


@pytest.fixture(scope="module")
def answers(store_root: str) -> dict[bool, list[tuple[str, str]]]:
    out = {}
    for follow_up in (True, False):
        cfg = serve_config(store_root, [f"serve.follow_up={str(follow_up).lower()}"])
        want = reference_explanations(cfg, "run-a", PAIRS)  # unbatched, one prompt at a time
        assert batch_stage(cfg, follow_up) == want
        assert service(cfg) == want
        out[follow_up] = want
    return out


def test_stage_and_service_agree(answers) -> None:
    for got in answers.values():
        assert set(a for a, _ in got) <= {"yes", "no"} and any(text for _, text in got)


def test_follow_up_changes_the_explanation_not_the_answer(answers) -> None:
    assert [a for a, _ in answers[True]] == [a for a, _ in answers[False]]
    assert [t for _, t in answers[True]] != [t for _, t in answers[False]]
