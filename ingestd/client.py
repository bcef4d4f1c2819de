"""A typed, synchronous client for the AIOZ Stream media API.

The client maps every failure onto the ``APIError`` family in :mod:`ingestd.errors`
and never retries by itself: the job queue decides what to retry and when.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar
from urllib.parse import quote

import httpcore
import httpx
from pydantic import BaseModel, ValidationError

from . import __version__
from .config import ApiConfig
from .errors import (
    APIConnectionError,
    APIError,
    AuthError,
    NotFoundError,
    RateLimitedError,
    RejectedError,
    ServerError,
    SourceChangedError,
)
from .log import SecretRedactor
from .media_schema import CreateRequest, UpdateRequest
from .models import Cost, Media, MediaPage, RateLimit

M = TypeVar("M", bound=BaseModel)

READ_SIZE = 1024 * 1024
# No answer of the API comes near this (a page of 100 media is some 200 KiB); past it, a broken proxy or a hostile
# server is sending, and reading on would only fill memory.
MAX_ANSWER = 16 * 1024 * 1024
# The longest wait a server's Retry-After is taken at: a daily quota's. "inf", or a date in the year 9999, is a day.
MAX_WAIT = 24 * 3600.0
MAX_PAGE_SIZE = 100
# Enough connections for several workers each uploading parts in parallel.
POOL_SIZE = 32
# A write timeout covers one 1 MiB write; allow slow uplinks a long stall before giving up.
MIN_WRITE_TIMEOUT = 300.0
# A whole request, answer included, must end within DEADLINE_FACTOR × api.timeout, plus the time its
# body takes at MIN_UPLOAD_RATE: a server that trickles a byte at a time cannot hold a worker forever.
DEADLINE_FACTOR = 3
MIN_UPLOAD_RATE = 64 * 1024  # bytes per second


@dataclass(frozen=True)
class Part:
    """One chunk of a file, as sent to ``POST /media/{id}/part``."""

    path: Path
    index: int  # the number sent in the form, already in the configured index base
    start: int  # byte offset in the file
    length: int
    total: int  # the whole file's size

    def __post_init__(self) -> None:
        if self.start < 0 or self.length <= 0 or self.start + self.length > self.total:
            raise ValueError(f"part {self.index} ({self.start}+{self.length}) does not fit a file of {self.total} bytes")

    @property
    def content_range(self) -> str:
        return f"bytes {self.start}-{self.start + self.length - 1}/{self.total}"


def plan_parts(size: int, chunk_size: int, index_base: int = 1) -> list[tuple[int, int, int]]:
    """Split ``size`` bytes into ``(index, start, length)`` parts of ``chunk_size``; the last may be shorter."""
    if size <= 0:
        raise ValueError("an empty file cannot be uploaded")
    if chunk_size <= 0:
        raise ValueError(f"chunk size must be positive, got {chunk_size}")
    return [(index_base + n, start, min(chunk_size, size - start)) for n, start in enumerate(range(0, size, chunk_size))]


class _KeyAuth(httpx.Auth):
    """A key pair, sent as AIOZ's Node client sends it: HTTP Basic ``public:secret`` and the seed's header pair."""

    def __init__(self, public_key: str, secret_key: str):
        self._public_key = public_key
        self._secret_key = secret_key
        self._basic = "Basic " + base64.b64encode(f"{public_key}:{secret_key}".encode()).decode("ascii")

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = self._basic
        request.headers["stream-public-key"] = self._public_key
        request.headers["stream-secret-key"] = self._secret_key
        yield request

    def __repr__(self) -> str:
        return "<stream key auth>"


class _BearerAuth(httpx.Auth):
    def __init__(self, token: str):
        self._token = token

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request

    def __repr__(self) -> str:
        return "<bearer auth>"


_deadline = threading.local()  # time.monotonic() by which the current thread's request must be over


class DeadlineExceeded(httpcore.ReadTimeout):
    """The request's overall deadline passed (each read and write may still have been quick)."""


