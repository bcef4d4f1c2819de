"""The HTTP side of the emulator: routing, auth, rate limits and fault injection."""

from __future__ import annotations

import base64
import binascii
import collections
import json
import logging
import math
import random
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

from pydantic import ValidationError

from ingestd.media_schema import CreateRequest, UpdateRequest, describe_validation_error

from ._body import Body, BodyError, read_multipart
from ._listing import ListQuery, price
from ._settings import Account, EmulatorSettings
from ._store import ContentRange, Problem, Store, not_found

log = logging.getLogger("ingestd.emulator")

MAX_JSON_BODY = 1024 * 1024
MAX_PART_BODY = 256 * 1024 * 1024
# Reported as the limit when none is configured: clients read the headers, so they must look sane.
UNLIMITED = 1_000_000
_HEX_MD5 = re.compile(r"^[0-9a-fA-F]{32}$")
_FORM_METADATA = re.compile(r"^metadata\[(\d{1,2})\]\[(key|value)\]$")
MEDIA_TYPES = ("audio", "video")


@dataclass(frozen=True)
class RequestRecord:
    """One handled request, for tests that count calls and benchmarks that time them."""

    method: str
    path: str
    status: int
    media_id: str | None = None
    dropped: bool = False
    received_at: float = 0.0  # time.time() when the request line had been read


@dataclass
class _Answer:
    status: int
    payload: dict[str, Any]
    media_id: str | None = None
    retry_after: int | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    emulator: Emulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ingestd-emulator"
    timeout = 120  # an idle keep-alive connection is closed after this long
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.emulator._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._track(self.connection, add=False)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # Malformed request lines and headers still get the API's JSON shape.
        self.close_connection = True
        self._write(_Answer(code, {"status": "error", "message": message or self.responses.get(code, ("error",))[0]}), keep_alive=False)

    def do_GET(self) -> None:
        self._handle()

    do_POST = do_PATCH = do_DELETE = do_PUT = do_HEAD = do_OPTIONS = do_GET

    def _handle(self) -> None:
        received_at = time.time()
        emulator = self.server.emulator
        body = Body(self.rfile, self.headers, MAX_PART_BODY)
        path = urlsplit(self.path).path
        drop = False
        try:
            answer, drop = emulator._dispatch(self, body)
        except (ConnectionError, TimeoutError, OSError) as exc:
            log.debug("connection lost while reading %s %s: %s", self.command, path, exc)
            self.close_connection = True
            return
        except Exception:
            log.exception("emulator failed on %s %s", self.command, path)
            answer = _Answer(500, {"status": "error", "message": "internal error"})
        keep_alive = body.drain()
        emulator._record(RequestRecord(self.command, path, answer.status, answer.media_id, drop, received_at))
        if drop:
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self._write(answer, keep_alive=keep_alive)

    def _write(self, answer: _Answer, *, keep_alive: bool) -> None:
        data = json.dumps(answer.payload).encode()
        limit, remaining, retry_after = self.server.emulator._rate_headers()
        if answer.retry_after is not None:
            retry_after = answer.retry_after
        if self.request_version == "HTTP/0.9":
            self.request_version = "HTTP/1.0"  # a bare HTTP/0.9 answer would have no status line or headers
        self.send_response(answer.status)
        self.send_header("Content-Type", "application/json")  # exactly: the Node client refuses any parameter
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-RateLimit-Limit", str(limit))
        self.send_header("X-RateLimit-Remaining", str(remaining))
        self.send_header("X-RateLimit-Retry-After", str(retry_after))
        if answer.status == 429:
            self.send_header("Retry-After", str(retry_after))
        if not keep_alive:
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)


def _error(status: int, message: str) -> _Answer:
    return _Answer(status, {"status": "error", "message": message})


def _raw_body(body: Body) -> bytes:
    if body.length is not None and body.length > MAX_JSON_BODY:
        raise Problem(413, f"request body larger than {MAX_JSON_BODY} bytes")
    raw = bytearray()
    for chunk in body.chunks():
        raw += chunk
        if len(raw) > MAX_JSON_BODY:
            raise Problem(413, f"request body larger than {MAX_JSON_BODY} bytes")
    return bytes(raw)


def _json_body(body: Body) -> Any:
    """The request's JSON body; the spec marks every body required, so an empty one is refused."""
    raw = _raw_body(body)
    if not raw.strip():
        raise Problem(400, "request body is required")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise Problem(400, f"malformed JSON body: {exc}") from None


