"""Config loading: defaults < YAML (with includes) < key=value, and one clear error per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from recexp.config import RunConfig, field_docs, load_config
from recexp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_shipped_yaml_loads(path: Path) -> None:
    cfg = load_config(str(path))
    assert isinstance(cfg, RunConfig)


def test_shipped_configs_exist() -> None:
    names = {str(p.relative_to(ROOT / "configs")) for p in SHIPPED}
    assert {"demo.yaml", "datasets/amazon-video-games.yaml", "datasets/ml-100k.yaml",
            "datasets/amazon-video-games-recexplainer.yaml"} <= names


def test_precedence_and_include(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("data: {format: recbole, path: /a}\ningest: {k_core: 3, seed: 1}\n")
    (tmp_path / "child.yaml").write_text("include: base.yaml\ningest: {k_core: 7}\n")
    cfg = load_config(str(tmp_path / "child.yaml"), ["ingest.seed=9", "data.path=/b"])
    assert (cfg.data.format, cfg.data.path, cfg.ingest.k_core, cfg.ingest.seed) == ("recbole", "/b", 7, 9)
    assert cfg.ingest.max_reject_fraction == 0.01  # untouched default


def test_recexplainer_variant_only_adds_subsampling() -> None:
    base = load_config(str(ROOT / "configs/datasets/amazon-video-games.yaml"))
    sub = load_config(str(ROOT / "configs/datasets/amazon-video-games-recexplainer.yaml"))
    assert sub.data == base.data
    assert (sub.ingest.subsample_items, sub.ingest.subsample_users, sub.ingest.k_core) == (2000, 4000, 5)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ingest.kcore=1"], "unknown key 'ingest.kcore' (from command line)"),
        (["ingest.k_core=abc"], "wrong type for 'ingest.k_core' (from command line): expected int"),
        (["ingest.k_core=-1"], "invalid value for 'ingest.k_core' (from command line): must be >= 0"),
        (["ingest.max_reject_fraction=2"], "invalid value for 'ingest.max_reject_fraction'"),
        (["data.format=xml"], "invalid value for 'data.format' (from command line): 'xml' is not one of"),
        (["force=maybe"], "wrong type for 'force'"),
        (["run_id=a/b"], "invalid value for 'run_id'"),
        (["inputs.nonsense=r1"], "invalid value for 'inputs.nonsense'"),
        (["data=3"], "data: expected a mapping"),
        (["no_equals_sign"], "expected key=value"),
    ],
)
def test_errors_name_the_key(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(None, overrides)
    assert message in str(info.value)


def test_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("ingest:\n  k_core: five\n")
    with pytest.raises(ConfigError, match=r"'ingest.k_core' \(from .*bad.yaml\)"):
        load_config(str(bad))
    bad.write_text("ingest: {typo: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'ingest.typo' \(from .*bad.yaml\)"):
        load_config(str(bad))
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(str(tmp_path / "missing.yaml"))


def test_types_are_coerced_only_losslessly() -> None:
    cfg = load_config(None, ["ingest.max_reject_fraction=0", "run_id=20240101", "data.interactions=a.csv"])
    assert cfg.ingest.max_reject_fraction == 0.0 and isinstance(cfg.ingest.max_reject_fraction, float)
    assert cfg.run_id == "20240101"
    assert cfg.data.interactions == ["a.csv"]
    with pytest.raises(ConfigError):
        load_config(None, ["ingest.k_core=1.5"])


def test_every_field_is_documented() -> None:
    rows = field_docs(RunConfig)
    undocumented = [key for key, _, doc in rows if not doc]
    assert not undocumented
    assert ("ingest.k_core", "5") == rows[[r[0] for r in rows].index("ingest.k_core")][:2]
