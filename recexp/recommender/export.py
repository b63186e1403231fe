"""Save and load trained recommenders: ``model.safetensors`` + ``config.json``. No pickle.

``config.json`` holds the model type, its config fields, ``n_items`` and the catalog
fingerprint (sha256 of the ordered item-id mapping, computed by the caller). Loading
checks the fingerprint and catalog size so a model is never silently paired with a
different catalog.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file

from recexp.recommender.base import Recommender
from recexp.recommender.config import MFConfig, SASRecConfig
from recexp.recommender.mf import MF
from recexp.recommender.sasrec import SASRec

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1

MODELS: dict[str, tuple[type[Any], type[Recommender]]] = {
    "sasrec": (SASRecConfig, SASRec),
    "mf": (MFConfig, MF),
}


def save(
    model: Recommender, directory: str | Path, catalog_fingerprint: str, metadata: dict[str, Any] | None = None
) -> Path:
    """Write ``model`` to ``directory`` (created if needed); returns the directory.
    ``metadata`` (JSON-serialisable) is stored alongside, e.g. metrics or data versions."""
    if not isinstance(catalog_fingerprint, str) or not catalog_fingerprint:
        raise ValueError("catalog_fingerprint must be a non-empty string")
    if model.model_type not in MODELS:
        raise ValueError(f"cannot export model type {model.model_type!r}; known: {sorted(MODELS)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    tensors = {name: t.detach().cpu().contiguous() for name, t in model.state_dict().items()}
    save_file(tensors, str(out / WEIGHTS_FILE))
    config = {
        "format_version": FORMAT_VERSION,
        "model_type": model.model_type,
        "config": model.config.to_dict(),
        "n_items": model.n_items,
        "catalog_fingerprint": catalog_fingerprint,
        "metadata": metadata or {},
    }
    (out / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))  # written last
    return out


def read_config(directory: str | Path) -> dict[str, Any]:
    """The parsed ``config.json`` of an exported model."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no {CONFIG_FILE} in {directory}: not an exported recommender")
    return json.loads(path.read_text())


def _check_catalog(meta: dict[str, Any], expected_fingerprint: str | None, expected_n_items: int | None) -> None:
    """Raise ValueError when the saved model was trained on another catalog."""
    if expected_n_items is not None and meta["n_items"] != expected_n_items:
        raise ValueError(
            f"catalog mismatch: model has {meta['n_items']} items, the catalog has {expected_n_items}"
        )
    if expected_fingerprint is not None and meta["catalog_fingerprint"] != expected_fingerprint:
        raise ValueError(
            "catalog mismatch: model was trained on catalog "
            f"{meta['catalog_fingerprint']!r}, expected {expected_fingerprint!r}"
        )


def local_copy(uri: str, endpoint_url: str | None = None) -> Path:
    """A local directory with the files of ``uri`` (``s3://...`` and other fsspec URLs are
    copied into the cache, keyed by the URI and the remote files' versions)."""
    from recexp.store import cached_copy

    return Path(cached_copy(uri, endpoint_url, "encoders"))


def load(
    uri_or_dir: str | Path, expected_fingerprint: str | None = None, expected_n_items: int | None = None,
    endpoint_url: str | None = None,
) -> Recommender:
    """Rebuild an exported model (in eval mode) from a local directory or a store URI."""
    uri_or_dir = local_copy(str(uri_or_dir), endpoint_url)
    meta = read_config(uri_or_dir)
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"unsupported format_version {meta.get('format_version')!r}")
    if meta["model_type"] not in MODELS:
        raise ValueError(f"unknown model_type {meta['model_type']!r}; known: {sorted(MODELS)}")
    _check_catalog(meta, expected_fingerprint, expected_n_items)
    config_cls, model_cls = MODELS[meta["model_type"]]
    config = config_cls.from_dict(meta["config"])
    if config.n_items != meta["n_items"]:
        raise ValueError(f"corrupt export: config n_items {config.n_items} != n_items {meta['n_items']}")
    model = model_cls(config)
    model.load_state_dict(load_file(str(Path(uri_or_dir) / WEIGHTS_FILE)), strict=True)
    return model.eval()


def catalog_fingerprint_of(directory: str | Path) -> str:
    """The catalog fingerprint recorded in an export."""
    return str(read_config(directory)["catalog_fingerprint"])

