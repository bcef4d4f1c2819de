"""The emulator's media: in-memory records, part files and assembled uploads on disk."""

from __future__ import annotations

import itertools
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

import mutagen

from ingestd.media_schema import CreateRequest, UpdateRequest


class Problem(Exception):
    """A request the API refuses: answered as ``{"status": "error", "message": ...}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def not_found() -> Problem:
    return Problem(404, "media not found")


_BYTES_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")
_PART_RANGE = re.compile(r"^part (\d+)/(\d+|\*)$")


@dataclass(frozen=True)
class ContentRange:
    """``bytes a-b/total`` (``end`` exclusive here) or the official clients' ``part N/*`` / ``part N/N``."""

    start: int | None = None
    end: int | None = None
    total: int | None = None
    part: int | None = None
    last: bool = False

    @classmethod
    def parse(cls, header: str | None) -> ContentRange:
        text = (header or "").strip()
        if match := _BYTES_RANGE.match(text):
            first, last, total = (int(g) for g in match.groups())
            if first > last or last >= total:
                raise Problem(400, f"invalid Content-Range {text!r}: need start <= end < total")
            return cls(start=first, end=last + 1, total=total, last=last + 1 == total)
        if match := _PART_RANGE.match(text):
            number, count = match.groups()
            if count != "*" and int(count) != int(number):
                raise Problem(400, f"invalid Content-Range {text!r}: the final part is given as 'part N/N'")
            return cls(part=int(number), last=count != "*")
        raise Problem(400, f"invalid Content-Range {text!r}: expected 'bytes START-END/TOTAL'")

    @classmethod
    def whole(cls, size: int) -> ContentRange:
        """The range of a single-part upload sent without a Content-Range."""
        if size <= 0:
            raise Problem(400, "file: is empty")
        return cls(start=0, end=size, total=size, last=True)


@dataclass
class Part:
    index: int
    path: Path
    size: int
    start: int | None = None  # bytes form only
    part: int | None = None  # "part N" form only
    last: bool = False


@dataclass
class Media:
    id: str
    user_id: str
    title: str
    description: str
    is_public: bool
    metadata: list[dict[str, str]] | None
    tags: list[str] | None
    qualities: list[dict[str, str]]
    created_at: float
    updated_at: float
    seq: int
    type: str = "audio"
    status: str = "new"
    player_theme_id: str = ""
    parts: dict[int, Part] = field(default_factory=dict)
    total: int | None = None
    index_base: int | None = None
    range_form: str | None = None  # "bytes" or "part", fixed by the first part
    completing: bool = False
    size: int = 0
    duration: float = 0.0
    ready_at: float | None = None
    outcome: str | None = None  # "done" or "fail" once transcoding ends
    file: Path | None = None

    def settle(self, now: float) -> None:
        """Transcoding ends lazily: the first look after ``ready_at`` sees the outcome."""
        if self.status == "transcoding" and self.ready_at is not None and now >= self.ready_at:
            self.status = self.outcome or "done"
            self.updated_at = self.ready_at
            for quality in self.qualities:
                quality["status"] = self.status


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


