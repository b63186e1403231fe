"""Exceptions that the CLI turns into one clear error line instead of a traceback."""

from __future__ import annotations


class RecexpError(Exception):
    """A user-facing error: bad config, bad input data, unreachable storage.

    The CLI prints ``error: <message>`` and exits with status 2; anything else is a bug
    and keeps its traceback.
    """


class ConfigError(RecexpError):
    """An unknown key, a wrong type or an invalid value in a config file or override."""


class InvalidValue(ValueError):
    """Raised by a config dataclass's ``__post_init__``; the loader adds the section path."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


class DataError(RecexpError):
    """Input data that cannot be used (too many rejects, missing files, wrong ids)."""


class StoreError(RecexpError):
    """The artifact store cannot be reached or holds something unexpected."""


def require(condition: bool, key: str, message: str) -> None:
    """Validation helper for ``__post_init__``: raise :class:`InvalidValue` unless ``condition``."""
    if not condition:
        raise InvalidValue(key, message)
