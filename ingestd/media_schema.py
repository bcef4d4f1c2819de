"""The seed's rules for audio media requests, as pydantic models.

Config presets, rendered create requests and the emulator all validate against
these, so a request ingestd would send is checked by the same rules the server
applies, and error messages name the field the way the server does
(``qualities[1].audio_config.sample_rate``).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError, field_validator, model_validator

SAMPLE_RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000, 88200, 96000)
CONTAINERS = {"hls": ("mpegts", "mp4"), "dash": ("fmp4",)}
MEDIA_STATUSES = ("new", "transcoding", "done", "fail", "deleted")

MAX_TITLE = 255
MAX_DESCRIPTION = 1000
MAX_ITEMS = 50
MAX_ITEM_CHARS = 255

# BCP 47 language tag, the common shapes: language[-script][-region][-variant...]
_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z]{4})?(-([A-Za-z]{2}|\d{3}))?(-([A-Za-z0-9]{5,8}|\d[A-Za-z0-9]{3}))*$")

ShortStr = Annotated[StrictStr, Field(max_length=MAX_ITEM_CHARS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class AudioConfig(_Strict):
    codec: Literal["aac"]
    bitrate: StrictInt = Field(gt=0)
    channels: Literal["2"]
    sample_rate: StrictInt
    language: StrictStr = "en"
    index: StrictInt = Field(default=0, ge=0)

    @field_validator("sample_rate")
    @classmethod
    def _sample_rate(cls, value: int) -> int:
        if value not in SAMPLE_RATES:
            raise ValueError(f"must be one of {', '.join(map(str, SAMPLE_RATES))}")
        return value

    @field_validator("language")
    @classmethod
    def _language(cls, value: str) -> str:
        if not _BCP47.match(value):
            raise ValueError("must be a BCP 47 language tag such as en, es, ja or pt-BR")
        return value


class Quality(_Strict):
    resolution: Literal["standard", "good", "highest", "lossless"]
    type: Literal["hls", "dash"]
    container_type: StrictStr
    audio_config: AudioConfig

    @model_validator(mode="after")
    def _container_matches_type(self) -> "Quality":
        allowed = CONTAINERS[self.type]
        if self.container_type not in allowed:
            raise ValueError(f"container_type {self.container_type!r} does not fit type {self.type!r} (allowed: {', '.join(allowed)})")
        return self


class MetadataItem(_Strict):
    key: ShortStr
    value: ShortStr


def _unique_resolutions(qualities: list[Quality] | None) -> list[Quality] | None:
    seen: set[str] = set()
    for quality in qualities or ():
        if quality.resolution in seen:
            raise ValueError(f"resolution {quality.resolution!r} appears twice")
        seen.add(quality.resolution)
    return qualities


class CreateRequest(_Strict):
    """Body of ``POST /media/create``."""

    type: Literal["audio"]
    title: StrictStr = Field(min_length=1, max_length=MAX_TITLE)
    description: StrictStr | None = Field(default=None, max_length=MAX_DESCRIPTION)
    is_public: StrictBool | None = None
    metadata: list[MetadataItem] | None = Field(default=None, max_length=MAX_ITEMS)
    tags: list[ShortStr] | None = Field(default=None, max_length=MAX_ITEMS)
    qualities: list[Quality] | None = None

    @field_validator("qualities")
    @classmethod
    def _qualities(cls, value: list[Quality] | None) -> list[Quality] | None:
        return _unique_resolutions(value)

    def body(self) -> dict[str, Any]:
        """The JSON body to send: unset optional fields are left out."""
        return self.model_dump(mode="json", exclude_none=True)


class UpdateRequest(_Strict):
    """Body of ``PATCH /media/{id}``: only the fields that change."""

    title: StrictStr | None = Field(default=None, min_length=1, max_length=MAX_TITLE)
    description: StrictStr | None = Field(default=None, max_length=MAX_DESCRIPTION)
    is_public: StrictBool | None = None
    metadata: list[MetadataItem] | None = Field(default=None, max_length=MAX_ITEMS)
    tags: list[ShortStr] | None = Field(default=None, max_length=MAX_ITEMS)
    player_theme_id: StrictStr | None = None
    player_id: StrictStr | None = None

    def body(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def field_path(loc: tuple[Any, ...]) -> str:
    """``('qualities', 1, 'audio_config', 'sample_rate')`` → ``qualities[1].audio_config.sample_rate``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def describe_validation_error(error: ValidationError) -> list[str]:
    """One ``field: message`` line per problem, in the server's field naming."""
    lines = []
    for item in error.errors():
        loc = tuple(p for p in item["loc"] if not (isinstance(p, str) and (p.startswith("function-") or p in {"literal", "str", "int"})))
        message = item["msg"].removeprefix("Value error, ")
        path = field_path(loc)
        lines.append(f"{path}: {message}" if path else message)
    return lines
