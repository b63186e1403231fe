"""Errors of the LLM components; each is a :class:`recexp.errors.RecexpError` (one clear line)."""

from __future__ import annotations

from recexp.errors import RecexpError


class ModelLoadError(RecexpError):
    """A base model or an aligned model that cannot be found, fetched or loaded."""


class SlotError(RecexpError):
    """A base model / tokenizer that cannot take the slots, or a row whose slots and ids disagree."""


class ContextLengthError(RecexpError):
    """A tokenised example longer than the context the batches are built for."""
