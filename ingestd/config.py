"""The config file: typed models for every key, and loading with file:line errors."""

from __future__ import annotations

import difflib
import ipaddress
import os
import re
import socket
import types
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PrivateAttr,
    SecretStr,
    Tag,
    ValidationError,
    field_validator,
    model_validator,
)
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from .errors import ConfigError, ConfigProblem
from .media_schema import Quality, field_path
from .templates import check_template, template_variables

DEFAULT_BASE_URL = "https://api.aiozstream.network/api"
DEFAULT_INCLUDE = ["*.mp3", "*.m4a", "*.aac", "*.wav", "*.flac", "*.ogg", "*.opus"]
# Temp names that editors, browsers and sync tools write before the real file appears.
DEFAULT_IGNORE = [
    ".*", "*.part", "*.tmp", "*.crdownload", "*.filepart", "~$*", "._*",
    ".DS_Store", ".syncthing.*.tmp", "*.partial", "*.download",
]

MIB = 1024 * 1024
MIN_CHUNK = 5 * MIB
MAX_CHUNK = 200 * 1000 * 1000

_SIZE_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "kib": 1024, "m": 1000**2, "mb": 1000**2, "mib": 1024**2,
               "g": 1000**3, "gb": 1000**3, "gib": 1024**3, "t": 1000**4, "tb": 1000**4, "tib": 1024**4}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def parse_size(value: Any) -> int:
    """``50MiB`` → 52428800; plain numbers are bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 50MiB")
    if isinstance(value, int):
        return value
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _SIZE_UNITS:
        raise ValueError(f"{value!r} is not a size (examples: 52428800, 50MiB, 200MB)")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2).lower()])


def format_price(usd: float) -> str:
    """Dollars with as many decimals as the amount needs (``$0.0042``, ``$1.50``): two small prices never both read ``$0.00``."""
    whole, _, cents = f"{usd:.6f}".rstrip("0").partition(".")
    return f"${whole}.{cents.ljust(2, '0')}"


def format_size(n: float) -> str:
    """The other way round, for people: 12582912 → ``12.0MiB`` (which ``parse_size`` reads back)."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{int(n)}B" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    raise AssertionError("unreachable")


