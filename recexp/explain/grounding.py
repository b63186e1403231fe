"""Grounding generated text to catalog items: a title the model wrote -> the item ids it names.

The model answers with titles (T1 next item, T2 rankings, T6 histories, item recovery), but
the metrics compare item ids. A generated title is *grounded* by looking up its normalised
form among the normalised catalog titles (:func:`normalize_title`: Unicode NFKC, case-folded,
every run of punctuation / whitespace reduced to one space, so ``"Zelda: Breath of the Wild"``
and ``zelda breath of the wild.`` are the same key). With ``fuzzy`` set (a ``difflib`` ratio
in ``(0, 1]``), a text with no exact key takes the closest key at or above that ratio.

Several items may share a title: a key maps to all their ids, and a generated title naming
the target's title counts as naming the target (the model cannot tell them apart either).

List answers (rankings, histories) are split on ``;`` and line breaks
(:data:`recexp.tasks.forms.LIST_SEPARATOR` is what the training responses use), with list
numbering (``1.``, ``-``) and quotes removed from each piece.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Iterable, Sequence

_NON_WORD = re.compile(r"[\W_]+", re.UNICODE)
_LIST_SPLIT = re.compile(r";|\n")
_ENUMERATOR = re.compile(r"^\s*(?:\d+[.)]|[-*•])\s+")


def normalize_title(text: str) -> str:
    """The lookup key of a title: NFKC, case-folded, punctuation runs -> one space, trimmed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return _NON_WORD.sub(" ", text).strip()


def split_list(text: str) -> list[str]:
    """The titles of a list answer, in order: split on ``;`` / newlines, numbering dropped,
    empty pieces skipped."""
    pieces = (_ENUMERATOR.sub("", piece).strip() for piece in _LIST_SPLIT.split(text))
    return [piece for piece in pieces if normalize_title(piece)]


class TitleIndex:
    """Normalised title -> item ids, for a whole catalog or a few candidates."""

    def __init__(self, titles: Sequence[str], ids: Sequence[int] | None = None, fuzzy: float = 0.0) -> None:
        """``titles[k]`` is the title of item ``ids[k]`` (default ``k``); ``fuzzy`` 0 = exact only."""
        if not 0.0 <= fuzzy <= 1.0:
            raise ValueError(f"fuzzy must be in [0, 1], got {fuzzy}")
        ids = range(len(titles)) if ids is None else ids
        self.fuzzy = float(fuzzy)
        self._ids: dict[str, tuple[int, ...]] = {}
        for item_id, title in zip(ids, titles):
            key = normalize_title(title)
            if key:
                self._ids[key] = self._ids.get(key, ()) + (int(item_id),)
        self._keys = list(self._ids)
        self._fuzzy_cache: dict[str, str | None] = {}

    def __len__(self) -> int:
        return len(self._keys)

    def _closest(self, key: str) -> str | None:
        """The closest catalog key at or above the ``fuzzy`` ratio (cached: answers repeat)."""
        if key not in self._fuzzy_cache:
            found = difflib.get_close_matches(key, self._keys, n=1, cutoff=self.fuzzy)
            self._fuzzy_cache[key] = found[0] if found else None
        return self._fuzzy_cache[key]

    def ground(self, text: str) -> tuple[int, ...]:
        """The item ids ``text`` names (several when titles are shared); ``()`` when none."""
        key = normalize_title(text.strip().strip("\"'“”‘’«»"))
        if not key:
            return ()
        if key in self._ids:
            return self._ids[key]
        if self.fuzzy > 0:
            closest = self._closest(key)
            if closest is not None:
                return self._ids[closest]
        return ()

    def ground_list(self, text: str) -> list[tuple[int, ...]]:
        """:meth:`ground` of every piece of a list answer (ungrounded pieces give ``()``)."""
        return [self.ground(piece) for piece in split_list(text)]


def first_ids(grounded: Iterable[tuple[int, ...]], allowed: Iterable[int] | None = None) -> list[int]:
    """One id per grounded piece (the first allowed one), duplicates and ungrounded pieces
    dropped, order kept: a list answer as an ordered list of distinct items."""
    allowed_set = None if allowed is None else set(allowed)
    out: list[int] = []
    for ids in grounded:
        for item_id in ids:
            if (allowed_set is None or item_id in allowed_set) and item_id not in out:
                out.append(item_id)
                break
    return out
