"""Sidecars: ``<stem>.yaml``, ``<stem>.yml`` or ``<stem>.json`` beside an audio file.

A sidecar overrides what the matching rule would send for that one file. Its keys are
checked as strictly as the config file's: a misspelt key is an error naming the file,
the line (for YAML) and the key, never a silently ignored setting.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, StrictBool, ValidationError, field_validator

from .config import Qualities
from .errors import ConfigProblem, IngestdError
from .media_schema import field_path

SIDECAR_SUFFIXES = (".yaml", ".yml", ".json")
RESERVED_METADATA_KEY = "ingestd_job"
# The tags of the config's Qualities union; they appear in error locations and are not keys.
_QUALITY_FORMS = ("preset", "inline")
# A title, tags and metadata fit in a few KiB; a larger file is a mistake, and would be slow to parse.
MAX_SIDECAR_SIZE = 1024 * 1024


class SidecarError(IngestdError):
    """A sidecar cannot be used; ``problems`` locates each reason as ``file:line: key: message``."""

    def __init__(self, path: Path, problems: list[ConfigProblem]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class Sidecar(BaseModel):
    """What a sidecar may set; every field it leaves out is taken from the rule."""

    # YAML reads `title: 1984` or `episode: 12` as numbers; they are meant as text.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    title: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, str] | None = None
    is_public: StrictBool | None = None
    qualities: Qualities | None = None  # a preset name or an inline list

    @field_validator("metadata", mode="before")
    @classmethod
    def _booleans_as_text(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: str(v).lower() if isinstance(v, bool) else v for k, v in value.items()}
        return value

    @field_validator("metadata")
    @classmethod
    def _no_reserved_key(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value and RESERVED_METADATA_KEY in value:
            raise ValueError(f"{RESERVED_METADATA_KEY!r} is reserved: ingestd sets it to the job id")
        return value


def find_sidecar(audio: Path) -> Path | None:
    """The sidecar beside ``audio``, if there is one; two of them is an error, not a guess."""
    found = [p for p in (audio.with_name(audio.stem + suffix) for suffix in SIDECAR_SUFFIXES) if p.is_file()]
    if len(found) > 1:
        names = " and ".join(p.name for p in found)
        raise SidecarError(found[0], [ConfigProblem(str(audio), None, "", f"{names} both describe this file; keep one")])
    return found[0] if found else None


def load_sidecar(path: Path) -> Sidecar:
    """Read and validate one sidecar file."""
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_SIZE:
            reason = f"{size} bytes is more than a sidecar may hold ({MAX_SIDECAR_SIZE} bytes): it should set a few fields"
            raise SidecarError(path, [ConfigProblem(str(path), None, "", reason)])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SidecarError(path, [ConfigProblem(str(path), None, "", f"cannot read: {exc}")]) from None
    try:
        if path.suffix == ".json":
            data, root = _parse_json(path, text), None
        else:
            data, root = _parse_yaml(path, text)
    except RecursionError:
        # Under the size cap a file can still be nested deeper than the parser goes.
        raise SidecarError(path, [ConfigProblem(str(path), None, "", "nested too deeply to be a sidecar")]) from None
    if data is None:
        return Sidecar()
    if not isinstance(data, dict):
        problem = ConfigProblem(str(path), 1, "", f"expected a mapping of keys, got {type(data).__name__}")
        raise SidecarError(path, [problem])
    try:
        return Sidecar.model_validate(data)
    except ValidationError as exc:
        problems = []
        for item in exc.errors():
            loc = tuple(p for p in item["loc"] if not _is_schema_step(p))
            message = item["msg"].removeprefix("Value error, ")
            problems.append(ConfigProblem(str(path), _line_of(root, loc), field_path(loc), message))
        raise SidecarError(path, sorted(problems, key=lambda p: p.line or 0)) from None


def _is_schema_step(part: Any) -> bool:
    return isinstance(part, str) and (part.startswith("function-") or part in _QUALITY_FORMS)


def _parse_json(path: Path, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SidecarError(path, [ConfigProblem(str(path), exc.lineno, "", f"not valid JSON: {exc.msg}")]) from None


def _parse_yaml(path: Path, text: str) -> tuple[Any, yaml.Node | None]:
    try:
        # The composed node tree keeps line numbers for error messages.
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        line = mark.line + 1 if mark else None
        raise SidecarError(path, [ConfigProblem(str(path), line, "", f"not valid YAML: {problem}")]) from None
    return data, root


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the YAML node at ``loc``, or of its nearest ancestor that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            pair = next(((k, v) for k, v in node.value if k.value == part), None)
            if pair is None:
                break
            line, node = pair[0].start_mark.line + 1, pair[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line
