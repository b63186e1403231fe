"""The ``recexp`` command: stage list, per-stage help, stages not built yet."""

from __future__ import annotations

import pytest

from recexp import cli
from recexp.config import STAGES


def test_help_lists_every_stage(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for stage in STAGES:
        assert f"  {stage} " in out


def test_stage_help_lists_config_keys(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["ingest", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "ingest.k_core = 5" in out and "store.root = './artifacts'" in out


def test_unknown_stage(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["frobnicate"]) == 2
    assert "unknown stage 'frobnicate'" in capsys.readouterr().err


def test_stage_not_built_yet_says_so(capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "module_name", lambda stage: "ray_jobs.not_a_stage_yet")
    assert cli.main(["serve"]) == 2
    assert "stage 'serve' is not built yet" in capsys.readouterr().err


def test_config_error_is_one_line(capsys: pytest.CaptureFixture) -> None:
    assert cli.main(["ingest", "ingest.nope=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown key 'ingest.nope'")