class Store:
    def __init__(self, data_dir: Path):
        self.data_dir = data_dir
        self.spool_dir = data_dir / "spool"
        self.media_dir = data_dir / "media"
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self.media_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self._media: dict[str, Media] = {}
        self._seq = itertools.count()

    # -- lookups -----------------------------------------------------------

    def _get(self, media_id: str, user_id: str | None, *, include_deleted: bool = False) -> Media:
        media = self._media.get(media_id)
        if media is None or (user_id is not None and media.user_id != user_id):
            raise not_found()
        media.settle(time.time())
        if media.status == "deleted" and not include_deleted:
            raise not_found()
        return media

    def get(self, media_id: str, user_id: str | None) -> Media:
        with self.lock:
            return self._get(media_id, user_id)

    def all(self, user_id: str | None = None) -> list[Media]:
        now = time.time()
        with self.lock:
            found = [m for m in self._media.values() if user_id is None or m.user_id == user_id]
            for media in found:
                media.settle(now)
            return found

    # -- create / update / delete -----------------------------------------

    def create(self, request: CreateRequest, user_id: str, kind: str = "audio") -> Media:
        now = time.time()
        media = Media(
            id=str(uuid.uuid4()),
            user_id=user_id,
            title=request.title,
            description=request.description or "",
            is_public=True if request.is_public is None else request.is_public,
            metadata=[item.model_dump() for item in request.metadata] if request.metadata is not None else None,
            tags=list(request.tags) if request.tags is not None else None,
            qualities=[{"name": q.resolution, "status": "new", "type": q.type} for q in request.qualities or ()],
            created_at=now,
            updated_at=now,
            seq=next(self._seq),
            type=kind,
        )
        with self.lock:
            self._media[media.id] = media
        return media

    def update(self, media_id: str, user_id: str, request: UpdateRequest) -> Media:
        changes = request.model_dump(exclude_unset=True)
        with self.lock:
            media = self._get(media_id, user_id)
            for name, value in changes.items():
                if value is None:
                    continue
                if name in ("player_theme_id", "player_id"):
                    media.player_theme_id = value
                else:
                    setattr(media, name, value)
            media.updated_at = time.time()
            return media

    def delete(self, media_id: str, user_id: str) -> Media:
        with self.lock:
            media = self._get(media_id, user_id)
            media.status = "deleted"
            media.updated_at = time.time()
        shutil.rmtree(self._parts_dir(media.id), ignore_errors=True)
        return media

    # -- parts -------------------------------------------------------------

    def _parts_dir(self, media_id: str) -> Path:
        return self.media_dir / media_id / "parts"

    def check_accepts_parts(self, media_id: str, user_id: str) -> None:
        with self.lock:
            media = self._get(media_id, user_id)
            if media.status != "new" or media.completing:
                raise Problem(400, "upload already completed")

    def add_part(self, media_id: str, user_id: str, index: int, span: ContentRange, upload: Path, size: int, min_part_size: int) -> None:
        """Check a received part against the media's earlier parts and keep it (replacing the same index)."""
        if span.start is not None:
            if size != span.end - span.start:
                raise Problem(400, f"part has {size} bytes but Content-Range says {span.end - span.start}")
        if not span.last and size < min_part_size:
            raise Problem(400, f"part of {size} bytes is smaller than the minimum of {min_part_size} (only the final part may be shorter)")
        form = "bytes" if span.start is not None else "part"
        with self.lock:
            media = self._get(media_id, user_id)
            if media.status != "new" or media.completing:
                raise Problem(400, "upload already completed")
            if media.range_form not in (None, form):
                raise Problem(400, f"Content-Range uses the {form!r} form but earlier parts used {media.range_form!r}")
            if span.total is not None and media.total not in (None, span.total):
                raise Problem(400, f"Content-Range total {span.total} differs from {media.total} given by earlier parts")
            base = self._index_base(media, index, span)
            parts_dir = self._parts_dir(media.id)
            parts_dir.mkdir(parents=True, exist_ok=True)
            target = parts_dir / f"{index}.part"
            upload.replace(target)
            media.range_form = form
            if span.total is not None:
                media.total = span.total
            media.index_base = base
            media.parts[index] = Part(index=index, path=target, size=size, start=span.start, part=span.part, last=span.last)
            media.updated_at = time.time()

    @staticmethod
    def _index_base(media: Media, index: int, span: ContentRange) -> int | None:
        """0- and 1-based numbering are both fine, but not mixed within one media."""
        base = media.index_base
        implied = None
        if span.start == 0:
            if index not in (0, 1):
                raise Problem(400, f"the part starting at byte 0 has index {index}; expected 0 or 1")
            implied = index
        elif index == 0:
            implied = 0
        if implied is None:
            return base
        if base is not None and base != implied:
            raise Problem(400, f"index {index} does not fit this media's parts, which are numbered from {base}")
        return implied

    # -- complete ----------------------------------------------------------

    def lose_part(self, media_id: str, index: int) -> None:
        """Forget an acknowledged part, as a storage fault on the service's side would."""
        with self.lock:
            part = self._media[media_id].parts.pop(index)
        part.path.unlink(missing_ok=True)

    def begin_complete(self, media_id: str, user_id: str) -> list[Part]:
        """Check the parts cover the whole file and return them in file order; the media is then locked for assembly."""
        with self.lock:
            media = self._get(media_id, user_id)
            if media.status != "new" or media.completing:
                raise Problem(400, "upload already completed")
            ordered = self._ordered_parts(media)
            media.completing = True
            return ordered

    @staticmethod
    def _ordered_parts(media: Media) -> list[Part]:
        if not media.parts:
            raise Problem(400, "no parts uploaded")
        if media.range_form == "bytes":
            ordered = sorted(media.parts.values(), key=lambda p: (p.start, p.index))
            position = 0
            for part in ordered:
                if part.start > position:
                    raise Problem(400, f"parts do not cover the file: bytes {position}-{part.start - 1} are missing")
                if part.start < position:
                    raise Problem(400, f"part {part.index} (bytes {part.start}-{part.start + part.size - 1}) overlaps an earlier part")
                position += part.size
            if position != media.total:
                raise Problem(400, f"parts do not cover the file: bytes {position}-{media.total - 1} are missing")
            base = media.index_base if media.index_base is not None else ordered[0].index
            for number, part in enumerate(ordered, start=base):
                if part.index != number:
                    raise Problem(400, f"part at bytes {part.start}-{part.start + part.size - 1} has index {part.index}; expected {number}")
            return ordered
        ordered = sorted(media.parts.values(), key=lambda p: p.part)
        first = ordered[0].part
        if first not in (0, 1):
            raise Problem(400, f"parts do not cover the file: part {ordered[0].part - 1} is missing")
        for expected, part in enumerate(ordered, start=first):
            if part.part != expected:
                raise Problem(400, f"parts do not cover the file: part {expected} is missing")
        if not ordered[-1].last:
            raise Problem(400, f"parts do not cover the file: the final part (after part {ordered[-1].part}) is missing")
        return ordered

    def finish_complete(self, media_id: str, parts: list[Part], transcode_delay: float, force_fail: bool) -> None:
        """Assemble the parts into one file, read its duration, and start transcoding."""
        target = self.media_dir / media_id / "source"
        try:
            with open(target, "wb") as out:
                for part in parts:
                    with open(part.path, "rb") as src:
                        _append(src, out)
        except OSError:
            with self.lock:
                self._media[media_id].completing = False
            raise
        duration = _audio_duration(target)
        now = time.time()
        with self.lock:
            media = self._media[media_id]
            media.completing = False
            shutil.rmtree(self._parts_dir(media_id), ignore_errors=True)
            media.parts.clear()
            if media.status == "deleted":
                return
            media.file = target
            media.size = target.stat().st_size
            media.duration = duration or 0.0
            media.status = "transcoding"
            for quality in media.qualities:
                quality["status"] = "transcoding"
            media.outcome = "fail" if force_fail or duration is None else "done"
            media.ready_at = now + transcode_delay
            media.updated_at = now

    # -- views -------------------------------------------------------------

    def as_json(self, media: Media, api_url: str, origin: str) -> dict[str, Any]:
        mid = media.id
        return {
            "id": mid,
            "user_id": media.user_id,
            "type": media.type,
            "title": media.title,
            "description": media.description,
            "metadata": [dict(item) for item in media.metadata] if media.metadata is not None else None,
            "tags": list(media.tags) if media.tags is not None else None,
            "qualities": [dict(q) for q in media.qualities],
            "captions": None,
            "chapters": None,
            "player_theme": None,
            "duration": media.duration,
            "size": media.size,
            "is_mp4": False,
            "is_public": media.is_public,
            "status": media.status,
            "created_at": _timestamp(media.created_at),
            "updated_at": _timestamp(media.updated_at),
            "assets": {
                "source_url": f"{api_url}/media/{mid}/source",
                "thumbnail_url": f"{api_url}/media/{mid}/thumbnail?resolution=original",
                "hls_url": f"{api_url}/media/{mid}/m3u8",
                "hls_iframe": _iframe(f"{origin}/vod/hls/{mid}"),
                "hls_player_url": f"{origin}/vod/hls/{mid}",
                "dash_url": f"{api_url}/media/{mid}/manifest",
                "dash_iframe": _iframe(f"{origin}/vod/dash/{mid}"),
                "dash_player_url": f"{origin}/vod/dash/{mid}",
            },
            "player_theme_id": media.player_theme_id,
        }


def _append(src: BinaryIO, out: BinaryIO) -> None:
    """Copy ``src`` to the end of ``out`` inside the kernel where it can (a 1 GiB upload is assembled on complete)."""
    if hasattr(os, "copy_file_range"):
        try:
            while os.copy_file_range(src.fileno(), out.fileno(), 64 * 1024 * 1024):
                pass
            return
        except OSError:
            src.seek(0)
            out.seek(0, os.SEEK_END)
    shutil.copyfileobj(src, out, 4 * 1024 * 1024)


def _iframe(src: str) -> str:
    return f'<iframe src="{src}" width="100%" height="100%" frameborder="0" scrolling="no" allowfullscreen="true"></iframe>'


def _audio_duration(path: Path) -> float | None:
    """The audio's length in seconds, or None when mutagen cannot read it as audio."""
    try:
        audio = mutagen.File(path)
    except Exception:  # mutagen raises many types on garbage; all mean "not audio"
        return None
    length = getattr(getattr(audio, "info", None), "length", None)
    if not length or length <= 0:
        return None
    return float(length)
