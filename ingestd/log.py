"""Logging set-up: JSON lines for the journal, readable lines on a terminal, secrets never shown."""

from __future__ import annotations

import base64
import json
import logging
import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

import structlog

from .storage import url_passwords

if TYPE_CHECKING:
    from .config import Config

REDACTED = "[redacted]"


def secret_forms(secret: str) -> set[str]:
    """Every way ``secret`` can appear in text: as is, escaped (JSON, Python repr, bytes repr), percent-encoded,
    and inside any base64 text such as a Basic ``Authorization`` header (whatever comes before it)."""
    forms = {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1], repr(secret.encode())[2:-1],
             quote(secret, safe=""), quote_plus(secret), quote(secret)}
    raw = secret.encode()
    for offset in range(3):
        # With `offset` bytes before it, the base64 characters wholly made of the secret's bytes.
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        whole = (offset + len(raw)) // 3 * 4
        forms.add(encoded[4 if offset else 0:whole])
    return {form for form in forms if len(form) >= MIN_SECRET_LENGTH}


# Short values would redact innocent text; real tokens are long.
MIN_SECRET_LENGTH = 6


class SecretRedactor:
    """A structlog processor that replaces every known secret, in any of its forms, wherever it appears in an event.

    Each part of ingestd that holds secrets registers them under its own name (``set("api", [...])``),
    so one part's reload does not forget another's.
    """

    def __init__(self, secrets: Iterable[str] = ()):
        self._by_owner: dict[str, list[str]] = {}
        self.secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        """Replace the API credentials (kept for callers that know only those)."""
        self.set("api", secrets)

    def set(self, owner: str, secrets: Iterable[str]) -> None:
        """Replace the secrets registered under ``owner`` (e.g. ``api``, ``notify``, ``queue``)."""
        self._by_owner[owner] = [s for s in secrets if s and len(s) >= MIN_SECRET_LENGTH]
        forms = {form for values in self._by_owner.values() for s in values for form in secret_forms(s)}
        self.secrets = sorted(forms, key=len, reverse=True)

    def scrub(self, value: Any) -> Any:
        if isinstance(value, str):
            for secret in self.secrets:
                if secret in value:
                    value = value.replace(secret, REDACTED)
            return value
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(self.scrub(v) for v in value)
        if isinstance(value, BaseException):
            return self.scrub(str(value))
        return value

    def __call__(self, logger: Any, method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
        return self.scrub(event_dict) if self.secrets else event_dict


redactor = SecretRedactor()


def secrets_of(config: Config) -> list[str]:
    """Every secret the config holds, for the log redactor."""
    api = config.api
    secrets = [s.get_secret_value() for s in (api.token, api.secret_key, config.status.token) if s is not None]
    return secrets + (url_passwords(config.queue_url) if config.queue_url else [])


def _not_watchdog_shutdown_race(record: logging.LogRecord) -> bool:
    # watchdog reports an event read racing its own observer's stop as an error; nothing is lost.
    return "called when the thread is inactive" not in record.getMessage()


# syslog(3) priorities, which journald reads off a "<N>" at the start of each line it is given on stdout/stderr.
PRIORITIES = {"debug": 7, "info": 6, "warning": 4, "warn": 4, "error": 3, "exception": 3, "critical": 2}


def writes_to_journal(stream: Any) -> bool:
    """Whether ``stream`` is the journal's stream, as systemd says with JOURNAL_STREAM=<device>:<inode>."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (AttributeError, OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def with_priority(line: str, level: str) -> str:
    """``line`` as journald reads its priority: ``<3>`` for errors, ``<4>`` warnings, ``<6>`` info, ``<7>`` debug."""
    return f"<{PRIORITIES.get(level.lower(), 6)}>{line}"


def _priority_prefix(logger: Any, method: str, rendered: str) -> str:
    return with_priority(rendered, method)


def configure(*, format: str = "auto", level: str = "info", stream=None) -> None:
    """``format``: ``json`` (one event per line), ``console``, or ``auto`` (console on a terminal).

    Under systemd (the stream is JOURNAL_STREAM) each line starts with its syslog priority, so
    ``journalctl -p err`` shows the errors.
    """
    stream = stream or sys.stderr
    use_json = format == "json" or (format == "auto" and not stream.isatty())
    renderer = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    rendering = [renderer, _priority_prefix] if writes_to_journal(stream) else [renderer]
    shared = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    # Libraries (watchdog, httpx) log through the standard library: same format, same redaction, warnings and up.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, *rendering],
    ))
    handler.addFilter(_not_watchdog_shutdown_race)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    printer = structlog.PrintLogger(file=stream)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            redactor,
            *rendering,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        # One printer for every logger: loggers are not cached (a reload changes the level), and a printer per
        # call would cost a lock lookup on every log line.
        logger_factory=lambda *_: printer,
        cache_logger_on_first_use=False,
    )
