"""What the media API answers, as lenient pydantic models.

The live service and its published clients disagree on details, and add fields
over time, so every model accepts unknown keys and nearly every field is optional.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class QualityStatus(_Lenient):
    """One requested output quality and how far its transcode has got."""

    name: str | None = None
    status: str | None = None
    type: str | None = None


class MetadataEntry(_Lenient):
    key: str
    value: str | None = None


class Assets(_Lenient):
    source_url: str | None = None
    thumbnail_url: str | None = None
    hls_url: str | None = None
    hls_iframe: str | None = None
    hls_player_url: str | None = None
    dash_url: str | None = None
    dash_iframe: str | None = None
    dash_player_url: str | None = None
    mp4_url: str | None = None


class Media(_Lenient):
    id: str
    user_id: str | None = None
    type: str | None = None
    title: str | None = None
    description: str | None = None
    metadata: list[MetadataEntry] | None = None
    tags: list[str] | None = None
    qualities: list[QualityStatus] | None = None
    duration: float | None = None
    size: int | None = None
    is_public: bool | None = None
    status: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    assets: Assets | None = None
    player_theme_id: str | None = None

    def metadata_dict(self) -> dict[str, str]:
        """The metadata items as a mapping; a repeated key keeps its last value."""
        return {item.key: item.value or "" for item in self.metadata or ()}


class MediaPage(_Lenient):
    items: list[Media]
    total: int


class Cost(_Lenient):
    price: float
    is_enough: bool


class RateLimit(BaseModel):
    """The ``X-RateLimit-*`` headers of the last response that carried them."""

    model_config = ConfigDict(frozen=True)

    limit: int | None = None
    remaining: int | None = None
    retry_after: float | None = None
