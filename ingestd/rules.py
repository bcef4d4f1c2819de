"""What a file becomes: the first rule that matches it, rendered into a validated create request.

Matching
    Rules are tried in order; the first whose ``match`` conditions all hold wins. A rule
    without ``match`` matches every file.

    ``folder``   glob (fnmatch, case-sensitive) on the file's directory relative to its
                 watched folder, ``""`` for the folder itself; ``*`` also crosses ``/``.
    ``filename`` glob on the file name.
    ``regex``    ``re.match`` on the file name; named groups become template variables.

Merging
    ``defaults`` lie under every rule: the rule's own value wins, except that ``tags`` are
    the defaults' followed by the rule's (without repeats) and ``metadata`` maps are merged
    key by key. A sidecar then replaces whole fields; its values are taken literally, not as
    templates. Without any title the file's stem is used. Metadata always carries
    ``ingestd_job`` = the job id, which no rule may set.

Templates
    See ``ingestd.templates``.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import asdict, dataclass
from datetime import datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from .config import Config, Rule
from .errors import RenderError
from .media_schema import CreateRequest, Quality, describe_validation_error
from .probe import AudioInfo, ProbeError, probe
from .templates import MissingVariable, as_text, render_template
from .sidecar import RESERVED_METADATA_KEY, Sidecar, SidecarError, find_sidecar, load_sidecar

EXPLAIN_JOB_ID = "<job id>"


@dataclass(frozen=True)
class RuleDecision:
    """Why one rule did or did not match a file."""

    rule: str
    matched: bool
    reason: str


@dataclass(frozen=True)
class RenderedRequest:
    rule: str
    request: CreateRequest  # with is_public already False when publish is on_done
    publish: Literal["immediately", "on_done"]
    make_public_when_done: bool  # PATCH is_public=true once transcoding is done
    quality_names: list[str]  # the requested resolutions, for /media/cost
    variables: dict[str, str]


# ---- matching -----------------------------------------------------------------------------------


def match_rule(config: Config, path: Path, root: Path) -> tuple[Rule | None, dict[str, str], list[RuleDecision]]:
    """The first rule matching ``path`` (in watched folder ``root``), its regex groups, and every rule's decision."""
    name = _nfc(path.name)
    folder = _relative_folder(path, root)
    decisions: list[RuleDecision] = []
    chosen: Rule | None = None
    groups: dict[str, str] = {}
    for rule in config.rules:
        if chosen is not None:
            decisions.append(RuleDecision(rule.name, False, f"not tried: rule {chosen.name!r} matched first"))
            continue
        matched, reason, found = _try(rule, folder, name)
        decisions.append(RuleDecision(rule.name, matched, reason))
        if matched:
            chosen, groups = rule, found
    return chosen, groups, decisions


def _try(rule: Rule, folder: str, name: str) -> tuple[bool, str, dict[str, str]]:
    match = rule.match
    held = []
    if match.folder is not None:
        if not fnmatchcase(folder, match.folder):
            return False, f"folder {match.folder!r} does not match {folder!r}", {}
        held.append(f"folder {match.folder!r} matches {folder!r}")
    if match.filename is not None:
        if not fnmatchcase(name, match.filename):
            return False, f"filename {match.filename!r} does not match {name!r}", {}
        held.append(f"filename {match.filename!r} matches {name!r}")
    groups: dict[str, str] = {}
    if match.regex is not None:
        found = re.match(match.regex, name)
        if found is None:
            return False, f"regex {match.regex!r} does not match {name!r}", {}
        groups = {k: v for k, v in found.groupdict().items() if v is not None}
        held.append(f"regex {match.regex!r} matches {name!r}")
    return True, ", ".join(held) or "no match conditions: matches every file", groups


def _relative_folder(path: Path, root: Path) -> str:
    try:
        relative = path.parent.relative_to(root).as_posix()
    except ValueError:
        return ""
    return "" if relative == "." else _nfc(relative)


# ---- rendering ----------------------------------------------------------------------------------


