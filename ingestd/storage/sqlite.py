"""The queue in one SQLite file under ``state_dir``: the embedded default, for one host.

Each thread has its own connection; writes go one at a time (``BEGIN IMMEDIATE`` under a lock), so a claim's
SELECT and UPDATE need no row locks.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from . import UniqueViolation, apply_migrations, from_text, to_text


class _Connection(sqlite3.Connection):
    def execute(self, sql: str, parameters: Sequence[object] = (), /) -> sqlite3.Cursor:  # type: ignore[override]
        return super().execute(sql, tuple(to_text(p) for p in parameters))

    def executemany(self, sql: str, seq: object, /) -> sqlite3.Cursor:  # type: ignore[override]
        return super().executemany(sql, [tuple(to_text(p) for p in params) for params in seq])  # type: ignore[attr-defined]


def _row(cursor: sqlite3.Cursor, row: tuple[object, ...]) -> sqlite3.Row:
    return sqlite3.Row(cursor, tuple(from_text(v) for v in row))


class SqliteStore:
    kind = "sqlite"
    claim_lock = ""
    ddl = {"event_id": "INTEGER PRIMARY KEY AUTOINCREMENT"}
    clock_offset = 0.0  # one host's file: its clock is the only one

    def measure_clock(self) -> float:
        return self.clock_offset

    def __init__(self, path: Path):
        self.path = Path(path)
        self.where = str(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._connections_lock = threading.Lock()
        self._write_lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            self._close_connections_of_ended_threads()
            # Not check_same_thread: the connection of a thread that has ended is closed from another one.
            db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False, factory=_Connection)
            db.row_factory = _row
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: a commit survives power loss, not only a process crash.
            db.execute("PRAGMA synchronous = FULL")
            db.execute("PRAGMA busy_timeout = 30000")
            db.execute("PRAGMA foreign_keys = ON")
            self._local.db = db
            with self._connections_lock:
                self._connections.append((threading.current_thread(), db))
        return db

    def _close_connections_of_ended_threads(self) -> None:
        """Short-lived threads (lease keepers, part uploads, watchers replaced by a reload) each opened a connection;
        close theirs, so a daemon that runs for months holds one connection per live thread, not per thread ever."""
        with self._connections_lock:
            ended = [db for thread, db in self._connections if not thread.is_alive()]
            self._connections = [(thread, db) for thread, db in self._connections if thread.is_alive()]
        for db in ended:
            db.close()

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        yield self._db()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        db = self._db()
        with self._write_lock:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except sqlite3.IntegrityError as exc:
                db.execute("ROLLBACK")
                if "UNIQUE" in str(exc):
                    raise UniqueViolation(str(exc)) from exc
                raise
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def schema_version(self) -> int:
        return self._db().execute("PRAGMA user_version").fetchone()[0]

    def migrate(self, migrations: Sequence[str]) -> list[int]:
        with self.transaction() as db:
            applied = apply_migrations(db, self.where, db.execute("PRAGMA user_version").fetchone()[0], migrations)
            if applied:
                db.execute(f"PRAGMA user_version = {applied[-1]}")
        return applied

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            with self._connections_lock:
                self._connections = [(thread, other) for thread, other in self._connections if other is not db]
            db.close()
            self._local.db = None
