"""``ingestd queue migrate --from-sqlite``: move a single host's SQLite queue into a shared PostgreSQL queue.

Everything is copied in one PostgreSQL transaction (all of it arrives, or nothing does), under the state folder's
lock (no daemon can be using the SQLite queue meanwhile). Jobs a stopped daemon left running are copied as queued,
their acknowledged parts with them, so the first daemon to claim one resumes it where it stopped. The SQLite file
is then renamed, so a daemon started by mistake on the old config begins empty instead of uploading twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import queue as q
from .storage import StoreError, UniqueViolation

MOVED_SUFFIX = ".moved-to-postgresql"
# Copied in this order (foreign keys: parts and contents name jobs); events get new ids in the same order.
_TABLES = ("jobs", "parts", "contents", "outbox", "events")


@dataclass(frozen=True)
class MoveReport:
    copied: dict[str, int]
    requeued: int
    moved_aside: Path


def move_sqlite_queue(state_dir: Path, url: str) -> MoveReport:
    from .service import AlreadyRunning, StateLock

    source_path = q.queue_path(state_dir)
    if not source_path.exists():
        raise StoreError(f"no SQLite queue at {source_path}")
    lock = StateLock(state_dir)
    try:
        lock.acquire()
    except AlreadyRunning:
        raise StoreError(f"an ingestd daemon is using {state_dir}; stop it first") from None
    try:
        source = q.JobQueue(source_path)  # brought to the newest schema, like the target
        target = q.JobQueue(url)
        try:
            copied, requeued = _copy(source, target)
        finally:
            source.close()
            target.close()
        moved_aside = source_path.with_name(source_path.name + MOVED_SUFFIX)
        source_path.rename(moved_aside)
        for suffix in ("-wal", "-shm"):  # empty after the last connection closed cleanly; leave nothing dangling
            source_path.with_name(source_path.name + suffix).unlink(missing_ok=True)
        return MoveReport(copied, requeued, moved_aside)
    finally:
        lock.release()


def _copy(source: q.JobQueue, target: q.JobQueue) -> tuple[dict[str, int], int]:
    copied: dict[str, int] = {}
    requeued = 0
    with source.store.read() as src, target.store.transaction() as dst:
        for table in _TABLES:
            rows = src.execute(f"SELECT * FROM {table}" + (" ORDER BY id" if table == "events" else "")).fetchall()
            if not rows:
                copied[table] = 0
                continue
            columns = [c for c in rows[0].keys() if not (table == "events" and c == "id")]
            values = [[row[c] for c in columns] for row in rows]
            if table == "jobs":
                requeued = _release_running(columns, values)
            marks = ",".join("?" * len(columns))
            try:
                cursor = dst.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
                    + ("" if table == "events" else " ON CONFLICT DO NOTHING"), values)
            except UniqueViolation as exc:
                raise StoreError(f"the target queue already has a live job for a file of this queue: {exc}") from exc
            copied[table] = max(cursor.rowcount, 0) if table != "events" else len(values)
        if copied.get("jobs", 0) != len(src.execute("SELECT id FROM jobs").fetchall()):
            raise StoreError("some jobs of this queue are in the target queue already (moved before?); nothing was "
                             "copied")
    return copied, requeued


def _release_running(columns: list[str], values: list[list[object]]) -> int:
    """Jobs a stopped daemon left running become queued, so any daemon may claim them at once."""
    state, owner, expires, next_at = (columns.index(c) for c in ("state", "lease_owner", "lease_expires", "next_attempt_at"))
    released = 0
    for row in values:
        if row[state] == q.RUNNING:
            row[state], row[owner], row[expires], row[next_at] = q.QUEUED, None, None, 0
            released += 1
    return released