def render(config: Config, path: Path, root: Path, *, job_id: str, audio: AudioInfo | None,
           sidecar: Sidecar | None) -> RenderedRequest:
    """Turn a file into the create request its rule describes; raise ``RenderError`` when it cannot be."""
    rule, groups, decisions = match_rule(config, path, root)
    if rule is None:
        relative = _relative_folder(path, root)
        shown = f"{relative}/{path.name}" if relative else path.name
        reasons = "; ".join(f"{d.rule}: {d.reason}" for d in decisions) or "no rules are configured"
        raise RenderError(f"no rule matches {shown!r} ({reasons})")

    # Every variable is cleaned like a file name: a regex group or an audio tag may carry ESC or BEL.
    variables = {k: _printable(v) if isinstance(v, str) else v for k, v in {**_file_variables(path, root, audio), **groups}.items()}
    fields = _merge(config, rule)
    if RESERVED_METADATA_KEY in (fields["metadata"] or {}):
        raise RenderError(f"rule {rule.name!r}: metadata key {RESERVED_METADATA_KEY!r} is reserved for the job id",
                          rule=rule.name)

    def text(label: str, template: str) -> str:
        return _nfc(_render_field(rule.name, label, template, variables))

    title = text("title", fields["title"] or "{stem}").strip()
    description = text("description", fields["description"]) if fields["description"] is not None else None
    tags = [text(f"tags[{i}]", t).strip() for i, t in enumerate(fields["tags"] or [])]
    metadata = {k: text(f"metadata.{k}", v) for k, v in (fields["metadata"] or {}).items()}

    if sidecar is not None:
        given = sidecar.model_dump(exclude_none=True)
        title = _nfc(given.get("title", title)).strip()
        description = _nfc(given["description"]) if "description" in given else description
        tags = [_nfc(t).strip() for t in given["tags"]] if "tags" in given else tags
        metadata = {_nfc(k): _nfc(v) for k, v in given["metadata"].items()} if "metadata" in given else metadata
        for key in ("qualities", "is_public"):
            if getattr(sidecar, key) is not None:
                fields[key] = getattr(sidecar, key)

    qualities = _qualities(config, rule, fields["qualities"])
    publish = fields["publish"] or "immediately"
    is_public = fields["is_public"]
    metadata[RESERVED_METADATA_KEY] = job_id
    body: dict[str, Any] = {
        "type": "audio",
        "title": title,
        "description": description,
        "is_public": False if publish == "on_done" else is_public,
        "tags": list(dict.fromkeys(t for t in tags if t)) or None,
        "metadata": [{"key": k, "value": v} for k, v in metadata.items()],
        "qualities": qualities,
    }
    try:
        request = CreateRequest.model_validate(body)
    except ValidationError as exc:
        problems = "; ".join(describe_validation_error(exc))
        raise RenderError(f"rule {rule.name!r}: the create request is not valid: {problems}", rule=rule.name) from None
    return RenderedRequest(
        rule=rule.name,
        request=request,
        publish=publish,
        make_public_when_done=publish == "on_done" and is_public is not False,
        quality_names=[q.resolution for q in qualities or ()],
        variables={k: as_text(v) for k, v in variables.items()},
    )


def _merge(config: Config, rule: Rule) -> dict[str, Any]:
    defaults = config.defaults
    fields = {key: value if (value := getattr(rule, key)) is not None else getattr(defaults, key)
              for key in ("title", "description", "qualities", "is_public", "publish")}
    tags = (defaults.tags or []) + (rule.tags or [])
    fields["tags"] = list(dict.fromkeys(tags)) if defaults.tags is not None or rule.tags is not None else None
    if defaults.metadata is None and rule.metadata is None:
        fields["metadata"] = None
    else:
        fields["metadata"] = {**(defaults.metadata or {}), **(rule.metadata or {})}
    return fields


def _qualities(config: Config, rule: Rule, value: str | list[Quality] | None) -> list[Quality] | None:
    if not isinstance(value, str):
        return value
    if value not in config.presets:
        known = ", ".join(sorted(config.presets)) or "none are defined"
        raise RenderError(f"rule {rule.name!r}: unknown quality preset {value!r} (presets: {known})", rule=rule.name)
    return config.presets[value]


def _file_variables(path: Path, root: Path, audio: AudioInfo | None) -> dict[str, Any]:
    stat = path.stat()
    variables: dict[str, Any] = {
        "stem": _printable(path.stem),
        "name": _printable(path.name),
        "ext": _printable(path.suffix.removeprefix(".")),
        "folder": _printable(_relative_folder(path, root)),
        "parent": _printable(path.parent.name),
        "size": stat.st_size,
        "mtime": datetime.fromtimestamp(stat.st_mtime).astimezone(),
    }
    if audio is not None:
        if audio.duration is not None:
            variables["duration"] = round(audio.duration)
        variables.update({f"tag.{key}": value for key, value in audio.tags.items()})
    return variables


