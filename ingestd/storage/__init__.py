"""Where the job queue keeps its rows: one small interface, a SQLite and a PostgreSQL implementation.

The queue writes its SQL once, with ``?`` placeholders and statements both engines accept; a store runs it.
Nothing above the queue knows which store it talks to.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, unquote, urlsplit
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from ..errors import IngestdError


class StoreError(IngestdError):
    """The queue's database cannot be used (unreachable, or written by a newer ingestd)."""


class UniqueViolation(StoreError):
    """A write broke a unique index (for example a second live job for one file)."""


class Cursor(Protocol):
    rowcount: int

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the queue runs its SQL on. Rows answer both ``row["name"]`` and ``row[0]``."""

    def execute(self, sql: str, args: Sequence[Any] = ()) -> Cursor: ...

    def executemany(self, sql: str, args: Sequence[Sequence[Any]]) -> Cursor: ...


class Store(Protocol):
    kind: str
    """``sqlite`` or ``postgresql``."""
    where: str
    """Where the rows live, fit to print (a path, or a URL without its password)."""
    claim_lock: str
    """What a claim's SELECT ends with so that concurrent claimers skip each other's rows."""
    ddl: dict[str, str]
    """Words a migration fills in where the engines' DDL differs."""
    clock_offset: float
    """Seconds to add to this host's clock to read the store's: the one clock every host stamps leases with."""

    def measure_clock(self) -> float:
        """Measure ``clock_offset`` again, and return it."""

    def read(self) -> AbstractContextManager[Connection]:
        """A connection for reads; each statement sees committed state."""

    def transaction(self) -> AbstractContextManager[Connection]:
        """One write transaction: committed when the block ends, rolled back when it raises."""

    def migrate(self, migrations: Sequence[str]) -> list[int]:
        """Bring the schema up to ``len(migrations)``, one version at a time; the versions applied."""

    def schema_version(self) -> int: ...

    def close(self) -> None: ...


# A file name that is not UTF-8 reaches Python with its odd bytes as lone surrogates (U+DC80–U+DCFF), which
# neither engine's text can hold. They are stored as the private-use characters U+F0080–U+F00FF and turned
# back on reading, so such a file is queued, uploaded and filed like any other.
_TO_TEXT = str.maketrans({chr(c): chr(0xF0000 + c - 0xDC00) for c in range(0xDC80, 0xDD00)})
_FROM_TEXT = str.maketrans({chr(0xF0000 + c - 0xDC00): chr(c) for c in range(0xDC80, 0xDD00)})


def to_text(value: object) -> object:
    """A value as the store keeps it (see above)."""
    return value.translate(_TO_TEXT) if isinstance(value, str) and not value.isascii() else value


def from_text(value: object) -> object:
    return value.translate(_FROM_TEXT) if isinstance(value, str) and not value.isascii() else value


def redact(url: str) -> str:
    """A queue URL without its passwords (libpq takes one in the user part, and as a query parameter), for
    messages, the status page and lock files."""
    url = re.sub(r"(://[^:/@]*:)\S*@", r"\1***@", url)
    return re.sub(r"([?&](?:ssl)?password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


def url_passwords(url: str) -> list[str]:
    """The passwords a queue URL holds, decoded, for the log redactor."""
    parts = urlsplit(url)
    found = [unquote(parts.password)] if parts.password else []
    return found + [value for key, value in parse_qsl(parts.query) if key.lower() in ("password", "sslpassword") and value]


def is_url(where: str | Path) -> bool:
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


def open_store(where: str | Path, *, max_connections: int = 16) -> Store:
    """A store for a SQLite file path or a ``postgresql://`` URL."""
    if is_url(where):
        from .postgres import PostgresStore  # psycopg is only loaded by those who use it

        return PostgresStore(str(where), max_connections=max_connections)
    from .sqlite import SqliteStore

    return SqliteStore(Path(where))


def apply_migrations(db: Any, where: str, found: int, migrations: Sequence[str]) -> list[int]:
    """Run the migrations after version ``found`` on ``db`` (inside the caller's transaction); the versions applied."""
    if found > len(migrations):
        raise StoreError(f"the queue at {where} has schema version {found}, newer than this ingestd knows"
                         f" ({len(migrations)}); upgrade ingestd on this host")
    applied = []
    for version in range(found + 1, len(migrations) + 1):
        # DDL here never holds a ``;`` inside a literal.
        for statement in (s.strip() for s in migrations[version - 1].split(";")):
            if statement:
                db.execute(statement)
        applied.append(version)
    return applied