def parse_duration(value: Any) -> float:
    """``6h`` → 21600.0, ``1h30m`` → 5400.0; plain numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s or 6h")
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|min|s|m|h|d)", text)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != text.replace(" ", ""):
        raise ValueError(f"{value!r} is not a duration (examples: 30, 30s, 5m, 1h30m, 6h)")
    return sum(float(n) * _DURATION_UNITS[u] for n, u in parts)


Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]


class _Model(BaseModel):
    # Numbers become strings where text is expected: `episode: 5` in metadata, `tags: [2024]`.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def _one_printable_word(value: Any) -> Any:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    if text and any(c.isspace() or not c.isprintable() for c in text):
        # Never quote the value: it is a secret. A stray CR or newline usually comes from an env file edited on Windows.
        raise ValueError("contains a space or a control character (a trailing CR or newline from an env file?); "
                         "credentials are one word of printable characters")
    return value


# Credentials go into HTTP headers: one word of printable characters, checked at load time.
Secret = Annotated[SecretStr, AfterValidator(_one_printable_word)]
PublicKey = Annotated[str, AfterValidator(_one_printable_word)]


class ApiConfig(_Model):
    base_url: str = DEFAULT_BASE_URL
    token: Secret | None = None
    public_key: PublicKey | None = None
    secret_key: Secret | None = None
    timeout: Duration = Field(default=60.0, gt=0)
    verify_tls: bool = True

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"https?://[^/\s]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value.rstrip("/")


    @model_validator(mode="after")
    def _credentials(self) -> "ApiConfig":
        if self.token is not None and not self.token.get_secret_value():
            self.token = None
        if not self.token and not (self.public_key and self.secret_key):
            raise ValueError("set api.token, or both api.public_key and api.secret_key")
        return self


class UploadConfig(_Model):
    workers: int = Field(default=2, ge=1, le=64)
    chunk_size: Size = 50 * MIB
    parallel_parts: int = Field(default=1, ge=1, le=16)
    part_index_base: Literal[0, 1] = 1
    max_attempts: int = Field(default=10, ge=1)
    poll_interval: Duration = Field(default=10.0, gt=0)
    transcode_timeout: Duration = Field(default=6 * 3600.0, gt=0)
    max_cost_usd: float | None = Field(default=None, ge=0)
    # The seed states no upper bound; this guards against a runaway file (e.g. a recorder left running).
    max_file_size: Size = 50 * 1024**3
    # Transient failures wait retry_delay, doubling per attempt up to retry_delay_max (a 429's wait is a floor).
    retry_delay: Duration = Field(default=2.0, gt=0)
    retry_delay_max: Duration = Field(default=600.0, gt=0)
    # After consecutive failures across all jobs the API counts as down: every worker pauses, no attempt is spent.
    outage_pause: Duration = Field(default=30.0, gt=0)
    budget_recheck: Duration = Field(default=600.0, gt=0)

    @field_validator("chunk_size")
    @classmethod
    def _chunk_bounds(cls, value: int) -> int:
        if not MIN_CHUNK <= value <= MAX_CHUNK:
            raise ValueError(f"must be between 5MiB and 200MB, got {value} bytes")
        return value


class FolderConfig(_Model):
    path: Path
    recursive: bool = True
    observer: Literal["auto", "native", "polling"] = "auto"
    poll_interval: Duration = Field(default=5.0, gt=0)
    settle: Duration = 5.0
    max_wait: Duration = 3600.0
    sidecar: Literal["required", "optional", "off"] = "optional"
    sidecar_wait: Duration = 60.0
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE))
    done_dir: Path
    failed_dir: Path
    # A share mounted after ingestd starts: missing is a warning, not a config problem, and the folder waits.
    optional: bool = False


class StatusConfig(_Model):
    listen: str | None = None
    # Bearer token for every page but /healthz; without it the listener should stay on loopback.
    token: Secret | None = None

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{value!r} is not HOST:PORT (example: 127.0.0.1:9137)")
        return value


class StateConfig(_Model):
    # Finished jobs (and their events) are forgotten this long after they end: the queue stays the size of
    # what is live plus this window. A copy of a file dropped after that is uploaded again.
    keep_finished: Duration = Field(default=90 * 86400.0, gt=0)


class LogConfig(_Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


NOTIFY_EVENTS = ("done", "failed", "duplicate", "held")


def _known_event(value: str) -> str:
    if value not in NOTIFY_EVENTS:
        raise ValueError(f"unknown event {value!r}{_suggestion(value, list(NOTIFY_EVENTS))} (events: {', '.join(NOTIFY_EVENTS)})")
    return value


NotifyEvent = Annotated[str, AfterValidator(_known_event)]

# What a notification's report may carry, so a command's placeholders are checked when the config loads.
REPORT_FIELDS = frozenset({
    "event", "job_id", "source", "rule", "status", "media_id", "title", "duration", "is_public", "size",
    "finished_at", "failed_at", "held_at", "reason", "attempts", "media_deleted", "retry",
    "assets.source_url", "assets.thumbnail_url", "assets.hls_url", "assets.hls_player_url", "assets.dash_url",
    "assets.dash_player_url", "assets.mp4_url",
})


class _NotifyTarget(_Model):
    events: list[NotifyEvent] = Field(default_factory=lambda: list(NOTIFY_EVENTS), min_length=1)


class WebhookNotify(_NotifyTarget):
    webhook: str
    secret: SecretStr | None = None

    @field_validator("webhook")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.match(r"https?://[^/\s?#]+", value):
            raise ValueError(f"{value!r} is not an http:// or https:// URL")
        return value


class CommandNotify(_NotifyTarget):
    command: list[str]
    timeout: Duration = Field(default=60.0, gt=0)

    @field_validator("command")
    @classmethod
    def _runnable(cls, argv: list[str]) -> list[str]:
        if not argv or not argv[0].strip():
            raise ValueError("the command is empty: give the program to run and its arguments, as a list")
        for item in argv:
            check_template(item)
            unknown = sorted(template_variables(item) - REPORT_FIELDS)
            if unknown:
                raise ValueError(f"unknown placeholder {{{unknown[0]}}} in {item!r}"
                                 f"{_suggestion(unknown[0], sorted(REPORT_FIELDS))} (placeholders are the report's fields)")
        return argv


class AppriseNotify(_NotifyTarget):
    apprise: SecretStr

    @field_validator("apprise")
    @classmethod
    def _understood(cls, value: SecretStr) -> SecretStr:
        from .notify import apprise_understands

        if not apprise_understands(value.get_secret_value()):
            raise ValueError("Apprise cannot use this URL (see https://github.com/caronc/apprise/wiki for the forms)")
        return value


def _notify_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for kind in ("webhook", "command", "apprise"):
            if kind in value:
                return f"{kind} target"
    return None


NotifyTarget = Annotated[
    Annotated[WebhookNotify, Tag("webhook target")] | Annotated[CommandNotify, Tag("command target")]
    | Annotated[AppriseNotify, Tag("apprise target")],
    Discriminator(_notify_kind, custom_error_type="notify_kind",
                  custom_error_message="a notify target needs one of webhook:, command: or apprise:"),
]


class RuleMatch(_Model):
    folder: str | None = None
    filename: str | None = None
    regex: str | None = None

    @field_validator("regex")
    @classmethod
    def _regex_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from None
        return value


def _qualities_kind(value: Any) -> str:
    return "preset" if isinstance(value, str) else "inline"


# A preset name, or the qualities written out; tagged so an error names one form, not both.
Qualities = Annotated[
    Annotated[str, Tag("preset")] | Annotated[list[Quality], Tag("inline")],
    Discriminator(_qualities_kind),
]


class RuleDefaults(_Model):
    """Fields merged under every rule."""

    title: str | None = None
    description: str | None = None
    tags: list[str] | None = None
    metadata: dict[str, str] | None = None
    qualities: Qualities | None = None
    is_public: bool | None = None
    publish: Literal["immediately", "on_done"] | None = None


class Rule(RuleDefaults):
    name: str = Field(min_length=1)
    match: RuleMatch = Field(default_factory=RuleMatch)


class Config(_Model):
    api: ApiConfig
    state_dir: Path
    queue_url: str | None = None
    # How long a claim outlives its last heartbeat (renewed every third of it): how soon a dead daemon's jobs are
    # taken over by another.
    queue_lease: Duration = Field(default=120.0, ge=3, le=3600)
    node_name: str = Field(default_factory=lambda: socket.gethostname().split(".")[0])
    upload: UploadConfig = Field(default_factory=UploadConfig)
    presets: dict[str, list[Quality]] = Field(default_factory=dict)
    folders: list[FolderConfig] = Field(min_length=1)
    unmatched: Literal["fail", "ignore"] = "fail"
    duplicates: Literal["skip", "upload"] = "skip"
    keep_failed_media: bool = False
    status: StatusConfig = Field(default_factory=StatusConfig)
    state: StateConfig = Field(default_factory=StateConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    defaults: RuleDefaults = Field(default_factory=RuleDefaults)
    rules: list[Rule] = Field(default_factory=list)
    notify: list[NotifyTarget] = Field(default_factory=list)

    _source: Path | None = PrivateAttr(default=None)
    _lines: dict[str, int] = PrivateAttr(default_factory=dict)

    @field_validator("queue_url")
    @classmethod
    def _postgresql_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"postgres(ql)?://\S+$", value):
            raise ValueError("not a postgresql://USER:PASS@HOST:PORT/DB URL (leave queue_url out for the SQLite queue"
                             " in state_dir)")
        return value

    @field_validator("node_name")
    @classmethod
    def _node_name(cls, value: str) -> str:
        # It is part of every lease owner (``node:pid:thread``) and of log lines, so: no separators, no spaces.
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}", value):
            raise ValueError(f"{value!r}: use 1-63 letters, digits, '.', '_' or '-', starting with a letter or digit")
        return value

    @property
    def source(self) -> Path | None:
        """The file this config was loaded from; None when built in code."""
        return self._source

    def warnings(self) -> list[ConfigProblem]:
        """Settings that work but are probably not meant: said by check-config and at start-up, never fatal."""
        found = []
        listen = self.status.listen
        if listen and self.status.token is None and not _is_loopback(listen.rpartition(":")[0].strip("[]")):
            found.append(ConfigProblem(str(self._source or "config"), self._lines.get("status.listen"), "status.listen",
                                       f"warning: {listen} can be reached from other hosts and status.token is not set, "
                                       "so anyone there reads file names, titles and errors; set status.token or "
                                       "listen on 127.0.0.1"))
        for i, folder in enumerate(self.folders):
            if folder.optional and not folder.path.is_dir():
                found.append(ConfigProblem(str(self._source or "config"), self._lines.get(f"folders[{i}].path"),
                                           f"folders[{i}].path",
                                           f"warning: {folder.path} does not exist (yet); it is optional, so ingestd "
                                           "waits for it and the status page shows it missing"))
        return found

    def missing_folders(self) -> list[ConfigProblem]:
        """Watched folders that are not there now and not marked ``optional``: nothing would be watched there."""
        return [ConfigProblem(str(self._source or "config"), self._lines.get(f"folders[{i}].path"), f"folders[{i}].path",
                              f"{folder.path} does not exist, so nothing would be watched there; create it, fix the "
                              "path, or set optional: true on a share that is mounted later")
                for i, folder in enumerate(self.folders) if not folder.optional and not folder.path.is_dir()]

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def folder_for(self, path: Path) -> FolderConfig | None:
        """The watched folder a path lies in, if any."""
        for folder in self.folders:
            if path.is_relative_to(folder.path):
                return folder
        return None


def load_config(path: str | Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Read, interpolate and validate a config file.

    Raises ``ConfigError`` listing every problem found, each located by line and dotted key.
    """
    path = Path(path)
    file = str(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_SIZE + 1)
        if len(raw) > MAX_CONFIG_SIZE:
            raise ConfigError([ConfigProblem(file, None, "", f"cannot read config file: larger than "
                                             f"{MAX_CONFIG_SIZE // MIB} MiB; is it the config file?")])
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([ConfigProblem(file, None, "", f"cannot read config file: {reason}")]) from None

    document = _Document(file, os.environ if environ is None else environ)
    try:
        data = document.read(text)
    except RecursionError:  # in composing the file, or in reading what it composed to
        raise ConfigError([ConfigProblem(file, None, "(yaml)", "invalid YAML: nested too deeply")]) from None
    _resolve_paths(data, path.absolute().parent)

    problems = list(document.problems)
    config: Config | None = None
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        problems += document.validation_problems(exc, data)
    problems += [document.problem(key, message) for key, message in _cross_checks(data)]

    if problems:
        raise ConfigError(sorted(problems, key=lambda p: p.line or 0))
    assert config is not None
    config._source = path.absolute()
    config._lines = document.lines
    return config