def _render_field(rule: str, label: str, template: str, variables: dict[str, Any]) -> str:
    try:
        return render_template(template, variables)
    except MissingVariable as exc:
        names = " nor ".join(repr(n) for n in exc.names)
        message = f"rule {rule!r}: template variable {names} is not defined for this file ({label}: {template!r})"
        raise RenderError(message, rule=rule, variable=exc.names[0]) from None
    except ValueError as exc:
        raise RenderError(f"rule {rule!r}: {label}: {exc} (in {template!r})", rule=rule) from None


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _printable(text: str) -> str:
    """A file name as text for a title: NFC, control characters (a newline in a name) turned into spaces,
    bytes that are not UTF-8 shown as U+FFFD."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(" " if unicodedata.category(c) == "Cc" else c for c in _nfc(text))


# ---- explain ------------------------------------------------------------------------------------


def explain(config: Config, path: Path) -> dict[str, Any]:
    """Everything ingestd would decide about ``path``, as JSON-able data; never raises for the file's own problems."""
    path = path.absolute()
    folder = config.folder_for(path)
    root = folder.path if folder is not None else path.parent
    data: dict[str, Any] = {
        "file": str(path),
        "folder": str(folder.path) if folder is not None else None,
        "relative_folder": _relative_folder(path, root),
        "audio": None,
        "sidecar": None,
        "rules": [],
        "rule": None,
        "variables": {},
        "publish": None,
        "make_public_when_done": None,
        "quality_names": [],
        "request": None,
        "error": None,
    }
    if not path.is_file():
        # The rules that would apply still show, by name and folder: often the reason someone asks.
        rule, _, decisions = match_rule(config, path, root)
        data.update(rules=[asdict(d) for d in decisions], rule=rule.name if rule else None,
                    error=f"no such file: {path}")
        return data

    audio = None
    try:
        audio = probe(path)
        data["audio"] = asdict(audio)
    except ProbeError as exc:
        data["audio"] = {"error": str(exc)}

    sidecar = None
    if folder is None or folder.sidecar != "off":
        try:
            sidecar_path = find_sidecar(path)
            if sidecar_path is not None:
                data["sidecar"] = {"path": str(sidecar_path)}
                sidecar = load_sidecar(sidecar_path)
                data["sidecar"]["values"] = sidecar.model_dump(mode="json", exclude_none=True)
            elif folder is not None and folder.sidecar == "required":
                data["sidecar"] = {"error": "this folder requires a sidecar and there is none"}
        except SidecarError as exc:
            data["sidecar"] = {**(data["sidecar"] or {}), "error": str(exc)}

    rule, _, decisions = match_rule(config, path, root)
    data["rules"] = [asdict(d) for d in decisions]
    data["rule"] = rule.name if rule else None
    try:
        rendered = render(config, path, root, job_id=EXPLAIN_JOB_ID, audio=audio, sidecar=sidecar)
    except RenderError as exc:
        data["error"] = str(exc)
        return data
    data.update(
        variables=rendered.variables,
        publish=rendered.publish,
        make_public_when_done=rendered.make_public_when_done,
        quality_names=rendered.quality_names,
        request=rendered.request.body(),
    )
    return data


def format_explanation(data: dict[str, Any]) -> str:
    """The output of ``explain`` as text for a person."""
    lines = [f"file:     {data['file']}"]
    if data["folder"] is None:
        lines.append("folder:   (not inside a watched folder; matched as if its own directory were one)")
    else:
        relative = data["relative_folder"] or "(the folder itself)"
        lines.append(f"folder:   {data['folder']}  →  {relative}")

    audio = data["audio"]
    if audio is None:
        pass
    elif "error" in audio:
        lines.append(f"audio:    {audio['error']}")
    else:
        facts = [audio["format"]]
        if audio["duration"] is not None:
            facts.append(f"{audio['duration']:.1f} s")
        if audio["sample_rate"]:
            facts.append(f"{audio['sample_rate']} Hz")
        if audio["channels"]:
            facts.append(f"{audio['channels']} ch")
        lines.append(f"audio:    {', '.join(facts)}")
        lines.extend(f"          tag.{k} = {v}" for k, v in audio["tags"].items())

    sidecar = data["sidecar"]
    if sidecar is None:
        lines.append("sidecar:  none")
    else:
        if "path" in sidecar:
            lines.append(f"sidecar:  {sidecar['path']}")
        if "error" in sidecar:
            lines.append(f"sidecar:  {sidecar['error']}")

    lines.append("rules:")
    if not data["rules"]:
        lines.append("  (none configured)")
    width = max((len(d["rule"]) for d in data["rules"]), default=0)
    for decision in data["rules"]:
        mark = "match" if decision["matched"] else "no   "
        lines.append(f"  {mark}  {decision['rule']:<{width}}  {decision['reason']}")

    if data["variables"]:
        lines.append("variables:")
        lines.extend(f"  {k} = {v!r}" for k, v in sorted(data["variables"].items()))

    if data["error"]:
        lines.append(f"error:    {data['error']}")
        return "\n".join(lines)

    publish = data["publish"]
    if publish == "on_done":
        made_public = data["make_public_when_done"]
        publish += " (created private; made public once transcoded)" if made_public else " (stays private)"
    lines.append(f"publish:  {publish}")
    lines.append("request:  POST /media/create")
    lines.extend("  " + line for line in json.dumps(data["request"], indent=2, ensure_ascii=False).splitlines())
    return "\n".join(lines)
