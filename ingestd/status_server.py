"""The status listener's server: waitress, with every resource bounded, under the pages of :mod:`ingestd.statusd`.

A status port faces whatever can reach it: floods of idle connections, clients
that send a byte a minute, scrapers that never hang up. waitress serves it with a
fixed pool of worker threads (a connection costs a socket, not a thread), stops
accepting at a connection limit sized from the process's file-descriptor limit
(so the uploads always have descriptors left), and closes connections idle for
longer than ``IDLE_TIMEOUT``.
"""

from __future__ import annotations

import hmac
import logging
import resource
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import structlog
import waitress
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from . import __version__
from .log import redactor
from .statusd import render_page

if TYPE_CHECKING:
    from .service import Service

log = structlog.get_logger("ingestd.status_server")

# Pages are rendered from the queue in milliseconds; a few threads serve any number of readers.
THREADS = 4
MAX_CONNECTIONS = 1024
# Descriptors kept for everything else: the queue, watched folders, files being uploaded, API connections.
RESERVED_FDS = 256
# Idle connections (keep-alive, or opened and never used) are closed after this long.
IDLE_TIMEOUT = 5
# A request line and headers larger than this are refused: a status request needs a few hundred bytes.
MAX_HEADER_BYTES = 16 * 1024

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def connection_limit(fd_limit: int | None = None) -> int:
    """How many connections the listener holds at once: at most half the descriptors the rest does not need."""
    if fd_limit is None:
        fd_limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fd_limit == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(8, min(MAX_CONNECTIONS, (fd_limit - RESERVED_FDS) // 2))


class StatusServer:
    """Bound on construction (so a reload knows at once whether the address is free), serving after ``start``."""

    def __init__(self, listen: str, service: Service):
        host, _, port = listen.rpartition(":")
        self.listen = listen
        self.service = service
        self._server = waitress.create_server(
            StatusApp(service), host=host.strip("[]"), port=int(port), ident=f"ingestd/{__version__}",
            threads=THREADS, connection_limit=connection_limit(), channel_timeout=IDLE_TIMEOUT, cleanup_interval=1,
            max_request_header_size=MAX_HEADER_BYTES, max_request_body_size=0,
            # poll(), not select(): descriptors above 1024 are fine under a raised LimitNOFILE.
            asyncore_use_poll=True,
        )
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        return str(self._server.effective_host), int(self._server.effective_port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, name="ingestd-status", daemon=True)
        self._thread.start()
        log.info("status_listening", address="%s:%d" % self.address, max_connections=self._server.adj.connection_limit)

    def stop(self) -> None:
        """Close the listening socket and every connection, and end the worker threads."""
        server = self._server
        # The loop ends once its map is empty; closing from here is how webtest's StopableWSGIServer stops waitress too.
        while server._map:
            for dispatcher in list(server._map.values()):
                try:
                    dispatcher.handle_close()
                except OSError:
                    pass
        server.task_dispatcher.shutdown()
        if self._thread is not None:
            self._thread.join(10)
        self._thread = None


class StatusApp:
    """The WSGI application: ``/`` for people, ``/metrics`` for Prometheus, ``/healthz`` for probes.

    With ``status.token`` set, every page but ``/healthz`` asks for ``Authorization: Bearer <token>``.
    """

    def __init__(self, service: Service):
        self.service = service

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            return _answer(start_response, 405, b"only GET\n", "text/plain; charset=utf-8", [("Allow", "GET, HEAD")])
        service = self.service
        if path == "/healthz":
            alive, text = service.health()
            return _answer(start_response, 200 if alive else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
        if not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            return _answer(start_response, 401, b"a bearer token is required (status.token)\n", "text/plain; charset=utf-8",
                           [("WWW-Authenticate", 'Bearer realm="ingestd"')])
        if path == "/metrics":
            return _answer(start_response, 200, generate_latest(service.metrics.registry), CONTENT_TYPE_LATEST)
        if path == "/":
            # Error texts on the page come from the API; no credential reaches a reader whatever they quote.
            return _answer(start_response, 200, redactor.scrub(render_page(service)).encode(), "text/html; charset=utf-8")
        return _answer(start_response, 404, b"not found: try /, /metrics or /healthz\n", "text/plain; charset=utf-8")

    def _authorized(self, header: str) -> bool:
        token = self.service.config.status.token
        if token is None:
            return True
        scheme, _, given = header.partition(" ")
        expected = token.get_secret_value().encode()
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected)


def _answer(start_response: StartResponse, status: int, body: bytes, content_type: str,
            headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    reason = {200: "OK", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}
    start_response(f"{status} {reason[status]}", [
        ("Content-Type", content_type), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"), *(headers or []),
    ])
    return [body]


# waitress reports every refused or dropped connection; a flood would drown the journal in them.
logging.getLogger("waitress").setLevel(logging.ERROR)