def _form_body(body: Body) -> dict[str, Any]:
    """An ``application/x-www-form-urlencoded`` create, as the spec allows: scalars, repeated ``tags``,
    ``metadata[N][key]``/``metadata[N][value]``, and ``qualities`` as a JSON string."""
    try:
        pairs = parse_qsl(_raw_body(body).decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise Problem(400, "form body is not UTF-8") from None
    data: dict[str, Any] = {}
    metadata: dict[int, dict[str, str]] = {}
    for name, value in pairs:
        if name in ("tags", "tags[]"):
            data.setdefault("tags", []).append(value)
        elif match := _FORM_METADATA.match(name):
            metadata.setdefault(int(match[1]), {})[match[2]] = value
        elif name == "is_public":
            if value not in ("true", "false"):
                raise Problem(400, "is_public: must be true or false")
            data["is_public"] = value == "true"
        elif name == "qualities":
            try:
                data["qualities"] = json.loads(value)
            except ValueError:
                raise Problem(400, "qualities: must be a JSON array") from None
        elif name in data:
            raise Problem(400, f"{name}: given twice")
        else:
            data[name] = value
    if metadata:
        data["metadata"] = [metadata[n] for n in sorted(metadata)]
    return data


def _create_body(body: Body, headers: Any) -> Any:
    content_type = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
    return _form_body(body) if content_type == "application/x-www-form-urlencoded" else _json_body(body)


def _validated(model: type[CreateRequest] | type[UpdateRequest], data: Any) -> Any:
    if not isinstance(data, dict):
        raise Problem(400, "request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise Problem(400, "; ".join(describe_validation_error(exc))) from None


def _endpoint(method: str, path: str) -> str | None:
    """The endpoint a request is for, as named in ``Faults.endpoints``."""
    rest = path.split("/")[3:] if path.startswith("/api/media") else None
    if rest is None:
        return None
    if not rest or rest == [""]:
        return "list"
    if rest[0] in ("create", "cost"):
        return rest[0]
    if len(rest) == 1:
        return {"GET": "get", "PATCH": "update", "DELETE": "delete"}.get(method)
    return rest[1] if rest[1] in ("part", "complete") else None


def _media_id(text: str) -> str:
    try:
        parsed = uuid.UUID(text)
    except ValueError:
        raise not_found() from None
    if str(parsed) != text.lower():
        raise not_found()
    return text.lower()


class Emulator:
    """A local stand-in for the AIOZ Stream media API, served over real HTTP in a background thread."""

    def __init__(self, settings: EmulatorSettings | None = None, *, data_dir: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.settings = settings or EmulatorSettings()
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port
        self._store = Store(self.data_dir)
        self._requests: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._window: collections.deque[float] = collections.deque()
        self._rng = random.Random(self.settings.faults.seed)
        self._rng_seed = self.settings.faults.seed
        self._connections: set[socket.socket] = set()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> Emulator:
        server = _Server((self.host, self.port), _Handler)
        server.emulator = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="ingestd-emulator", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join()
        self._server = None

    def __enter__(self) -> Emulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- what tests look at ------------------------------------------------

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/api"

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def all_media(self, include_deleted: bool = False) -> list[dict[str, Any]]:
        """Every account's media, as ``GET /media/{id}`` shows them, oldest first."""
        media = sorted(self._store.all(), key=lambda m: m.seq)
        return [self._store.as_json(m, self.base_url, self.origin) for m in media if include_deleted or m.status != "deleted"]

    def media_file(self, media_id: str) -> Path | None:
        """The assembled upload, once the media was completed."""
        for media in self._store.all():
            if media.id == media_id:
                return media.file
        return None

    def lose_part(self, media_id: str, index: int) -> None:
        """Fault injection for tests: the service loses a part it had acknowledged."""
        self._store.lose_part(media_id, index)

    # -- bookkeeping -------------------------------------------------------

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            (self._connections.add if add else self._connections.discard)(connection)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._requests.append(record)

    def _rate_headers(self) -> tuple[int, int, int]:
        limit = self.settings.rate_limit_per_minute
        now = time.monotonic()
        with self._lock:
            while self._window and self._window[0] <= now - 60:
                self._window.popleft()
            used = len(self._window)
            oldest = self._window[0] if self._window else now
        if limit is None:
            return UNLIMITED, max(UNLIMITED - used, 0), 0
        retry_after = max(1, math.ceil(oldest + 60 - now)) if used >= limit else 0
        return limit, max(limit - used, 0), retry_after

    def _over_rate_limit(self) -> int | None:
        """Count this request; the seconds to wait if it is over the limit."""
        limit = self.settings.rate_limit_per_minute
        now = time.monotonic()
        with self._lock:
            while self._window and self._window[0] <= now - 60:
                self._window.popleft()
            if limit is not None and len(self._window) >= limit:
                return max(1, math.ceil(self._window[0] + 60 - now))
            self._window.append(now)
        return None

    def _draw_faults(self) -> dict[str, bool]:
        faults = self.settings.faults
        with self._lock:
            if faults.seed != self._rng_seed:
                self._rng = random.Random(faults.seed)
                self._rng_seed = faults.seed
            rng = self._rng
            return {
                "server_error": rng.random() < faults.server_error,
                "rate_limited": rng.random() < faults.rate_limited,
                "slow": rng.random() < faults.slow,
                "drop": rng.random() < faults.drop_after_commit,
                "bad_hash": rng.random() < faults.part_hash_mismatch,
            }

    def _transcode_fails(self) -> bool:
        with self._lock:
            return self._rng.random() < self.settings.faults.transcode_fail

    def _authenticate(self, headers: Any) -> Account | None:
        accounts = list(self.settings.accounts)
        authorization = (headers.get("Authorization") or "").strip()
        if authorization:
            scheme, _, credentials = authorization.partition(" ")
            credentials = credentials.strip()
            if scheme.lower() == "bearer" and credentials:
                return next((a for a in accounts if a.token == credentials), None)
            if scheme.lower() == "basic" and credentials:
                try:
                    public, _, secret = base64.b64decode(credentials, validate=True).decode("utf-8").partition(":")
                except (binascii.Error, UnicodeDecodeError):
                    return None
                return next((a for a in accounts if a.public_key == public and a.secret_key == secret), None)
            return None
        public = (headers.get("stream-public-key") or "").strip()
        secret = (headers.get("stream-secret-key") or "").strip()
        if public and secret and not self.settings.strict_official:  # no official client sends the pair alone
            return next((a for a in accounts if a.public_key == public and a.secret_key == secret), None)
        return None

    # -- requests ----------------------------------------------------------

    def _dispatch(self, handler: _Handler, body: Body) -> tuple[_Answer, bool]:
        """Answer one request; the flag says to drop the connection instead of answering."""
        retry_after = self._over_rate_limit()
        if retry_after is not None:
            return _Answer(429, {"status": "error", "message": "rate limit exceeded"}, retry_after=retry_after), False
        faults = self._draw_faults()
        selected = self.settings.faults.endpoints
        if selected is not None and _endpoint(handler.command, urlsplit(handler.path).path) not in selected:
            faults = dict.fromkeys(faults, False)
        if faults["server_error"]:
            return _error(500, "internal server error"), False
        if faults["rate_limited"]:
            return _Answer(429, {"status": "error", "message": "rate limit exceeded"}, retry_after=1), False
        account = self._authenticate(handler.headers)
        if account is None:
            answer = _error(self.settings.bad_credentials_status, "missing or invalid credentials")
        elif _endpoint(handler.command, urlsplit(handler.path).path) in self.settings.faults.forbidden:
            answer = _error(403, "forbidden: this action is not allowed for this account")
        elif faults["bad_hash"] and _endpoint(handler.command, urlsplit(handler.path).path) == "part":
            answer = _error(400, "hash mismatch")
        else:
            try:
                answer = self._route(handler, body, account)
            except Problem as problem:
                answer = _error(problem.status, problem.message)
            except BodyError as problem:
                answer = _error(problem.status, problem.message)
        if faults["slow"]:
            time.sleep(self.settings.faults.slow_seconds)
        return answer, faults["drop"]

    def _route(self, handler: _Handler, body: Body, account: Account) -> _Answer:
        url = urlsplit(handler.path)
        method = handler.command
        segments = url.path.split("/")
        if len(segments) < 3 or segments[:3] != ["", "api", "media"]:
            raise Problem(404, "not found")
        rest = segments[3:]
        if not rest:
            self._allow(method, "POST")
            return self._list(body, account)
        if rest == ["create"]:
            self._allow(method, "POST")
            return self._create(body, handler.headers, account)
        if rest == ["cost"]:
            self._allow(method, "GET")
            return self._cost(url.query, account)
        media_id = _media_id(rest[0])
        if len(rest) == 1:
            self._allow(method, "GET", "PATCH", "DELETE")
            if method == "GET":
                return self._get(media_id, account)
            if method == "PATCH":
                return self._update(media_id, body, account)
            return self._delete(media_id, account)
        if rest[1:] == ["part"]:
            self._allow(method, "POST")
            return self._part(media_id, handler, body, account)
        if rest[1:] == ["complete"]:
            self._allow(method, "GET")
            return self._complete(media_id, account)
        raise Problem(404, "not found")

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise Problem(405, f"method {method} not allowed here")

    def _view(self, media: Any) -> dict[str, Any]:
        return self._store.as_json(media, self.base_url, self.origin)

    def _create(self, body: Body, headers: Any, account: Account) -> _Answer:
        data = _create_body(body, headers)
        if not isinstance(data, dict):
            raise Problem(400, "request body must be a JSON object")
        # The seed calls type required, yet the official clients' live tests omit it: the media is then a video.
        kind = "video" if data.get("type") is None else data["type"]
        if kind not in MEDIA_TYPES:
            raise Problem(400, f"type: must be one of {', '.join(MEDIA_TYPES)}")
        request = _validated(CreateRequest, data | {"type": "audio"})
        media = self._store.create(request, account.user_id, kind)
        return _Answer(201, {"status": "success", "data": self._view(media)}, media.id)

    def _get(self, media_id: str, account: Account) -> _Answer:
        media = self._store.get(media_id, account.user_id)
        return _Answer(200, {"status": "success", "data": self._view(media)}, media_id)

    def _update(self, media_id: str, body: Body, account: Account) -> _Answer:
        data = _json_body(body)
        if self.settings.strict_official and isinstance(data, dict) and "player_theme_id" in data:
            raise Problem(400, "player_theme_id: AIOZ's clients send the player as player_id")
        request = _validated(UpdateRequest, data)
        self._store.update(media_id, account.user_id, request)
        return _Answer(200, {"status": "success", "message": "Update audio info successfully."}, media_id)

    def _delete(self, media_id: str, account: Account) -> _Answer:
        self._store.delete(media_id, account.user_id)
        return _Answer(200, {"status": "success", "message": "Audio deleted successfully."}, media_id)

    def _list(self, body: Body, account: Account) -> _Answer:
        data = _json_body(body)
        faults = self.settings.faults
        if isinstance(data, dict):
            refused = sorted(faults.refused_list_filters & set(data))
            if refused:
                raise Problem(400, f"{refused[0]}: unsupported filter")
            data = {key: value for key, value in data.items() if key not in faults.ignored_list_filters}
        query = ListQuery(data, strict=self.settings.strict_official)
        page, total = query.apply(self._store.all(account.user_id))
        items = [self._view(m) for m in page]
        return _Answer(200, {"status": "success", "data": {"videos": items, "media": items, "total": total}})

    def _cost(self, query_string: str, account: Account) -> _Answer:
        usd = price(parse_qs(query_string, keep_blank_values=True), dict(self.settings.rates))
        return _Answer(200, {"status": "success", "data": {"price": usd, "is_enough": usd <= account.balance_usd}})

    def _part(self, media_id: str, handler: _Handler, body: Body, account: Account) -> _Answer:
        self._store.check_accepts_parts(media_id, account.user_id)
        header = handler.headers.get("Content-Range")
        span = ContentRange.parse(header) if (header or "").strip() else None
        form = read_multipart(body, handler.headers.get("Content-Type") or "", self._store.spool_dir)
        try:
            if form.file_path is None:
                raise Problem(400, "file: field is required")
            single = span is None
            if span is None:
                # A single-part upload: the part is the whole file.
                span = ContentRange.whole(form.file_size)
            index = self._part_index(form.fields, span, single=single)
            if "hash" in form.fields or span.part is None:
                expected = form.fields.get("hash", "").strip()
                if not expected:
                    raise Problem(400, "hash: field is required")
                if not _HEX_MD5.match(expected):
                    raise Problem(400, "hash: must be the part's MD5 as 32 hex digits")
                if expected.lower() != form.file_md5:
                    raise Problem(400, "hash mismatch")
            self._store.add_part(media_id, account.user_id, index, span, form.file_path, form.file_size, self.settings.min_part_size)
        finally:
            form.discard()
        return _Answer(200, {"status": "success", "message": "Upload part successfully."}, media_id)

    def _part_index(self, fields: dict[str, str], span: ContentRange, *, single: bool) -> int:
        """The part's number: the ``index`` field, N of a progressive ``part N/*`` range, or 1 for a single part."""
        index_text = fields.get("index", "").strip()
        if "index" not in fields:
            if span.part is None and not single:
                raise Problem(400, "index: field is required")
            index = span.part if span.part is not None else 1
        elif not index_text.isdigit():
            raise Problem(400, f"index: must be a non-negative integer, got {index_text!r}")
        else:
            index = int(index_text)
        if span.part is not None and index != span.part:
            raise Problem(400, f"index: {index} differs from part {span.part} of the Content-Range")
        if index == 0 and self.settings.strict_official:
            raise Problem(400, "index: parts are numbered from 1")
        return index

    def _complete(self, media_id: str, account: Account) -> _Answer:
        parts = self._store.begin_complete(media_id, account.user_id)
        self._store.finish_complete(media_id, parts, self.settings.transcode_delay, self._transcode_fails())
        return _Answer(200, {"status": "success", "message": "Upload completed successfully."}, media_id)
