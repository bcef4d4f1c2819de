"""``POST /media`` (list) and ``GET /media/cost``: parsing their parameters the way the API does."""

from __future__ import annotations

import math
from typing import Any

from ingestd.media_schema import MEDIA_STATUSES

from ._store import Media, Problem

SORT_FIELDS = ("created_at", "updated_at", "title", "size")
ORDERS = ("asc", "desc")
MEDIA_TYPES = ("audio", "video")
_LIST_KEYS = {"offset", "limit", "sort_by", "order_by", "type", "tags", "metadata", "status", "search"}


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int | None = None) -> int:
    value = default if body.get(name) is None else body[name]  # null is absent, as a Go service decodes it
    if isinstance(value, bool) or not isinstance(value, int):
        raise Problem(400, f"{name}: must be an integer")
    if value < low or (high is not None and value > high):
        raise Problem(400, f"{name}: must be between {low} and {high}" if high is not None else f"{name}: must be at least {low}")
    return value


def _choice(body: dict[str, Any], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = default if body.get(name) is None else body[name]
    if value not in allowed:
        raise Problem(400, f"{name}: must be one of {', '.join(allowed)}")
    return value


def _strings(value: Any, name: str) -> list[str]:
    """A list of strings, or one comma-separated string."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    raise Problem(400, f"{name}: must be a list of strings or a comma-separated string")


def _metadata(value: Any) -> dict[str, str]:
    if isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        return value
    if isinstance(value, list):
        pairs = {}
        for position, item in enumerate(value):
            if not (isinstance(item, dict) and set(item) == {"key", "value"} and all(isinstance(v, str) for v in item.values())):
                raise Problem(400, f"metadata[{position}]: must be an object with string key and value")
            pairs[item["key"]] = item["value"]
        return pairs
    raise Problem(400, "metadata: must be an object of strings or a list of {key, value}")


def _official_shapes(body: dict[str, Any]) -> None:
    """Strict mode: the filter shapes of the OpenAPI spec, the only ones AIOZ's own clients send."""
    for name in ("tags", "status"):
        if body.get(name) is not None and not isinstance(body[name], list):
            raise Problem(400, f"{name}: must be an array")
    if body.get("metadata") is not None and not isinstance(body["metadata"], list):
        raise Problem(400, "metadata: must be an array of {key, value}")


class ListQuery:
    """A validated list request; ``strict`` refuses filter shapes no official client sends."""

    def __init__(self, body: Any, *, strict: bool = False):
        if not isinstance(body, dict):
            raise Problem(400, "request body must be a JSON object")
        unknown = sorted(set(body) - _LIST_KEYS)
        if unknown:
            raise Problem(400, f"{unknown[0]}: unknown field")
        if strict:
            _official_shapes(body)
        self.offset = _int(body, "offset", 0, 0)
        self.limit = _int(body, "limit", 25, 1, 100)
        if body.get("sort_by") in ORDERS and body.get("order_by") in SORT_FIELDS:
            # The Go client's live test names them the other way round, and the service takes it.
            body = body | {"sort_by": body["order_by"], "order_by": body["sort_by"]}
        self.sort_by = _choice(body, "sort_by", "created_at", SORT_FIELDS)
        self.order_by = _choice(body, "order_by", "asc", ORDERS)
        self.type = body.get("type")
        if self.type is not None and self.type not in MEDIA_TYPES:
            raise Problem(400, f"type: must be one of {', '.join(MEDIA_TYPES)}")
        statuses = _strings(body["status"], "status") if body.get("status") is not None else []
        for status in statuses:
            if status not in MEDIA_STATUSES:
                raise Problem(400, f"status: {status!r} is not one of {', '.join(MEDIA_STATUSES)}")
        self.statuses = set(statuses)
        search = body.get("search")
        if search is not None and not isinstance(search, str):
            raise Problem(400, "search: must be a string")
        self.search = (search or "").casefold()
        self.tags = set(_strings(body["tags"], "tags")) if body.get("tags") is not None else set()
        self.metadata = _metadata(body["metadata"]) if body.get("metadata") is not None else {}

    def matches(self, media: Media) -> bool:
        if self.type is not None and media.type != self.type:
            return False
        if self.statuses:
            if media.status not in self.statuses:
                return False
        elif media.status == "deleted":
            return False
        if self.search and self.search not in media.title.casefold() and self.search not in media.description.casefold():
            return False
        if self.tags and not self.tags <= set(media.tags or ()):
            return False
        if self.metadata:
            have = {item["key"]: item["value"] for item in media.metadata or ()}
            if any(have.get(key) != value for key, value in self.metadata.items()):
                return False
        return True

    def apply(self, media: list[Media]) -> tuple[list[Media], int]:
        """The requested page, and how many matched in all."""
        found = [m for m in media if self.matches(m)]
        keys = {
            "created_at": lambda m: (m.created_at, m.seq),
            "updated_at": lambda m: (m.updated_at, m.seq),
            "title": lambda m: (m.title.casefold(), m.seq),
            "size": lambda m: (m.size, m.seq),
        }
        found.sort(key=keys[self.sort_by], reverse=self.order_by == "desc")
        return found[self.offset : self.offset + self.limit], len(found)


def price(query: dict[str, list[str]], rates: dict[str, float]) -> float:
    """Validate ``GET /media/cost`` parameters and price the transcode in USD."""
    kind = query.get("type", [""])[-1]
    if kind != "audio":
        raise Problem(400, "type: must be audio")
    presets = [name.strip() for name in ",".join(query.get("qualities", [])).split(",")]
    if not any(presets):
        raise Problem(400, "qualities: at least one quality preset is required")
    for name in presets:
        if name not in rates:
            raise Problem(400, f"qualities: unknown preset {name!r} (known: {', '.join(rates)})")
    raw = query.get("duration", [""])[-1]
    try:
        duration = float(raw)
    except ValueError:
        raise Problem(400, "duration: must be a number of seconds") from None
    if not math.isfinite(duration) or duration <= 0:
        raise Problem(400, "duration: must be greater than 0")
    return round(duration / 60 * sum(rates[name] for name in presets), 6)
