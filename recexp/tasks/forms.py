"""Rendering a history or an item in each prompt form, and filling templates.

=========== ============================== =====================
form        history                        item
=========== ============================== =====================
behaviour   ``"A"; "B"; "C"``              ``"A"``
intention   ``<user>``                     ``<item>``
hybrid      ``<user> "A"; "B"; "C"``       ``<item> "A"``
=========== ============================== =====================

Titles shown are the history's last ``max_hist`` items; a ``<user>`` slot carries the ids the
frozen recommender computes the user embedding from (the last ``max_len`` of the history, all
it would look at anyway). Where showing titles would give the answer away (the history of
T6, the two states of T7, the item of ``iid2title``) hybrid renders like intention
(``titles=False``), as RecExplainer does.

A :class:`Piece` keeps text and slot ids together, and :func:`fill` concatenates the pieces in
the template's field order, so ids are always listed in the order their slots appear.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

import numpy as np

from recexp.tasks.catalog import Catalog
from recexp.tasks.sanitize import ITEM_SLOT, USER_SLOT
from recexp.tasks.templates import Template

LIST_SEPARATOR = "; "
"""Between titles, in prompts and in responses."""


class Piece(NamedTuple):
    """Prompt text with the ids of the slots it contains, in order (a tuple: cheap to make)."""

    text: str
    users: tuple[tuple[int, ...], ...] = ()
    """One id tuple per ``<user>`` slot."""
    items: tuple[int, ...] = ()
    """One id per ``<item>`` slot."""


def shown_titles(ids: np.ndarray, catalog: Catalog, max_hist: int) -> str:
    """The last ``max_hist`` titles of ``ids``, quoted and separated (the behaviour rendering)."""
    return LIST_SEPARATOR.join(catalog.quoted[i] for i in ids[-max_hist:].tolist())


def history_piece(
    form: str, ids: np.ndarray, catalog: Catalog, max_hist: int, max_len: int, titles: bool = True
) -> Piece:
    """A user given by the chronological history ``ids`` (one position's prefix)."""
    if form == "behaviour":
        return Piece(shown_titles(ids, catalog, max_hist))
    slot = (tuple(ids[-max_len:].tolist()),)
    if form == "hybrid" and titles:
        return Piece(f"{USER_SLOT} {shown_titles(ids, catalog, max_hist)}", users=slot)
    return Piece(USER_SLOT, users=slot)


def item_piece(form: str, item_id: int, catalog: Catalog, titles: bool = True) -> Piece:
    """One item."""
    if form == "behaviour":
        return Piece(catalog.quoted[item_id])
    if form == "hybrid" and titles:
        return Piece(f"{ITEM_SLOT} {catalog.quoted[item_id]}", items=(item_id,))
    return Piece(ITEM_SLOT, items=(item_id,))


def items_piece(form: str, item_ids: Sequence[int], catalog: Catalog) -> Piece:
    """Several items, in the given order (T2 candidates)."""
    return join_pieces([item_piece(form, int(i), catalog) for i in item_ids], LIST_SEPARATOR)


def join_pieces(pieces: Sequence[Piece], separator: str) -> Piece:
    """Pieces joined by ``separator``, their slots concatenated in order."""
    return Piece(
        separator.join(p.text for p in pieces),
        tuple(u for p in pieces for u in p.users),
        tuple(i for p in pieces for i in p.items),
    )


def fill(template: Template, pieces: Mapping[str, Piece]) -> Piece:
    """The template with each field replaced by its piece (the text of a piece is never parsed)."""
    texts: list[str] = []
    users: list[tuple[int, ...]] = []
    items: list[int] = []
    for literal, field in template.parts:
        texts.append(literal)
        if field is not None:
            piece = pieces[field]
            texts.append(piece.text)
            users += piece.users
            items += piece.items
    return Piece("".join(texts), tuple(users), tuple(items))


def title_list(item_ids: Sequence[int], catalog: Catalog) -> str:
    """Plain titles separated by ``; `` (list responses: rankings, histories)."""
    return LIST_SEPARATOR.join(catalog.titles[int(i)] for i in item_ids)
