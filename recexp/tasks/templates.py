"""Prompt templates: loaded from YAML (the built-in ``templates.yaml`` or ``tasks.templates``),
validated once, then picked per row by a seeded uniform draw.

A template is parsed into ``(literal, field)`` pairs at load time, so rendering never
re-parses text: a title containing ``{history}`` stays literal text. Loading checks that each
template uses exactly its sub-task's fields, each once, and that its own text needs no
escaping (no slot tokens, control tokens or role markers), so slot counts come from fields only.
"""

from __future__ import annotations

import importlib.resources
import string
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from recexp.config import FORMS
from recexp.errors import ConfigError
from recexp.tasks.sanitize import hazards

SUBTASK_FIELDS: dict[str, frozenset[str]] = {
    "uid2next": frozenset({"history"}),
    "uidiid2rank": frozenset({"history", "candidates"}),
    "uidiid2binary": frozenset({"history", "item"}),
    "iid2title": frozenset({"item"}),
    "iid2sim": frozenset({"item"}),
    "iid2brand": frozenset({"item"}),
    "iid2category": frozenset({"item"}),
    "iid2description": frozenset({"item"}),
    "uid2hist": frozenset({"history"}),
    "uid2added": frozenset({"before", "after"}),
    "uidiid2explan": frozenset({"history", "item"}),
    "explain_followup": frozenset(),  # plain text: the "why?" turn after the uidiid2explan answer
}
"""The fields every template of a sub-task must use (each exactly once)."""


@dataclass(frozen=True)
class Template:
    """One parsed template: literal text and fields, in order of appearance."""

    index: int
    """Position in its list (recorded in each row's ``meta``)."""
    parts: tuple[tuple[str, str | None], ...]
    """``(literal, field)`` pairs as ``string.Formatter.parse`` gives them; field None at the end."""

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(field for _, field in self.parts if field is not None)


@dataclass(frozen=True)
class TemplateSet:
    """Every sub-task's templates per form, plus the optional system message."""

    system: str
    lists: Mapping[str, Mapping[str, tuple[Template, ...]]]
    """``{sub-task: {form: templates}}``; every form is present."""
    source: str

    def pick(self, subtask: str, form: str, u: float) -> Template:
        """The template chosen by the uniform draw ``u`` in [0, 1).

        Drawing ``u`` once and mapping it per form keeps the same paraphrase across forms
        whenever their lists have the same length (as in the built-in set)."""
        templates = self.lists[subtask][form]
        return templates[min(int(u * len(templates)), len(templates) - 1)]


def parse_template(text: str, subtask: str, index: int, where: str) -> Template:
    """Parse and validate one template of ``subtask``."""
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        raise ConfigError(f"{where}: invalid template {text!r}: {exc}") from None
    if any(spec or conversion for _, _, spec, conversion in parsed):
        raise ConfigError(f"{where}: template {text!r}: fields take no format spec or conversion")
    parts = tuple((literal, field) for literal, field, _, _ in parsed)
    fields = [field for _, field in parts if field is not None]
    expected = SUBTASK_FIELDS[subtask]
    if sorted(fields) != sorted(expected):
        raise ConfigError(f"{where}: template {text!r} must use each of {sorted(expected)} exactly once, uses {fields}")
    for literal, _ in parts:
        found = hazards(literal, allow_newlines=True)
        if found:
            raise ConfigError(f"{where}: template {text!r} contains {', '.join(found)}; templates must need no escaping")
    return Template(index, parts)


def _form_lists(value: Any, subtask: str, where: str) -> dict[str, tuple[Template, ...]]:
    """``{form: templates}`` from a list (all forms) or a mapping with ``default`` and/or forms."""
    raw = {"default": value} if isinstance(value, list) else value
    if not isinstance(raw, dict) or set(raw) - {"default", *FORMS}:
        raise ConfigError(f"{where}: {subtask} must be a list or a mapping of default/{'/'.join(FORMS)} to lists")
    out = {}
    for form in FORMS:
        texts = raw.get(form, raw.get("default"))
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
            raise ConfigError(f"{where}: {subtask} needs a non-empty list of strings for form {form!r}")
        out[form] = tuple(parse_template(t, subtask, i, f"{where}: {subtask}") for i, t in enumerate(texts))
    return out


def parse_templates(data: Any, source: str) -> TemplateSet:
    """Validate a parsed YAML document into a :class:`TemplateSet`."""
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise ConfigError(f"{source}: expected a mapping with a 'tasks' mapping")
    system = data.get("system") or ""
    if not isinstance(system, str) or hazards(system, allow_newlines=True):
        raise ConfigError(f"{source}: 'system' must be a string that needs no escaping")
    tasks = data["tasks"]
    missing = sorted(set(SUBTASK_FIELDS) - set(tasks))
    unknown = sorted(set(tasks) - set(SUBTASK_FIELDS))
    if missing or unknown:
        raise ConfigError(f"{source}: missing sub-tasks {missing}, unknown sub-tasks {unknown}")
    lists = {name: _form_lists(tasks[name], name, source) for name in SUBTASK_FIELDS}
    return TemplateSet(system.strip(), lists, source)


def builtin_text() -> str:
    """The text of the packaged ``templates.yaml``."""
    return importlib.resources.files("recexp.tasks").joinpath("templates.yaml").read_text(encoding="utf-8")


def load_templates(path: str = "", endpoint_url: str | None = None) -> TemplateSet:
    """The built-in templates, or those of the YAML file at ``path`` (local or any fsspec URL)."""
    if not path:
        return parse_templates(yaml.safe_load(builtin_text()), "built-in templates.yaml")
    from recexp.store import read_yaml

    return parse_templates(read_yaml(path, endpoint_url, "tasks.templates"), path)