class _DeadlineStream(httpcore.NetworkStream):
    """A connection whose every read and write waits no longer than what is left of the current request's deadline."""

    def __init__(self, stream: httpcore.NetworkStream):
        self._stream = stream

    @staticmethod
    def _wait(timeout: float | None) -> float | None:
        end = getattr(_deadline, "value", None)
        if end is None:
            return timeout
        left = end - time.monotonic()
        if left <= 0:
            raise DeadlineExceeded("the request's deadline passed")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._wait(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._wait(timeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(self, ssl_context: Any, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        return _DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, self._wait(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _DeadlineBackend(httpcore.SyncBackend):
    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        return _DeadlineStream(super().connect_tcp(host, port, _DeadlineStream._wait(timeout), local_address, socket_options))


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Requests this thread sends within the block, on a ``with_deadlines`` transport, are over ``seconds`` from now."""
    _deadline.value = time.monotonic() + seconds
    try:
        yield
    finally:
        _deadline.value = None


def with_deadlines(transport: httpx.BaseTransport) -> httpx.BaseTransport:
    """Make ``transport``'s connections keep the overall deadline of the request they carry.

    httpx has per-read and per-write timeouts only; its connection pool takes an httpcore network
    backend, which is where each read and write can be cut to what is left of the deadline.
    """
    pool = getattr(transport, "_pool", None)
    # A transport without a connection pool (a test double) opens no connection to hold up.
    if isinstance(pool, httpcore.ConnectionPool):
        pool._network_backend = _DeadlineBackend()
    return transport


class StreamClient:
    """The eight media endpoints. Thread-safe: one instance serves every worker."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        public_key: str | None = None,
        secret_key: str | None = None,
        timeout: float = 60.0,
        verify_tls: bool = True,
        transport: httpx.BaseTransport | None = None,
    ):
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base URL must start with http:// or https://, got {base_url!r}")
        auth: httpx.Auth
        if token:
            auth = _BearerAuth(token)
        elif public_key and secret_key:
            auth = _KeyAuth(public_key, secret_key)
        else:
            raise ValueError("a token, or both a public key and a secret key, are required")
        self.base_url = base_url.rstrip("/")
        self.rate_limit = RateLimit()
        self.timeout = timeout
        # An error text may quote what was sent (a header, the server echoing it): it never carries our credentials.
        self._redactor = SecretRedactor([s for s in (token, secret_key) if s])
        # Plain http has no certificate to check, and loading the CA bundle would cost a tenth of a second per start.
        verify = verify_tls and self.base_url.startswith("https://")
        self._http = httpx.Client(
            base_url=self.base_url + "/",
            auth=auth,
            headers={"User-Agent": f"ingestd/{__version__}", "Accept": "application/json"},
            timeout=httpx.Timeout(timeout, write=max(timeout, MIN_WRITE_TIMEOUT)),
            limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE),
            verify=verify,
            transport=with_deadlines(transport or httpx.HTTPTransport(
                verify=verify, limits=httpx.Limits(max_connections=POOL_SIZE, max_keepalive_connections=POOL_SIZE))),
        )

    @classmethod
    def from_config(cls, api: ApiConfig, *, transport: httpx.BaseTransport | None = None) -> StreamClient:
        return cls(
            api.base_url,
            token=api.token.get_secret_value() if api.token else None,
            public_key=api.public_key,
            secret_key=api.secret_key.get_secret_value() if api.secret_key else None,
            timeout=api.timeout,
            verify_tls=api.verify_tls,
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"<StreamClient {self.base_url}>"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> StreamClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- endpoints -------------------------------------------------------------------

    def create_media(self, request: CreateRequest) -> Media:
        """``POST /media/create``; the new media, status ``new``."""
        data = self._call("POST", "/media/create", json=request.body())
        return _parse(Media, data, "POST", "/media/create")

    def list_media(
        self,
        *,
        offset: int = 0,
        limit: int = 25,
        sort_by: str | None = None,
        order_by: str | None = None,
        type: str | None = "audio",
        tags: list[str] | None = None,
        metadata: dict[str, str] | None = None,
        status: str | list[str] | None = None,
        search: str | None = None,
    ) -> MediaPage:
        """``POST /media``: one page of media matching every given filter.

        Filters go out in the OpenAPI spec's shapes, the only ones AIOZ's own clients send:
        ``metadata`` as ``[{"key", "value"}]``, ``tags`` and ``status`` as arrays.
        """
        body: dict[str, Any] = {"offset": offset, "limit": limit}
        optional = {
            "sort_by": sort_by, "order_by": order_by, "type": type, "search": search,
            "tags": list(tags) if tags is not None else None,
            "metadata": [{"key": k, "value": v} for k, v in metadata.items()] if metadata is not None else None,
            "status": [status] if isinstance(status, str) else status,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        data = self._call("POST", "/media", json=body)
        if not isinstance(data, dict):
            _unexpected("POST", "/media", "data is not an object")
        # The seed lists items under "videos", the OpenAPI spec under "media".
        items = data.get("videos")
        if items is None:
            items = data.get("media")
        items = items or []
        media = [_parse(Media, item, "POST", "/media") for item in items]
        total = data.get("total")
        return MediaPage(items=media, total=total if isinstance(total, int) else offset + len(media))

    def iter_media(self, *, page_size: int = MAX_PAGE_SIZE, **filters: Any) -> Iterator[Media]:
        """Every media matching ``filters`` (as for :meth:`list_media`), page by page, oldest first."""
        filters.setdefault("sort_by", "created_at")
        filters.setdefault("order_by", "asc")
        offset = 0
        while True:
            page = self.list_media(offset=offset, limit=page_size, **filters)
            yield from page.items
            offset += len(page.items)
            if not page.items or offset >= page.total:
                return

    def find_by_metadata(self, key: str, value: str, *, title: str | None = None) -> list[Media]:
        """All media, in any status but ``deleted``, that carry the metadata item ``key: value``.

        No server-side filter is trusted: every candidate's metadata is checked here, every page is read,
        and if the service refuses the metadata filter (400) the media titled ``title`` are searched instead.
        A refused search raises the ``RejectedError``.
        """
        try:
            candidates = list(self.iter_media(metadata={key: value}))
        except RejectedError:
            if title is None:
                raise
            candidates = list(self.iter_media(search=title))
        return [m for m in candidates if m.status != "deleted" and m.metadata_dict().get(key) == value]

    def credentials_work(self) -> bool:
        """Whether the service takes our credentials at all: one cheap list call, one item."""
        try:
            self.list_media(limit=1)
        except AuthError:
            return False
        except RejectedError:
            pass  # refused for its body: the credentials got past the door
        return True

    def get_media(self, media_id: str) -> Media:
        path = _media_path(media_id)
        return _parse(Media, self._call("GET", path), "GET", path)

    def media_cost(self, qualities: list[str], duration: float) -> Cost:
        """``GET /media/cost``: the estimated transcode price in USD, and whether the balance covers it."""
        params = {"qualities": ",".join(qualities), "type": "audio", "duration": _number(duration)}
        data = self._call("GET", "/media/cost", params=params)
        return _parse(Cost, data, "GET", "/media/cost")

    def upload_part(self, media_id: str, part: Part, *, on_progress: Callable[[int], None] | None = None) -> str:
        """``POST /media/{id}/part``; returns the part's MD5 (lowercase hex).

        The file is read once, 1 MiB at a time, while the request is sent; the hash
        field goes last so it can be computed on the way. ``on_progress`` is called
        with the number of file bytes just sent.
        """
        path = _media_path(media_id) + "/part"
        body = _PartBody(part, on_progress)
        headers = {
            "Content-Type": f"multipart/form-data; boundary={body.boundary}",
            "Content-Length": str(body.content_length),
            "Content-Range": part.content_range,
        }
        stream = body.stream()
        try:
            self._call("POST", path, content=stream, headers=headers)
        finally:
            stream.close()  # a server may answer before reading everything; release the file now
        return body.md5

    def complete_upload(self, media_id: str) -> None:
        """``GET /media/{id}/complete``, once every part is acknowledged."""
        self._call("GET", _media_path(media_id) + "/complete")

    def update_media(self, media_id: str, update: UpdateRequest) -> None:
        """``PATCH /media/{id}`` with only the fields ``update`` sets."""
        body = update.body()
        if not body:
            raise ValueError("the update sets no field")
        self._call("PATCH", _media_path(media_id), json=body)

    def delete_media(self, media_id: str) -> None:
        self._call("DELETE", _media_path(media_id))

    # --- plumbing --------------------------------------------------------------------

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send one request; the ``data`` member of a 2xx answer, or the matching ``APIError``."""
        length = int(kwargs.get("headers", {}).get("Content-Length", 0))
        budget = DEADLINE_FACTOR * self.timeout + length / MIN_UPLOAD_RATE
        _deadline.value = time.monotonic() + budget
        try:
            with self._http.stream(method, path.lstrip("/"), **kwargs) as response:
                content = read_at_most(response, MAX_ANSWER)
                if len(content) > MAX_ANSWER:
                    _unexpected(method, path, f"larger than {MAX_ANSWER // (1024 * 1024)} MiB, more than any the API gives")
        except httpx.TimeoutException as exc:
            if isinstance(exc.__context__, DeadlineExceeded) or time.monotonic() >= _deadline.value:
                raise APIConnectionError(f"no complete answer within {budget:.0f}s (the whole request's deadline)",
                                         method=method, path=path) from exc
            raise APIConnectionError(f"timed out: {type(exc).__name__}", method=method, path=path) from exc
        except httpx.TransportError as exc:
            raise APIConnectionError(self._redactor.scrub(f"{type(exc).__name__}: {exc}"), method=method, path=path) from exc
        finally:
            _deadline.value = None
        rate_limit = _rate_limit(response.headers)
        if rate_limit is not None:
            self.rate_limit = rate_limit
        if not response.is_success:
            raise _error_for(response, method, path, self._redactor.scrub(_server_message(response, content)))
        if not content:
            return None  # a 204 carries nothing, and needs nothing
        try:
            payload = json.loads(content)
        except ValueError:
            _unexpected(method, path, f"answer is not JSON ({response.headers.get('content-type', 'no content type')})")
        return payload.get("data") if isinstance(payload, dict) else None


class _PartBody:
    """A multipart/form-data body for one part, produced as it is sent.

    Field order: ``index``, ``file``, ``hash``. Everything but the file bytes is
    known up front, so the exact Content-Length is too.
    """

    def __init__(self, part: Part, on_progress: Callable[[int], None] | None):
        self.part = part
        self.on_progress = on_progress
        self.boundary = secrets.token_hex(16)
        self.md5 = ""
        dash = f"--{self.boundary}\r\n".encode()
        self._head = (
            dash + _disposition("index") + b"\r\n" + str(part.index).encode() + b"\r\n"
            + dash + _disposition("file", part.path.name) + b"Content-Type: application/octet-stream\r\n\r\n"
        )
        self._hash_head = b"\r\n" + dash + _disposition("hash") + b"\r\n"
        self._tail = f"\r\n--{self.boundary}--\r\n".encode()
        md5_hex_length = 32
        self.content_length = len(self._head) + part.length + len(self._hash_head) + md5_hex_length + len(self._tail)

    def stream(self) -> Iterator[bytes]:
        part = self.part
        digest = hashlib.md5()
        fd = os.open(part.path, os.O_RDONLY)
        try:
            size = os.fstat(fd).st_size
            if size != part.total:
                raise SourceChangedError(f"{part.path.name} is now {size} bytes, the upload was planned for {part.total}")
            yield self._head
            offset, end = part.start, part.start + part.length
            while offset < end:
                chunk = os.pread(fd, min(READ_SIZE, end - offset), offset)
                if not chunk:
                    raise SourceChangedError(f"{part.path.name} ended at byte {offset} while part {part.index} was being sent")
                digest.update(chunk)
                offset += len(chunk)
                yield chunk
                if self.on_progress is not None:
                    self.on_progress(len(chunk))
        finally:
            os.close(fd)
        self.md5 = digest.hexdigest()
        yield self._hash_head + self.md5.encode() + self._tail


def _disposition(name: str, filename: str | None = None) -> bytes:
    header = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        # RFC 7578 4.2 / WHATWG: escape what would end the quoted string or the header line.
        # A name that is not UTF-8 goes out with U+FFFD for its odd bytes: the server only shows it.
        escaped = filename.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        escaped = escaped.replace("\r", "%0D").replace("\n", "%0A").replace('"', "%22")
        header += f'; filename="{escaped}"'
    return header.encode() + b"\r\n"


def _parse(model: type[M], data: Any, method: str, path: str) -> M:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        _unexpected(method, path, str(exc))


def _media_path(media_id: str) -> str:
    if not media_id:
        raise ValueError("media id is empty")
    return "/media/" + quote(media_id, safe="")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _unexpected(method: str, path: str, detail: str) -> NoReturn:
    raise ServerError(f"unexpected answer: {detail}", method=method, path=path)


def _error_for(response: httpx.Response, method: str, path: str, message: str) -> APIError:
    code = response.status_code
    where: dict[str, Any] = {"status_code": code, "method": method, "path": path}
    if code == 429:
        return RateLimitedError(message, retry_after=_retry_after(response.headers), **where)
    if code >= 500 or code == 408:
        return ServerError(message, retry_after=_positive(_seconds(response.headers.get("retry-after"))), **where)
    if code in (401, 403):
        return AuthError(message, **where)
    if code == 404:
        return NotFoundError(message, **where)
    return RejectedError(message, **where)


def read_at_most(response: httpx.Response, limit: int) -> bytes:
    """A streamed answer's body, decoded, up to ``limit`` bytes and one more (so the caller can tell there is more);
    the rest is never read."""
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > limit:
            break
    return bytes(body[:limit + 1])


def _server_message(response: httpx.Response, content: bytes) -> str:
    try:
        payload = json.loads(content)
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        # The API's {"status", "message"}, or RFC 7807 ProblemDetails {"type", "title", "detail"}.
        for key in ("message", "detail", "error", "title", "status"):
            if isinstance(payload.get(key), str) and payload[key]:
                return payload[key]
    text = content[:4096].decode(response.encoding or "utf-8", "replace").strip()
    return text[:200] if text else response.reason_phrase or f"HTTP {response.status_code}"


def _rate_limit(headers: httpx.Headers) -> RateLimit | None:
    limit = _int(headers.get("x-ratelimit-limit"))
    remaining = _int(headers.get("x-ratelimit-remaining"))
    retry_after = _seconds(headers.get("x-ratelimit-retry-after"))
    if limit is None and remaining is None and retry_after is None:
        return None
    return RateLimit(limit=limit, remaining=remaining, retry_after=retry_after)


def _retry_after(headers: httpx.Headers) -> float | None:
    """The wait a 429 asks for; a zero says nothing, so the caller's own backoff applies."""
    for name in ("x-ratelimit-retry-after", "retry-after"):
        seconds = _positive(_seconds(headers.get(name)))
        if seconds is not None:
            return seconds
    return None


def _positive(seconds: float | None) -> float | None:
    return seconds if seconds else None


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _seconds(value: str | None) -> float | None:
    """Delay seconds, or an HTTP date (``Retry-After`` allows both); at most ``MAX_WAIT``."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(MAX_WAIT, max(0.0, seconds)) if seconds == seconds else None  # (NaN is not equal to itself)
