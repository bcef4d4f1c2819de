"""Logging set-up: JSON lines for the journal, readable lines on a terminal, secrets never shown."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable
from typing import Any

import structlog

REDACTED = "[redacted]"


class SecretRedactor:
    """A structlog processor that replaces every known secret value wherever it appears in an event."""

    def __init__(self, secrets: Iterable[str] = ()):
        self.secrets: list[str] = []
        self.update(secrets)

    def update(self, secrets: Iterable[str]) -> None:
        # Short values would redact innocent text; real tokens are long.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

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


def _not_watchdog_shutdown_race(record: logging.LogRecord) -> bool:
    # watchdog reports an event read racing its own observer's stop as an error; nothing is lost.
    return "called when the thread is inactive" not in record.getMessage()


def configure(*, format: str = "auto", level: str = "info", stream=None) -> None:
    """``format``: ``json`` (one event per line), ``console``, or ``auto`` (console on a terminal)."""
    stream = stream or sys.stderr
    use_json = format == "json" or (format == "auto" and not stream.isatty())
    renderer = structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    shared = [structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso", utc=True)]
    # Libraries (watchdog, httpx) log through the standard library: same format, same redaction, warnings and up.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, renderer],
    ))
    handler.addFilter(_not_watchdog_shutdown_race)
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(logging.WARNING)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
