"""The config file: typed models for every key, and loading with file:line errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, model_validator

from .media_schema import Quality

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
Duration = Annotated[float, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiConfig(_Model):
    base_url: str = DEFAULT_BASE_URL
    token: SecretStr | None = None
    public_key: str | None = None
    secret_key: SecretStr | None = None
    timeout: Duration = 60.0
    verify_tls: bool = True

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
    part_index_base: Literal[0, 1] = 0
    max_attempts: int = Field(default=10, ge=1)
    poll_interval: Duration = 10.0
    transcode_timeout: Duration = 6 * 3600.0
    max_cost_usd: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _chunk_bounds(self) -> "UploadConfig":
        if not MIN_CHUNK <= self.chunk_size <= MAX_CHUNK:
            raise ValueError(f"chunk_size must be between 5MiB and 200MB, got {self.chunk_size} bytes")
        return self


class FolderConfig(_Model):
    path: Path
    recursive: bool = True
    observer: Literal["auto", "native", "polling"] = "auto"
    poll_interval: Duration = 5.0
    settle: Duration = 5.0
    max_wait: Duration = 3600.0
    sidecar: Literal["required", "optional", "off"] = "optional"
    sidecar_wait: Duration = 60.0
    include: list[str] = Field(default_factory=lambda: list(DEFAULT_INCLUDE))
    ignore: list[str] = Field(default_factory=lambda: list(DEFAULT_IGNORE))
    done_dir: Path
    failed_dir: Path


class StatusConfig(_Model):
    listen: str | None = None


class LogConfig(_Model):
    format: Literal["auto", "json", "console"] = "auto"
    level: Literal["debug", "info", "warning", "error"] = "info"


class RuleMatch(_Model):
    folder: str | None = None
    filename: str | None = None
    regex: str | None = None

    @model_validator(mode="after")
    def _regex_compiles(self) -> "RuleMatch":
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"regex does not compile: {exc}") from None
        return self


Qualities = str | list[Quality]


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
    name: str
    match: RuleMatch = Field(default_factory=RuleMatch)


class Config(_Model):
    api: ApiConfig
    state_dir: Path
    upload: UploadConfig = Field(default_factory=UploadConfig)
    presets: dict[str, list[Quality]] = Field(default_factory=dict)
    folders: list[FolderConfig] = Field(min_length=1)
    unmatched: Literal["fail", "ignore"] = "fail"
    duplicates: Literal["skip", "upload"] = "skip"
    keep_failed_media: bool = False
    status: StatusConfig = Field(default_factory=StatusConfig)
    log: LogConfig = Field(default_factory=LogConfig)
    defaults: RuleDefaults = Field(default_factory=RuleDefaults)
    rules: list[Rule] = Field(default_factory=list)

    # Where the config came from; set by load_config, used in messages and reloads.
    source: Path | None = Field(default=None, exclude=True)

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def folder_for(self, path: Path) -> FolderConfig | None:
        """The watched folder a path lies in, if any."""
        for folder in self.folders:
            if path.is_relative_to(folder.path):
                return folder
        return None