def check_config(path: str | Path, environ: Mapping[str, str] | None = None) -> list[ConfigProblem]:
    """Every problem in a config file; an empty list means it is valid."""
    try:
        load_config(path, environ=environ)
    except ConfigError as exc:
        return exc.problems
    return []


# --- reading YAML with line numbers ---------------------------------------------------------

_STR_TAG = "tag:yaml.org,2002:str"
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"

# The last part of a dotted key: `.chunk_size`, `[1]`, or a whole top-level key.
_LAST_PART = re.compile(r"(\.[^.\[]+|\[\d+\])$|^[^.\[]+$")
# `$${` is a literal `${`; a bare `${` that is neither form is malformed.
_VARIABLE = re.compile(r"\$\$\{|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|\$\{")


# Far above any real config (the example holds a few hundred values in 8 KiB), far below what would exhaust memory.
MAX_CONFIG_SIZE = 16 * MIB
MAX_CONFIG_VALUES = 100_000


class _Document:
    """One config file turned into plain data, remembering the line of every dotted key."""

    def __init__(self, file: str, environ: Mapping[str, str]):
        self.file = file
        self.environ = environ
        self.lines: dict[str, int] = {}
        self.problems: list[ConfigProblem] = []
        # Keys whose value is already reported as unreadable: their follow-on validation errors are noise.
        self.unreadable: set[str] = set()
        # Types and builds scalars the way SafeLoader would; composing is done by yaml.compose.
        self._loader = yaml.SafeLoader("")
        # Nodes being read right now: an alias back to one of them would never end.
        self._open: set[int] = set()
        self._values_read = 0

    def read(self, text: str) -> dict[str, Any]:
        """The file's data; raises ``ConfigError`` when it is not YAML or not a mapping."""
        try:
            root = yaml.compose(text, Loader=yaml.SafeLoader)
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([self._syntax_problem(exc)]) from None
        except yaml.YAMLError as exc:
            raise ConfigError([ConfigProblem(self.file, None, "(yaml)", f"invalid YAML: {exc}")]) from None
        if root is None:
            raise ConfigError([ConfigProblem(self.file, None, "", "the config file is empty")])
        if not isinstance(root, MappingNode):
            line = root.start_mark.line + 1
            raise ConfigError([ConfigProblem(self.file, line, "", "the config must be a mapping of keys (api:, folders:, ...)")])
        return self._value(root, "")

    def _syntax_problem(self, exc: yaml.MarkedYAMLError) -> ConfigProblem:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or "not valid YAML"
        if exc.context:
            elsewhere = exc.context_mark and mark and exc.context_mark.line != mark.line
            message = f"{exc.context} (line {exc.context_mark.line + 1}), {message}" if elsewhere else f"{exc.context}, {message}"
        return ConfigProblem(self.file, mark.line + 1 if mark else None, "(yaml)", f"invalid YAML: {message}")

    def _add(self, node: Node, key: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, node.start_mark.line + 1, key, message))

    def _unreadable(self, node: Node, key: str, message: str) -> None:
        self._add(node, key, message)
        self.unreadable.add(key)

    def _value(self, node: Node, path: str) -> Any:
        self._values_read += 1
        if self._values_read > MAX_CONFIG_VALUES:
            # Aliases are read as copies: a few lines of them nested in each other would expand past any memory.
            raise ConfigError([ConfigProblem(self.file, node.start_mark.line + 1, path,
                                             f"the config expands to more than {MAX_CONFIG_VALUES} values; "
                                             "are aliases repeated inside aliases?")])
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        if id(node) in self._open:
            self._unreadable(node, path, "an alias refers to a mapping or list that contains it")
            return None
        self._open.add(id(node))
        try:
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
            if node.tag != _SEQ_TAG:
                self._unreadable(node, path, f"unsupported YAML tag {node.tag}")
            return [self._value(item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        finally:
            self._open.discard(id(node))

    def _mapping(self, node: MappingNode, path: str) -> dict[str, Any]:
        if node.tag != _MAP_TAG:
            self._unreadable(node, path, f"unsupported YAML tag {node.tag}")
        # `<<: *anchor` supplies keys the mapping does not set itself, so it is read first.
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, SequenceNode) else [value_node]
                for source in sources:
                    if not isinstance(source, MappingNode):
                        self._add(source, path, "<< must merge a mapping or a list of mappings")
                        continue
                    values = self._value(source, path)
                    if isinstance(values, dict):  # None when the merge loops back on itself
                        merged.update({k: v for k, v in values.items() if k not in merged})
        own: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            if not isinstance(key_node, ScalarNode):
                self._add(key_node, path, "keys must be plain names, not lists or mappings")
                continue
            key = key_node.value  # as written: `on:` or `2024:` stay text
            child = f"{path}.{key}" if path else key
            if key in own:
                self._add(key_node, child, f"duplicate key (first set on line {self.lines[child]}); only one value can apply")
                continue
            self.lines[child] = key_node.start_mark.line + 1
            own[key] = self._value(value_node, child)
        return merged | own

    def _scalar(self, node: ScalarNode, path: str) -> Any:
        if node.tag == _STR_TAG and "$" in node.value:
            text = self._interpolate(node, path)
            if node.style is not None:  # quoted: stays text
                return text
            # Plain: typed as if the substituted text had been written in the file (`${WORKERS:-2}` is a number).
            node = ScalarNode(self._loader.resolve(ScalarNode, text, (True, False)), text, node.start_mark, node.end_mark)
        try:
            return self._loader.construct_object(node)
        except yaml.YAMLError as exc:
            self._unreadable(node, path, str(getattr(exc, "problem", None) or exc))
            return None

    def _interpolate(self, node: ScalarNode, path: str) -> str:
        def substitute(match: re.Match[str]) -> str:
            if match.group(0) == "$${":
                return "${"
            name = match.group("name")
            if name is None:
                self._unreadable(node, path, "malformed ${...}: write ${NAME} or ${NAME:-default}, or $${ for a literal ${")
                return match.group(0)
            value = self.environ.get(name)
            if value:
                return value
            if match.group("default") is not None:
                return match.group("default")
            state = "is empty" if value == "" else "is not set"
            self._unreadable(node, path, f"environment variable {name} {state}")
            return ""

        return _VARIABLE.sub(substitute, node.value)

    # --- turning validation errors into located problems --------------------------------------

    def line(self, key: str) -> int | None:
        """The line of a dotted key, or of the nearest enclosing key that has one."""
        while key not in self.lines:
            if not key:
                return None
            parent = _LAST_PART.sub("", key)
            key = parent if parent != key else ""
        return self.lines[key]

    def problem(self, key: str, message: str) -> ConfigProblem:
        return ConfigProblem(self.file, self.line(key), key, message)

    def validation_problems(self, error: ValidationError, data: dict[str, Any]) -> list[ConfigProblem]:
        problems = []
        for item in error.errors():
            loc = _data_loc(item["loc"], data, keep_last=item["type"] == "missing")
            key = field_path(loc)
            if any(_follows_from(key, item["type"], unreadable) for unreadable in self.unreadable):
                continue  # the value itself is already reported
            if item["type"] == "missing":
                message = "required key is missing"
            elif item["type"] == "extra_forbidden":
                message = "unknown key" + _suggestion(str(loc[-1]), _known_keys(loc[:-1]))
            else:
                message = item["msg"].removeprefix("Value error, ")
                if item["type"] == "literal_error" and isinstance(item["input"], (int, float)) and f"'{item['input']}'" in message:
                    message += f' (write it quoted: "{item["input"]}")'
            problems.append(self.problem(key, message))
        return problems


def _follows_from(key: str, error_type: str, unreadable: str) -> bool:
    """Whether an error at ``key`` is a consequence of the unreadable value at ``unreadable``: it is about
    that value or something in it, or it is a check over a whole section (``value_error``) holding it."""
    return _contains(unreadable, key) or (error_type == "value_error" and _contains(key, unreadable))


def _contains(outer: str, key: str) -> bool:
    return not outer or key == outer or key.startswith((outer + ".", outer + "["))


def _data_loc(loc: tuple[Any, ...], data: Any, *, keep_last: bool) -> tuple[Any, ...]:
    """Keep the parts of a pydantic ``loc`` that are keys or indexes in the data, dropping union tags and validator names."""
    kept: list[Any] = []
    current = data
    for position, part in enumerate(loc):
        if isinstance(part, int) and isinstance(current, list) and 0 <= part < len(current):
            current = current[part]
        elif isinstance(part, str) and isinstance(current, dict) and part in current:
            current = current[part]
        elif not (keep_last and position == len(loc) - 1):
            continue
        kept.append(part)
    return tuple(kept)


def _known_keys(loc: tuple[Any, ...]) -> list[str]:
    """The field names a model accepts at ``loc``, found by following the type annotations from ``Config``."""
    types_here: list[Any] = [Config]
    for part in loc:
        following: list[Any] = []
        for tp in types_here:
            if isinstance(tp, type) and issubclass(tp, BaseModel) and isinstance(part, str) and part in tp.model_fields:
                following += _concrete(tp.model_fields[part].annotation)
            elif get_origin(tp) is dict and isinstance(part, str):
                following += _concrete(get_args(tp)[1])
            elif get_origin(tp) is list and isinstance(part, int):
                following += _concrete(get_args(tp)[0])
        types_here = following
    return [name for tp in types_here if isinstance(tp, type) and issubclass(tp, BaseModel) for name in tp.model_fields]


def _concrete(tp: Any) -> list[Any]:
    origin = get_origin(tp)
    if origin is Annotated:
        return _concrete(get_args(tp)[0])
    if origin in (Union, types.UnionType):
        return [t for arg in get_args(tp) for t in _concrete(arg)]
    return [tp]


def _suggestion(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.75)
    return f"; did you mean {close[0]!r}?" if close else ""


# --- paths and checks across keys -------------------------------------------------------------

_PATH_KEYS = ("path", "done_dir", "failed_dir")


def _resolve_paths(data: dict[str, Any], base: Path) -> None:
    """Make every path absolute: relative ones are relative to the config file, not the working directory."""

    def resolve(value: Any) -> Any:
        if not isinstance(value, str):
            return value
        return os.path.normpath(base / Path(value).expanduser())

    if "state_dir" in data:
        data["state_dir"] = resolve(data["state_dir"])
    for folder in _list(data.get("folders")):
        if isinstance(folder, dict):
            for key in _PATH_KEYS:
                if key in folder:
                    folder[key] = resolve(folder[key])


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _cross_checks(data: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """Problems no single key shows: references, names and folders that clash. Reads the raw data so
    they are reported alongside type errors, skipping values that are not even the right type."""
    presets = _dict(data.get("presets"))
    for name, qualities in presets.items():
        yield from _repeated_resolutions(qualities, f"presets.{name}")

    rules = _list(data.get("rules"))
    holders = [("defaults", _dict(data.get("defaults")))] + [(f"rules[{i}]", _dict(r)) for i, r in enumerate(rules)]
    for where, holder in holders:
        qualities = holder.get("qualities")
        if isinstance(qualities, str) and qualities not in presets:
            known = ", ".join(sorted(presets)) or "none are defined"
            yield f"{where}.qualities", f"no preset named {qualities!r}{_suggestion(qualities, list(presets))} (presets: {known})"
        yield from _repeated_resolutions(qualities, f"{where}.qualities")
        yield from _template_errors(holder, where)

    yield from _rule_clashes(rules)
    yield from _repeated_targets(_list(data.get("notify")))
    yield from _folder_clashes(_list(data.get("folders")))
    yield from _state_dir_clashes(data.get("state_dir"), _list(data.get("folders")))


def _template_errors(holder: dict[str, Any], where: str) -> Iterator[tuple[str, str]]:
    """Template syntax is checked at load time, so a typo is a config error, not a failed job."""
    fields: list[tuple[str, Any]] = [(key, holder.get(key)) for key in ("title", "description")]
    fields += [(f"tags[{i}]", tag) for i, tag in enumerate(_list(holder.get("tags")))]
    fields += [(f"metadata.{key}", value) for key, value in _dict(holder.get("metadata")).items()]
    for key, template in fields:
        if isinstance(template, str):
            try:
                check_template(template)
            except ValueError as exc:
                yield f"{where}.{key}", str(exc)


def _repeated_resolutions(qualities: Any, where: str) -> Iterator[tuple[str, str]]:
    seen: dict[Any, int] = {}
    for i, quality in enumerate(_list(qualities)):
        resolution = _dict(quality).get("resolution")
        if isinstance(resolution, str) and resolution in seen:
            yield f"{where}[{i}].resolution", f"resolution {resolution!r} is already used by {where}[{seen[resolution]}]"
        elif isinstance(resolution, str):
            seen[resolution] = i


def _rule_clashes(rules: list[Any]) -> Iterator[tuple[str, str]]:
    first_with_name: dict[str, int] = {}
    catch_all: int | None = None
    for i, rule in enumerate(rules):
        rule = _dict(rule)
        name = rule.get("name")
        if isinstance(name, str) and name in first_with_name:
            yield f"rules[{i}].name", f"rule name {name!r} is already used by rules[{first_with_name[name]}]"
        elif isinstance(name, str):
            first_with_name[name] = i
        if catch_all is not None:
            yield f"rules[{i}]", f"this rule can never match: rules[{catch_all}] has no match conditions and takes every file"
        elif all(_dict(rule.get("match")).get(k) is None for k in ("folder", "filename", "regex")):
            catch_all = i


def _repeated_targets(targets: list[Any]) -> Iterator[tuple[str, str]]:
    # One target is one sender with one place in the outbox: the same one twice would be told everything once.
    first: dict[tuple[str, str], int] = {}
    for i, target in enumerate(targets):
        for kind in ("webhook", "command", "apprise"):
            destination = _dict(target).get(kind)
            if isinstance(destination, (str, list)):
                key = (kind, repr(destination))
                if key in first:
                    yield f"notify[{i}]", f"the same {kind} as notify[{first[key]}]: list all its events there, once"
                first.setdefault(key, i)


def _folder_clashes(folders: list[Any]) -> Iterator[tuple[str, str]]:
    # Compared with symlinks resolved, so an alias of a watched folder is still caught.
    watched = [(i, Path(os.path.realpath(f["path"]))) for i, f in enumerate(folders) if isinstance(_dict(f).get("path"), str)]
    for i, path in watched:
        same = next((j for j, other in watched if j < i and other == path), None)
        outer = next(((j, other) for j, other in watched if other != path and path.is_relative_to(other)), None)
        if same is not None:
            yield f"folders[{i}].path", f"the same folder is already watched by folders[{same}]"
        elif outer is not None:
            yield f"folders[{i}].path", f"lies inside folders[{outer[0]}].path ({outer[1]}); watched folders must not nest"
    for i, folder in enumerate(folders):
        for key in ("done_dir", "failed_dir"):
            value = _dict(folder).get(key)
            if not isinstance(value, str):
                continue
            target = Path(os.path.realpath(value))
            for j, path in watched:
                if target.is_relative_to(path):
                    relation = "is" if target == path else "lies inside"
                    yield f"folders[{i}].{key}", f"{relation} the watched folder folders[{j}].path ({path}); finished files would be ingested again"
                elif path.is_relative_to(target):
                    yield (f"folders[{i}].{key}", f"contains the watched folder folders[{j}].path ({path}); filing into it "
                           "would move files under the watched folder, and the watcher skips everything below it")


def _state_dir_clashes(state_dir: Any, folders: list[Any]) -> Iterator[tuple[str, str]]:
    if not isinstance(state_dir, str):
        return
    state = Path(os.path.realpath(state_dir))
    for j, folder in enumerate(folders):
        path = _dict(folder).get("path")
        if isinstance(path, str) and state.is_relative_to(os.path.realpath(path)):
            yield "state_dir", f"lies inside the watched folder folders[{j}].path ({path}); keep the queue outside what ingestd ingests"
