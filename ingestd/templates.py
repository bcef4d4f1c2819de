"""Title, description, tag and metadata templates: a small, safe format language (never ``eval``).

    ``{name}``                  a variable
    ``{a|b|"text"}``            the first of ``a``, ``b`` that is defined and not empty, else the
                                quoted text (which must come last)
    ``{ep:03}`` ``{title:.80}`` a format spec, as in Python's ``format`` (digit strings format as
                                numbers); on ``mtime`` it is a strftime pattern: ``{mtime:%Y-%m-%d}``
    ``{show!upper}``            filters, applied after the spec, left to right: ``upper``, ``lower``,
                                ``title``, ``strip``, ``slug``
    ``{{`` ``}}``               literal braces

    Variables: regex groups, ``stem``, ``name``, ``ext`` (no dot), ``folder``, ``parent``,
    ``size`` (bytes), ``mtime`` (local time; plain: ISO date), ``duration`` (whole seconds),
    and the audio tags ``tag.title``, ``tag.artist``, ``tag.album``, ``tag.track``,
    ``tag.date``, ``tag.genre``, ``tag.comment``, ``tag.albumartist``, ``tag.composer``.
    A variable that is not defined for a file, with no fallback, is an error naming the
    rule and the variable; a template never leaks into a title as ``{show}``.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any


@dataclass(frozen=True)
class _Literal:
    text: str


@dataclass(frozen=True)
class _Field:
    alternatives: tuple[str | _Literal, ...]
    spec: str | None
    filters: tuple[str, ...]


class MissingVariable(Exception):
    """None of a field's alternatives is defined (and no literal fallback)."""

    def __init__(self, names: list[str]):
        self.names = names


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*")
_FILTER_NAME = re.compile(r"[a-z]+")


def _slug(text: str) -> str:
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")


_FILTERS = {"upper": str.upper, "lower": str.lower, "title": str.title, "strip": str.strip, "slug": _slug}


def check_template(template: str) -> None:
    """Raise ``ValueError`` describing the first syntax error in ``template``, if any."""
    _parse(template)


def template_variables(template: str) -> set[str]:
    """The variable names a template refers to (raises ``ValueError`` for a syntax error)."""
    return {a for part in _parse(template) if isinstance(part, _Field) for a in part.alternatives if isinstance(a, str)}


def render_template(template: str, variables: dict[str, Any]) -> str:
    """Fill ``template`` from ``variables`` (str, int or datetime values).

    Raises ``ValueError`` for a syntax error or a format spec that does not fit the value.
    """
    out = []
    for part in _parse(template):
        out.append(part if isinstance(part, str) else _fill(part, variables))
    return "".join(out)


def _fill(field: _Field, variables: dict[str, Any]) -> str:
    value: Any = None
    for alternative in field.alternatives:
        if isinstance(alternative, _Literal):
            value = alternative.text
            break
        candidate = variables.get(alternative)
        if candidate is not None:
            value = candidate
            if candidate != "":
                break
    if value is None:
        raise MissingVariable([a for a in field.alternatives if isinstance(a, str)])
    text = as_text(value) if field.spec is None else _format(value, field.spec)
    for name in field.filters:
        text = _FILTERS[name](text)
    return text


def as_text(value: Any) -> str:
    """A variable as plain text (what ``{name}`` without a spec gives)."""
    if isinstance(value, datetime):
        return value.date().isoformat()
    return str(value)


def _format(value: Any, spec: str) -> str:
    if isinstance(value, datetime):
        return value.strftime(spec)
    if isinstance(value, str) and value.isascii() and value.isdigit():
        try:
            return format(int(value), spec)
        except ValueError:
            pass  # a spec for text, such as {track:.2}
    try:
        return format(value, spec)
    except ValueError as exc:
        raise ValueError(f"format spec {spec!r} does not fit {as_text(value)!r}: {exc}") from None


@lru_cache(maxsize=512)
def _parse(template: str) -> tuple[str | _Field, ...]:
    parts: list[str | _Field] = []
    text: list[str] = []
    i = 0
    while i < len(template):
        char = template[i]
        if template.startswith("{{", i) or template.startswith("}}", i):
            text.append(char)
            i += 2
        elif char == "{":
            end = _field_end(template, i)
            if text:
                parts.append("".join(text))
                text = []
            parts.append(_parse_field(template[i + 1:end], template, i))
            i = end + 1
        elif char == "}":
            raise ValueError(f"single '}}' at position {i}; write '}}}}' for a literal brace")
        else:
            text.append(char)
            i += 1
    if text:
        parts.append("".join(text))
    return tuple(parts)


def _field_end(template: str, start: int) -> int:
    quote = None
    for j in range(start + 1, len(template)):
        char = template[j]
        if quote:
            quote = None if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char == "}":
            return j
        elif char == "{":
            break
    raise ValueError(f"'{{' at position {start} is not closed; write '{{{{' for a literal brace")


def _parse_field(body: str, template: str, at: int) -> _Field:
    def fail(problem: str) -> ValueError:
        return ValueError(f"{problem} in '{{{body}}}' at position {at}")

    alternatives: list[str | _Literal] = []
    i = 0
    while True:
        if i < len(body) and body[i] in "\"'":
            close = body.find(body[i], i + 1)
            alternatives.append(_Literal(body[i + 1:close]))
            i = close + 1
        else:
            name = _NAME.match(body, i)
            if name is None:
                raise fail("expected a variable name" if i == 0 or body[i - 1] == "|" else "unexpected text")
            alternatives.append(name.group())
            i = name.end()
        if i < len(body) and body[i] == "|":
            if isinstance(alternatives[-1], _Literal):
                raise fail("quoted text must be the last alternative")
            i += 1
            continue
        break

    spec = None
    if i < len(body) and body[i] == ":":
        end = body.find("!", i)
        end = len(body) if end < 0 else end
        spec, i = body[i + 1:end], end

    filters = []
    while i < len(body) and body[i] == "!":
        name = _FILTER_NAME.match(body, i + 1)
        if name is None or name.group() not in _FILTERS:
            given = name.group() if name else body[i + 1:]
            raise fail(f"unknown filter {given!r} (filters: {', '.join(_FILTERS)})")
        filters.append(name.group())
        i = name.end()
    if i != len(body):
        raise fail(f"unexpected {body[i:]!r}")
    return _Field(tuple(alternatives), spec, tuple(filters))
