"""Make untrusted text safe to put into a prompt: titles, item metadata, general chat data.

Item titles come from scraped catalogs. Put verbatim into a prompt, a title could

* create an embedding slot: ``<user>`` / ``<item>`` (any spelling the tokenizer or a careless
  regex could still map to the slot: ``< user >``, ``<ITEM>``, fullwidth ``＜user＞``, with
  zero-width characters inside);
* end a chat turn or start a new one: ``<|im_end|>``, ``<|endoftext|>``, ``</s>``, ``[INST]``,
  ``<<SYS>>``, or any ``<|...|>`` control token;
* switch roles in plain-text chat formats: ``assistant:``, ``### Response:``, ``USER:``;
* break the row: newlines, control characters, lone surrogates, absurd lengths, emptiness.

The rules, applied in this order (so that every step sees what the later ones produce):

1. characters that Unicode-normalise (NFKC) to ``< > | [ ] : #`` become those ASCII characters,
   so look-alikes are caught below (a tokenizer with an NFKC normaliser would map them);
2. line breaks and all whitespace become single spaces (titles are one line), other control,
   format (zero-width, bidi), surrogate, private-use and unassigned characters are dropped;
3. every ``<...>`` span (no ``<``/``>`` inside, at most 64 characters) gets its brackets
   replaced by ``‹ ›``; so do the halves ``<|`` and ``|>`` of control tokens. Nothing of the
   form ``<...>`` survives, so no slot or special token can be spelled;
4. ``[INST]``-style markers become ``(INST)``; a role word followed by a colon (``user:``,
   ``Assistant :``, ``### Response:``) gets its colon replaced by ``∶`` (U+2236, looks the same);
5. long text is cut (``…``), empty titles get a neutral stand-in ``(untitled item <id>)``.

Every function here is idempotent: sanitising twice gives the same text as once.
Slot tokens are inserted by the prompt renderer *after* this, never by data.
"""

from __future__ import annotations

import re
import unicodedata

USER_SLOT = "<user>"
"""Placeholder the aligner replaces by the recommender's user embedding."""
ITEM_SLOT = "<item>"
"""Placeholder the aligner replaces by the recommender's item embedding."""
SLOT_TOKENS = (USER_SLOT, ITEM_SLOT)

MAX_TITLE_CHARS = 200
ELLIPSIS = "…"

# Characters whose compatibility form is one of the structural ASCII characters.
_STRUCTURAL = set("<>|[]:#")
_TAG = re.compile(r"<([^<>]{0,64})>")
_TOKEN_HALF = re.compile(r"<\||\|>")
_BRACKET_MARKER = re.compile(r"\[\s*(/?)\s*(INST|SYS)\s*\]", re.IGNORECASE)
_ROLE_WORDS = "system|user|assistant|human|gpt|instruction|input|response"
_ROLE_COLON = re.compile(rf"\b({_ROLE_WORDS})(\s*):", re.IGNORECASE)
_DROP_CATEGORIES = ("Cc", "Cf", "Cs", "Co", "Cn")


def _lookalike_table() -> dict[int, str]:
    """``{code point: ASCII}`` for BMP characters whose NFKC form holds a structural character.

    Built once at import (about 65k normalisations, a few tens of milliseconds)."""
    table = {}
    for cp in range(0x80, 0x10000):
        char = chr(cp)
        if unicodedata.category(char) == "Cs":
            continue
        folded = unicodedata.normalize("NFKC", char)
        if folded != char and _STRUCTURAL & set(folded):
            table[cp] = folded
    return table


_LOOKALIKES = _lookalike_table()


def _drop_invisible(text: str, keep_newlines: bool) -> str:
    """Whitespace -> one kind of space; control/format/surrogate/unassigned characters dropped."""
    out = []
    for char in text:
        if keep_newlines and char == "\n":
            out.append(char)
        elif char.isspace():
            out.append(" ")
        elif unicodedata.category(char) not in _DROP_CATEGORIES:
            out.append(char)
    return "".join(out)


def _escape_markup(text: str) -> str:
    """Rules 3 and 4: neutralise tag-like spans, control-token halves and role markers."""
    while True:  # nested spans such as <<user>> need more than one pass
        escaped = _TAG.sub(lambda m: f"‹{m.group(1)}›", text)
        if escaped == text:
            break
        text = escaped
    text = _TOKEN_HALF.sub(lambda m: m.group(0).replace("<", "‹").replace(">", "›"), text)
    text = _BRACKET_MARKER.sub(lambda m: f"({m.group(1)}{m.group(2)})", text)
    return _ROLE_COLON.sub(lambda m: f"{m.group(1)}{m.group(2)}∶", text)


def _cut(text: str, max_chars: int) -> str:
    """At most ``max_chars`` characters, the last one an ellipsis when cut."""
    if len(text) <= max_chars:
        return text
    return text[: max_chars - 1].rstrip() + ELLIPSIS


def clean_line(text: str | None, max_chars: int = MAX_TITLE_CHARS) -> str:
    """One safe line (rules 1-5 without the stand-in); empty when nothing is left."""
    if not text:
        return ""
    text = text.translate(_LOOKALIKES)
    text = _drop_invisible(text, keep_newlines=False)
    text = " ".join(_escape_markup(text).split())
    return _cut(text, max_chars)


def sanitize_title(text: str | None, item_id: int, max_chars: int = MAX_TITLE_CHARS) -> str:
    """A title safe for prompts and responses; ``(untitled item <id>)`` when nothing is left."""
    return clean_line(text, max_chars) or f"(untitled item {item_id})"


def sanitize_field(text: str | None, max_chars: int) -> str | None:
    """A metadata value (brand, category, description) as one safe line; None when empty."""
    return clean_line(text, max_chars) or None


def escape_text(text: str, max_chars: int | None = None) -> str:
    """Free multi-line text (general chat data): newlines kept, everything else as for titles."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_LOOKALIKES)
    text = _drop_invisible(text, keep_newlines=True)
    lines = [" ".join(_escape_markup(line).split()) for line in text.split("\n")]
    text = "\n".join(lines).strip()
    return _cut(text, max_chars) if max_chars else text


_HAZARDS = {
    "tag": re.compile(r"<[^<>]{0,64}>"),
    "control-token-half": _TOKEN_HALF,
    "bracket-marker": _BRACKET_MARKER,
    "role-marker": _ROLE_COLON,
}


def hazards(text: str, allow_newlines: bool = False) -> list[str]:
    """Names of the constructs in ``text`` that the rules above would neutralise.

    Used to validate template text (which must need no escaping) and by the tests."""
    found = [name for name, pattern in _HAZARDS.items() if pattern.search(text.translate(_LOOKALIKES))]
    if any(
        unicodedata.category(c) in _DROP_CATEGORIES and not (allow_newlines and c == "\n") for c in text
    ):
        found.append("control-character")
    return found
