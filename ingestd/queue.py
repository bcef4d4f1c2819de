"""The durable job queue: one SQLite file under ``state_dir``, or a PostgreSQL database shared by several hosts.

Every step of a job is written here before the next one starts, so a daemon
killed at any point picks up where it stopped: with the same media id, the
parts the server already acknowledged, and the attempt count.

Jobs are claimed with a lease (owner + expiry). A worker that dies leaves its
lease to run out, and another worker (or the restarted daemon) takes the job
back; two workers never run the same job at once.

The SQL here is written once for both engines (``?`` placeholders, ``ON CONFLICT``, ``CASE`` instead of
two-argument ``MIN``/``MAX``) and runs on a store from ``ingestd.storage``; the schema grows by numbered
migrations, applied when the queue is opened.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .storage import Connection, Store, open_store

if TYPE_CHECKING:
    from .config import Config

# Live states hold a file that is still ours to finish; the rest are outcomes.
QUEUED, RUNNING, HELD = "queued", "running", "held"
DONE, FAILED, CANCELLED, SKIPPED = "done", "failed", "cancelled", "skipped"
LIVE_STATES = (QUEUED, RUNNING, HELD)
FINAL_STATES = (DONE, FAILED, CANCELLED, SKIPPED)
ALL_STATES = LIVE_STATES + FINAL_STATES

# Stages, in order. A job's stage says what it does next when it is claimed.
PREPARE, CREATE, UPLOAD, COMPLETE, TRANSCODE, PUBLISH, FILE = (
    "prepare", "create", "upload", "complete", "transcode", "publish", "file",
)
STAGES = (PREPARE, CREATE, UPLOAD, COMPLETE, TRANSCODE, PUBLISH, FILE)

# The schema, one migration per version (the list index + 1). Append, never edit a released one: a database
# records the last version it ran. Types are those both engines read alike (BIGINT for sizes and nanoseconds,
# DOUBLE PRECISION for times); ``{event_id}`` is the one word the engines spell differently.
MIGRATIONS: tuple[str, ...] = (
    """
CREATE TABLE IF NOT EXISTS jobs (
    id              TEXT PRIMARY KEY,
    path            TEXT NOT NULL,
    root            TEXT NOT NULL,
    relpath         TEXT NOT NULL,
    sidecar         TEXT,
    size            BIGINT NOT NULL,
    mtime_ns        BIGINT NOT NULL,
    inode           BIGINT NOT NULL,
    state           TEXT NOT NULL,
    stage           TEXT NOT NULL,
    outcome         TEXT,
    rule            TEXT,
    request         TEXT,
    publish_when_done INTEGER NOT NULL DEFAULT 0,
    quality_names   TEXT,
    duration        DOUBLE PRECISION,
    media_id        TEXT,
    create_sent     INTEGER NOT NULL DEFAULT 0,
    media_status    TEXT,
    media           TEXT,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_owner     TEXT,
    lease_expires   DOUBLE PRECISION,
    held_reason     TEXT,
    error           TEXT,
    final_path      TEXT,
    content_key     TEXT,
    transcode_started DOUBLE PRECISION,
    bytes_sent      BIGINT NOT NULL DEFAULT 0,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    finished_at     DOUBLE PRECISION
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_live_path ON jobs(path) WHERE state IN ('queued', 'running', 'held');
CREATE INDEX IF NOT EXISTS jobs_runnable ON jobs(state, next_attempt_at);
CREATE INDEX IF NOT EXISTS jobs_size ON jobs(size);
CREATE INDEX IF NOT EXISTS jobs_content_key ON jobs(content_key);
CREATE TABLE IF NOT EXISTS parts (
    job_id   TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    idx      INTEGER NOT NULL,
    start    BIGINT NOT NULL,
    length   BIGINT NOT NULL,
    md5      TEXT NOT NULL,
    acked_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (job_id, idx)
);
CREATE TABLE IF NOT EXISTS events (
    id      {event_id},
    job_id  TEXT NOT NULL,
    at      DOUBLE PRECISION NOT NULL,
    event   TEXT NOT NULL,
    detail  TEXT
);
CREATE INDEX IF NOT EXISTS events_job ON events(job_id, id);
""",
    """
CREATE TABLE IF NOT EXISTS outbox (
    job_id          TEXT NOT NULL,
    event           TEXT NOT NULL,
    target          TEXT NOT NULL,
    label           TEXT NOT NULL,
    seq             INTEGER NOT NULL,
    payload         TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    lease_expires   DOUBLE PRECISION,
    last_error      TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    sent_at         DOUBLE PRECISION,
    PRIMARY KEY (job_id, event, target)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox(target, state, next_attempt_at);
""",
    # The part layout, fixed when a job is prepared (NULL for jobs prepared before it was recorded).
    """
ALTER TABLE jobs ADD COLUMN chunk_size BIGINT;
ALTER TABLE jobs ADD COLUMN part_index_base INTEGER;
""",
    # Several hosts: which node last took each job, and each content's one job (its primary key is what keeps
    # two hosts from both uploading one content under duplicates: skip). Seeded from the jobs already there.
    """
ALTER TABLE jobs ADD COLUMN node TEXT;
CREATE TABLE IF NOT EXISTS contents (
    content_key TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL
);
INSERT INTO contents (content_key, job_id)
    SELECT content_key, MIN(id) FROM jobs WHERE content_key IS NOT NULL AND stage != 'prepare'
    AND state IN ('queued', 'running', 'held', 'done') AND COALESCE(outcome, 'done') = 'done' GROUP BY content_key
""",
    # When a notification was first tried: it is given up on a day after that, however long the daemon was down.
    """
ALTER TABLE outbox ADD COLUMN first_tried_at DOUBLE PRECISION;
""",
    # Which node is sending a notification, so a restarted daemon takes back only its own sends cut short.
    """
ALTER TABLE outbox ADD COLUMN lease_node TEXT;
""",
    # An operator's cancel of a job in progress, which its worker carries out between two parts.
    """
ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
""",
    # A file's identity (path, size, mtime, inode) looked up at enqueue time, among finished jobs too.
    """
CREATE INDEX IF NOT EXISTS jobs_path ON jobs(path);
""",
    # Claims in queue order read the head of this index, however long the backlog: no sort of every queued job.
    """
DROP INDEX IF EXISTS jobs_runnable;
CREATE INDEX IF NOT EXISTS jobs_claim_order ON jobs(state, next_attempt_at, created_at);
""",
    # Which running daemon holds each node name on a shared queue: one name, one daemon.
    """
CREATE TABLE IF NOT EXISTS nodes (
    node        TEXT PRIMARY KEY,
    instance    TEXT NOT NULL,
    hostname    TEXT NOT NULL,
    machine     TEXT NOT NULL,
    boot        TEXT NOT NULL,
    pid         INTEGER NOT NULL,
    started_at  DOUBLE PRECISION NOT NULL,
    seen_at     DOUBLE PRECISION NOT NULL
);
""",
)
SCHEMA_VERSION = len(MIGRATIONS)
# How long after its job ended the very same file (same path, size, mtime and inode) is not queued again: longer than
# any watcher takes to offer a file it saw; a file put back unchanged later than this is a new job.
SAME_FILE_WINDOW = 600.0
# Paths looked up per statement: well under either engine's limit on parameters.
KNOWN_FILES_CHUNK = 500


# Columns are 64-bit signed integers; a file's stat can exceed them. An mtime in the year 2446 is clamped (any such
# time is as good as another); an inode number of 2**63 or more (SMB's file ids, some NFS servers) is kept as its
# two's complement, so that it reads back as the same number.
INT64_MAX = 2**63 - 1


def storable(value: int) -> int:
    return min(value, INT64_MAX)


def _inode_in(inode: int) -> int:
    return inode - 2**64 if inode > INT64_MAX else inode


def _inode_out(stored: int) -> int:
    return stored + 2**64 if stored < 0 else stored


@dataclass(frozen=True)
class NewFile:
    """A ready file, as it is enqueued; with ``failure``, it goes straight to the failed folder with that reason."""

    path: str
    root: str
    relpath: str
    size: int
    mtime_ns: int
    inode: int
    sidecar: str | None = None
    failure: str | None = None


@dataclass
class Job:
    """A row of the jobs table."""

    id: str
    path: str
    root: str
    relpath: str
    sidecar: str | None
    size: int
    mtime_ns: int
    inode: int
    state: str
    stage: str
    outcome: str | None
    rule: str | None
    request: str | None
    publish_when_done: int
    quality_names: str | None
    duration: float | None
    media_id: str | None
    create_sent: int
    media_status: str | None
    media: str | None
    attempts: int
    next_attempt_at: float
    lease_owner: str | None
    lease_expires: float | None
    held_reason: str | None
    error: str | None
    final_path: str | None
    content_key: str | None
    transcode_started: float | None
    bytes_sent: int
    created_at: float
    updated_at: float
    finished_at: float | None
    # The part layout, fixed when the upload is planned: a config change never moves an upload's parts.
    chunk_size: int | None = None
    part_index_base: int | None = None
    node: str | None = None
    cancel_requested: int = 0
    acked_parts: dict[int, str] = field(default_factory=dict)

    @property
    def request_body(self) -> dict[str, Any] | None:
        return json.loads(self.request) if self.request else None

    @property
    def media_body(self) -> dict[str, Any] | None:
        return json.loads(self.media) if self.media else None

    def as_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("request", "media", "acked_parts", "quality_names")}
        data["request"] = self.request_body
        data["media"] = self.media_body
        data["quality_names"] = json.loads(self.quality_names) if self.quality_names else None
        data["acked_parts"] = sorted(self.acked_parts)
        return data


_JOB_COLUMNS = tuple(f.name for f in fields(Job) if f.name != "acked_parts")


# Notification events, and the final states (or outcomes) that raise them; a cancelled job raises none.
NOTIFY_EVENTS = ("done", "failed", "duplicate", "held")
PENDING, SENT, UNDELIVERABLE = "pending", "sent", "undeliverable"
_EVENT_OF_ENDING = {DONE: "done", FAILED: "failed", "duplicate": "duplicate"}


@dataclass(frozen=True)
class OutboxTarget:
    """Where notifications go, as the queue knows it: a stable key, a name people read, the events it wants."""

    key: str
    label: str
    events: frozenset[str]


@dataclass
class Notification:
    """A row of the outbox: one event of one job for one target."""

    job_id: str
    event: str
    target: str
    label: str
    seq: int
    payload: str
    state: str
    attempts: int
    next_attempt_at: float
    lease_expires: float | None
    last_error: str | None
    created_at: float
    sent_at: float | None
    first_tried_at: float | None
    lease_node: str | None

    @property
    def event_id(self) -> str:
        """What a receiver uses to drop repeats: the same on every delivery of this event."""
        return f"{self.job_id}:{self.event}"

    @property
    def body(self) -> dict[str, Any]:
        return json.loads(self.payload)


_NOTIFICATION_COLUMNS = tuple(f.name for f in fields(Notification))


@dataclass(frozen=True)
class NodeHolder:
    """A row of the nodes table: the daemon that holds a node name on a shared queue, and where it runs."""

    node: str
    instance: str  # one per daemon start
    hostname: str
    machine: str  # /etc/machine-id, or the host name where there is none
    boot: str  # the kernel's boot id: a new one after every restart of the machine
    pid: int
    started_at: float
    seen_at: float


_NODE_COLUMNS = tuple(f.name for f in fields(NodeHolder))


class JobQueue:
    """The queue's operations, the same on either store. Thread-safe: writes are transactions, reads see commits."""

    def __init__(self, where: Path | str, *, lease_seconds: float = 120.0, max_connections: int = 16):
        self.store = open_store(where, max_connections=max_connections)
        self.lease_seconds = lease_seconds
        # Set by the daemon from its config: who hears of jobs that end or are held.
        self.outbox_targets: tuple[OutboxTarget, ...] = ()
        # Bumped after a commit that wrote to the outbox, so the senders need not wait for their next look.
        self._outbox_changed = threading.Condition()
        self._outbox_version = 0
        self._transaction = threading.local()  # what the current thread's write transaction did
        self.store.migrate(migrations_for(self.store))

    def now(self) -> float:
        """The queue's clock: every timestamp and lease in it is on this one, whichever host writes it."""
        return time.time() + self.store.clock_offset

    @property
    def where(self) -> str:
        return self.store.where

    @property
    def shared(self) -> bool:
        """Whether daemons of other hosts may use this queue too."""
        return self.store.kind != "sqlite"

    # -- the store ---------------------------------------------------------

    def _rows(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> list[Any]:
        with self.store.read() as db:
            return db.execute(sql, args).fetchall()

    def _row(self, sql: str, args: tuple[Any, ...] | list[Any] = ()) -> Any:
        with self.store.read() as db:
            return db.execute(sql, args).fetchone()

    @contextmanager
    def _write(self) -> Iterator[Connection]:
        self._outbox_touched = False
        with self.store.transaction() as db:
            yield db
        if self._outbox_touched:
            self.wake_senders()

    @property
    def _outbox_touched(self) -> bool:
        return getattr(self._transaction, "outbox_touched", False)

    @_outbox_touched.setter
    def _outbox_touched(self, value: bool) -> None:
        self._transaction.outbox_touched = value

    def close(self) -> None:
        self.store.close()

    # -- reading -----------------------------------------------------------

    def _job(self, row: Any) -> Job | None:
        if row is None:
            return None
        job = Job(**{name: row[name] for name in _JOB_COLUMNS})
        job.inode = _inode_out(job.inode)
        job.acked_parts = {r["idx"]: r["md5"] for r in self._rows("SELECT idx, md5 FROM parts WHERE job_id = ?", (job.id,))}
        return job

    def _jobs(self, rows: list[Any]) -> list[Job]:
        return [job for job in map(self._job, rows) if job is not None]

    def get(self, job_id: str) -> Job | None:
        return self._job(self._row("SELECT * FROM jobs WHERE id = ?", (job_id,)))

    def find(self, prefix: str) -> Job | None:
        """A job by id or a unique id prefix (as people type them)."""
        rows = self._rows("SELECT * FROM jobs WHERE id LIKE ? LIMIT 2", (prefix.replace("%", "") + "%",))
        return self._job(rows[0]) if len(rows) == 1 else None

    def live_keys(self, paths: list[str]) -> dict[str, tuple[str, int, int, int]]:
        """(job id, size, mtime_ns, inode) of the live job at each of ``paths`` that has one, in a few queries."""
        found = {}
        for start in range(0, len(paths), KNOWN_FILES_CHUNK):
            chunk = paths[start:start + KNOWN_FILES_CHUNK]
            rows = self._rows(f"SELECT path, id, size, mtime_ns, inode FROM jobs WHERE path IN ({','.join('?' * len(chunk))})"
                              " AND state IN ('queued','running','held')", chunk)
            found.update({r["path"]: (r["id"], r["size"], r["mtime_ns"], _inode_out(r["inode"])) for r in rows})
        return found

    def queued_files(self, page: int = 5000) -> Iterator[tuple[str, str, str, str]]:
        """(id, path, root, stage) of every queued job, a page at a time: a backlog of 100,000 is not held as jobs."""
        after = ""
        while True:
            rows = self._rows("SELECT id, path, root, stage FROM jobs WHERE state = 'queued' AND id > ? ORDER BY id LIMIT ?",
                              (after, page))
            yield from ((row["id"], row["path"], row["root"], row["stage"]) for row in rows)
            if len(rows) < page:
                return
            after = rows[-1]["id"]

    def live_job_for(self, path: str) -> Job | None:
        return self._job(self._row("SELECT * FROM jobs WHERE path = ? AND state IN ('queued','running','held')", (path,)))

    def list(self, *, states: tuple[str, ...] | None = None, limit: int = 100, newest_first: bool = True) -> list[Job]:
        order = "DESC" if newest_first else "ASC"
        if states:
            marks = ",".join("?" * len(states))
            rows = self._rows(f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY updated_at {order} LIMIT ?",
                              (*states, limit))
        else:
            rows = self._rows(f"SELECT * FROM jobs ORDER BY updated_at {order} LIMIT ?", (limit,))
        return self._jobs(rows)

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(ALL_STATES, 0)
        for state, n in self._rows("SELECT state, COUNT(*) FROM jobs GROUP BY state"):
            counts[state] = n
        return counts

    def activity(self) -> dict[str, int]:
        """What the jobs are doing, as a person reads it: a job polling a transcode is queued between polls, not stuck."""
        counts = self.counts()
        waiting_on_service = (TRANSCODE, PUBLISH)
        activity = dict.fromkeys(("uploading", "queued", "transcoding"), 0)
        for state, stage, n in self._rows(
                "SELECT state, stage, COUNT(*) FROM jobs WHERE state IN ('queued', 'running') GROUP BY state, stage"):
            key = "transcoding" if stage in waiting_on_service else "uploading" if state == RUNNING else "queued"
            activity[key] += n
        # Skipped and cancelled jobs are rare: said when there are some, so the usual line stays short.
        return (activity | {state: counts[state] for state in (HELD, DONE, FAILED)}
                | {state: counts[state] for state in (SKIPPED, CANCELLED) if counts[state]})

    def oldest_queued_at(self) -> float | None:
        return self._row("SELECT MIN(created_at) FROM jobs WHERE state = 'queued'")[0]

    def last_success_at(self) -> float | None:
        return self._row("SELECT MAX(finished_at) FROM jobs WHERE state = 'done'")[0]

    def running_by_node(self) -> dict[str, int]:
        """Jobs held right now, per node: which hosts are doing the work."""
        return {node or "": n for node, n in self._rows("SELECT node, COUNT(*) FROM jobs WHERE state = 'running' GROUP BY node")}

    def retry_count(self) -> int:
        """Job attempts put off after a transient error, as recorded in the events."""
        return self._row("SELECT COUNT(*) FROM events WHERE event = 'retry_scheduled'")[0]

    def events(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._rows("SELECT at, event, detail FROM events WHERE job_id = ? ORDER BY id", (job_id,))
        return [{"at": r["at"], "event": r["event"], "detail": json.loads(r["detail"]) if r["detail"] else None} for r in rows]

    def has_other_of_size(self, size: int, job_id: str) -> bool:
        """Whether any other live or done job has this size: only then can this file be a duplicate."""
        row = self._row(
            "SELECT 1 FROM jobs WHERE size = ? AND id != ? AND state IN ('queued','running','held','done') LIMIT 1",
            (size, job_id))
        return row is not None

    def chunk_sizes_of_size(self, size: int, job_id: str) -> set[int]:
        """The part sizes other jobs of this size were cut with: their content keys were made under those."""
        return {row[0] for row in self._rows(
            "SELECT DISTINCT chunk_size FROM jobs WHERE size = ? AND id != ? AND chunk_size IS NOT NULL"
            " AND content_key IS NOT NULL AND state IN ('queued','running','held','done')", (size, job_id))}

    def done_jobs_with_content(self, content_key: str, job_id: str) -> list[Job]:
        """Published jobs with the same content key, oldest first, for duplicate detection."""
        return self._jobs(self._rows(
            "SELECT * FROM jobs WHERE content_key = ? AND id != ? AND state = 'done' AND COALESCE(outcome, 'done') = 'done'"
            " AND media_id IS NOT NULL ORDER BY created_at, id",
            (content_key, job_id),
        ))

    # Live jobs of the job's size that go before it: past preparing, or queued earlier (the id breaks ties).
    _AHEAD = ("size = ? AND id != ? AND state IN ('queued','running','held')"
              " AND COALESCE(outcome, 'done') NOT IN ('failed', 'cancelled')"
              " AND (stage != 'prepare' OR created_at < ? OR (created_at = ? AND id < ?))")

    def ahead_with_content(self, job: Job, content_key: str) -> Job | None:
        """A job on its way before ``job`` whose content key is this one (one indexed lookup, not a scan of its size)."""
        # "+size" keeps the lookup on the content key's index: by size, it would scan every job of that size.
        rows = self._rows(f"SELECT * FROM jobs WHERE content_key = ? AND {self._AHEAD.replace('size', '+size', 1)}"
                          " ORDER BY created_at, id LIMIT 1",
                          (content_key, job.size, job.id, job.created_at, job.created_at, job.id))
        return self._jobs(rows)[0] if rows else None

    def ahead_without_content_key(self, job: Job) -> list[Job]:
        """Jobs on their way before ``job``, of its size, whose content is not known yet: their files are compared."""
        return self._jobs(self._rows(
            f"SELECT * FROM jobs WHERE content_key IS NULL AND {self._AHEAD} ORDER BY created_at, id",
            (job.size, job.id, job.created_at, job.created_at, job.id)))

    def superseded_failures(self, done: Job) -> list[Job]:
        """Earlier failed tries of the file a done job published: the same path in the same folder."""
        return self._jobs(self._rows(
            "SELECT * FROM jobs WHERE root = ? AND relpath = ? AND id != ? AND state = 'failed' AND created_at <= ?",
            (done.root, done.relpath, done.id, done.created_at),
        ))

    # -- writing -----------------------------------------------------------

    def enqueue(self, *, path: str, root: str, relpath: str, size: int, mtime_ns: int, inode: int,
                sidecar: str | None = None, failure: str | None = None,
                same_file_window: float = SAME_FILE_WINDOW) -> Job | None:
        """A new job for a ready file; None when a live job already holds that path (or the same file just ended)."""
        added = self.enqueue_many([NewFile(path, root, relpath, size, mtime_ns, inode, sidecar, failure)],
                                  same_file_window=same_file_window)
        return self.get(added[0][0]) if added else None

    def enqueue_many(self, files: list["NewFile"], *,
                     same_file_window: float = SAME_FILE_WINDOW) -> list[tuple[str, "NewFile"]]:
        """Jobs for many ready files in one transaction (a start-up backlog is thousands); returns (job id, file) of those added."""
        now = self.now()
        added = []
        with self._write() as db:
            # One job per file: none for the very same file (path, size, mtime, inode) while its job is live or
            # a moment after it ended, since a watcher (of this daemon, or of another host on the share) that saw
            # the file before it was moved away offers it late; and none while a live job has the path (the
            # unique index). Looked up for the whole batch at once, so each insert is a plain one-row insert.
            known = self._known_files(db, [f.path for f in files], now - same_file_window)
            for f in files:
                if (f.path, f.size, storable(f.mtime_ns), f.inode) in known:
                    continue
                job_id = uuid.uuid4().hex
                stage, outcome = (FILE, FAILED) if f.failure else (PREPARE, None)
                cursor = db.execute(
                    "INSERT INTO jobs (id, path, root, relpath, sidecar, size, mtime_ns, inode, state, stage, outcome, error,"
                    " created_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (job_id, f.path, f.root, f.relpath, f.sidecar, f.size, storable(f.mtime_ns), _inode_in(f.inode), QUEUED, stage,
                     outcome, f.failure, now, now),
                )
                if cursor.rowcount:
                    added.append((job_id, f))
            if added:
                db.executemany(_INSERT_EVENT, [_event_row(job_id, now, "enqueued",
                                                          {"path": f.path, "size": f.size, "failure": f.failure})
                                               for job_id, f in added])
        return added

    @staticmethod
    def _known_files(db: Connection, paths: list[str], ended_after: float) -> set[tuple[str, int, int, int]]:
        """(path, size, mtime_ns, inode) of the jobs at these paths that are live or ended after ``ended_after``."""
        known = set()
        unique = list(dict.fromkeys(paths))
        for start in range(0, len(unique), KNOWN_FILES_CHUNK):
            chunk = unique[start:start + KNOWN_FILES_CHUNK]
            known.update((path, size, mtime_ns, _inode_out(inode)) for path, size, mtime_ns, inode in db.execute(
                f"SELECT path, size, mtime_ns, inode FROM jobs WHERE path IN ({','.join('?' * len(chunk))})"
                " AND (state IN ('queued', 'running', 'held') OR finished_at > ?)", (*chunk, ended_after)))
        return known

    def claim(self, owner: str, *, now: float | None = None) -> Job | None:
        """Take the next runnable job (or one whose lease ran out) and count the attempt."""
        now = self.now() if now is None else now
        with self._write() as db:
            # Work abandoned by a dead worker first (running jobs are few), then the head of the queue.
            row = db.execute(
                "SELECT id FROM jobs WHERE state = 'running' AND lease_expires < ? ORDER BY lease_expires LIMIT 1"
                + self.store.claim_lock, (now,),
            ).fetchone() or db.execute(
                "SELECT id FROM jobs WHERE state = 'queued' AND next_attempt_at <= ? ORDER BY next_attempt_at, created_at"
                " LIMIT 1" + self.store.claim_lock, (now,),
            ).fetchone()
            if row is None:
                return None
            db.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, node = ?, lease_expires = ?, attempts = attempts + 1,"
                " updated_at = ? WHERE id = ?",
                (owner, node_of(owner), now + self.lease_seconds, now, row["id"]),
            )
            self._event(db, row["id"], "claimed", {"owner": owner})
        return self.get(row["id"])

    def claim_job(self, job_id: str, owner: str) -> Job | None:
        """Take one particular live job, unless a worker holds an unexpired lease on it."""
        now = self.now()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = 'running', lease_owner = ?, node = ?, lease_expires = ?, attempts = attempts + 1,"
                " updated_at = ? WHERE id = ? AND (state IN ('queued', 'held') OR (state = 'running' AND lease_expires < ?))",
                (owner, node_of(owner), now + self.lease_seconds, now, job_id, now),
            )
            if cursor.rowcount == 0:
                return None
            self._event(db, job_id, "claimed", {"owner": owner})
        return self.get(job_id)

    def claim_content(self, job_id: str, content_key: str) -> Job | None:
        """Make this job the one that uploads ``content_key``; the job that already is, if another one is.

        The table's primary key decides, so two hosts that finish uploading one content at the same moment
        cannot both keep it.
        """
        with self._write() as db:
            db.execute("INSERT INTO contents (content_key, job_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                       (content_key, job_id))
            holder = db.execute("SELECT job_id FROM contents WHERE content_key = ?", (content_key,)).fetchone()[0]
        return None if holder == job_id else self.get(holder)

    def hand_content_over(self, content_key: str, *, from_job: str, to_job: str) -> bool:
        """Make ``to_job`` the content's one job in place of ``from_job``, whose upload no longer stands."""
        with self._write() as db:
            return db.execute("UPDATE contents SET job_id = ? WHERE content_key = ? AND job_id = ?",
                              (to_job, content_key, from_job)).rowcount == 1

    def take_back(self, *, node: str | None) -> int:
        """Start-up: queue again the running jobs a previous run left (of this node only, when hosts share the queue)."""
        query, args = "SELECT id FROM jobs WHERE state = 'running'", []
        if node is not None:
            query, args = query + " AND node = ?", [node]
        taken = 0
        for (job_id,) in self._rows(query, args):
            self.release(job_id, delay=0, refund_attempt=True, event="recovered_after_restart")
            taken += 1
        return taken

    def renew(self, job_id: str, owner: str) -> bool:
        """Extend a lease while work goes on; False when the lease was lost to someone else."""
        now = self.now()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET lease_expires = ? WHERE id = ? AND lease_owner = ? AND state = 'running'",
                (now + self.lease_seconds, job_id, owner),
            )
        return cursor.rowcount == 1

    def update(self, job_id: str, *, event: str | None = None, detail: dict[str, Any] | None = None, **values: Any) -> None:
        """Record progress on a job (and optionally an event), in one transaction."""
        for key in ("request", "media", "quality_names"):
            if key in values and not isinstance(values[key], (str, type(None))):
                values[key] = json.dumps(values[key], ensure_ascii=False)
        if "inode" in values:
            values["inode"] = _inode_in(values["inode"])
        values["updated_at"] = self.now()
        unknown = set(values) - set(_JOB_COLUMNS)
        if unknown:
            raise ValueError(f"unknown job fields: {sorted(unknown)}")
        assignments = ", ".join(f"{k} = ?" for k in values)
        with self._write() as db:
            db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*values.values(), job_id))
            if event:
                self._event(db, job_id, event, detail)

    def ack_part(self, job_id: str, index: int, start: int, length: int, md5: str) -> None:
        with self._write() as db:
            db.execute(
                "INSERT INTO parts (job_id, idx, start, length, md5, acked_at) VALUES (?,?,?,?,?,?)"
                " ON CONFLICT (job_id, idx) DO UPDATE SET start = excluded.start, length = excluded.length,"
                " md5 = excluded.md5, acked_at = excluded.acked_at",
                (job_id, index, start, length, md5, self.now()),
            )
            # An acknowledged part is progress: the upload step's tries start over.
            db.execute("UPDATE jobs SET bytes_sent = bytes_sent + ?, attempts = CASE WHEN attempts > 1 THEN 1 ELSE attempts END, updated_at = ? WHERE id = ?",
                       (length, self.now(), job_id))

    def acked_spans(self, job_id: str) -> list[tuple[int, int, int]]:
        """The acknowledged parts as (index, start, length)."""
        rows = self._rows("SELECT idx, start, length FROM parts WHERE job_id = ? ORDER BY start", (job_id,))
        return [(r["idx"], r["start"], r["length"]) for r in rows]

    def forget_parts(self, job_id: str, indexes: list[int] | None = None) -> None:
        with self._write() as db:
            if indexes is None:
                db.execute("DELETE FROM parts WHERE job_id = ?", (job_id,))
                db.execute("UPDATE jobs SET bytes_sent = 0 WHERE id = ?", (job_id,))
            else:
                db.executemany("DELETE FROM parts WHERE job_id = ? AND idx = ?", [(job_id, i) for i in indexes])

    def release_if_owned(self, job_id: str, owner: str) -> bool:
        """Give back a job this owner still leases (an interrupted `ingestd upload`), to run again at once."""
        now = self.now()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL, next_attempt_at = ?,"
                " attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = ?"
                " WHERE id = ? AND lease_owner = ? AND state = 'running'",
                (now, now, job_id, owner),
            )
            if cursor.rowcount:
                self._event(db, job_id, "released_interrupted", {"owner": owner})
        return cursor.rowcount == 1

    def request_cancel(self, job_id: str) -> bool:
        """Ask the worker running a live job to cancel it between two parts; False when the job is no longer live."""
        with self._write() as db:
            cursor = db.execute("UPDATE jobs SET cancel_requested = 1, updated_at = ? WHERE id = ?"
                                " AND state IN ('queued', 'running', 'held')", (self.now(), job_id))
            if cursor.rowcount:
                self._event(db, job_id, "cancel_requested", None)
        return cursor.rowcount == 1

    def cancel_requested(self, job_id: str) -> bool:
        row = self._row("SELECT cancel_requested FROM jobs WHERE id = ?", (job_id,))
        return bool(row and row[0])

    def release(self, job_id: str, *, delay: float, error: str | None = None, refund_attempt: bool = False,
                event: str = "retry_scheduled") -> None:
        """Give a running job back to the queue, to run again after ``delay`` seconds."""
        now = self.now()
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = 'queued', lease_owner = NULL, lease_expires = NULL, next_attempt_at = ?,"
                " error = COALESCE(?, error), attempts = attempts - ?, updated_at = ? WHERE id = ?",
                (now + delay, error, 1 if refund_attempt else 0, now, job_id),
            )
            self._event(db, job_id, event, {"delay": round(delay, 3), "error": error})

    def hold(self, job_id: str, reason: str, *, recheck_after: float | None = None) -> None:
        """Park a job that cannot go on until something outside changes (credentials, budget)."""
        now = self.now()
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = 'held', held_reason = ?, lease_owner = NULL, lease_expires = NULL,"
                " next_attempt_at = ?, attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END, updated_at = ? WHERE id = ?",
                (reason, now + recheck_after if recheck_after is not None else 0, now, job_id),
            )
            self._event(db, job_id, "held", {"reason": reason})
            row = db.execute("SELECT path, rule FROM jobs WHERE id = ?", (job_id,)).fetchone()
            report = {"job_id": job_id, "source": row["path"] if row else None, "rule": row["rule"] if row else None,
                      "status": "held", "reason": reason, "held_at": _iso(now)}
            # Once per job: a job re-held at each budget re-check is not news.
            self._notify(db, job_id, "held", report, now, again=False)

    def unhold(self, *, reason_prefix: str = "", due_only: bool = False, now: float | None = None) -> int:
        """Put held jobs back in the queue: all of them, those held for one reason, or those due for a re-check."""
        now = self.now() if now is None else now
        query = "UPDATE jobs SET state = 'queued', next_attempt_at = ?, updated_at = ? WHERE state = 'held' AND held_reason LIKE ?"
        args: list[Any] = [now, now, reason_prefix + "%"]
        if due_only:
            query += " AND next_attempt_at > 0 AND next_attempt_at <= ?"
            args.append(now)
        with self._write() as db:
            return db.execute(query, args).rowcount

    def finish(self, job_id: str, state: str, *, error: str | None = None, final_path: str | None = None,
               outcome: str | None = None, report: dict[str, Any] | None = None) -> None:
        """Record a job's end and, in the same transaction, the notifications it raises.

        ``report`` is what was written beside the filed file; notifications carry it.
        """
        if state not in FINAL_STATES:
            raise ValueError(f"{state!r} is not a final state")
        now = self.now()
        with self._write() as db:
            db.execute(
                "UPDATE jobs SET state = ?, outcome = ?, error = COALESCE(?, error), final_path = COALESCE(?, final_path),"
                " lease_owner = NULL, lease_expires = NULL, updated_at = ?, finished_at = ? WHERE id = ?",
                (state, outcome or state, error, final_path, now, now, job_id),
            )
            if state != DONE and error is None:
                # The job's own error, so its history says why it ended.
                row = db.execute("SELECT error FROM jobs WHERE id = ?", (job_id,)).fetchone()
                error = row["error"] if row else None
            self._event(db, job_id, state, {"error": error, "final_path": final_path})
            if state != DONE:
                # Its content was not uploaded after all: a later copy may upload it.
                db.execute("DELETE FROM contents WHERE job_id = ?", (job_id,))
            event = _EVENT_OF_ENDING.get(outcome or state)
            if event is not None:
                if report is None:
                    row = db.execute("SELECT path, rule, error FROM jobs WHERE id = ?", (job_id,)).fetchone()
                    report = {"job_id": job_id, "source": row["path"], "rule": row["rule"], "status": event,
                              "reason": row["error"]}
                self._notify(db, job_id, event, report, now, again=True)

    def requeue(self, job_id: str, *, path: str, stage: str = PREPARE) -> None:
        """Start a finished job over (``ingestd jobs retry``): a fresh attempt count, no media yet."""
        now = self.now()
        with self._write() as db:
            db.execute("DELETE FROM parts WHERE job_id = ?", (job_id,))
            db.execute("DELETE FROM contents WHERE job_id = ?", (job_id,))
            db.execute(
                "UPDATE jobs SET state = 'queued', stage = ?, path = ?, attempts = 0, content_key = NULL, next_attempt_at = 0, media_id = NULL,"
                " create_sent = 0, media_status = NULL, media = NULL, error = NULL, held_reason = NULL, outcome = NULL,"
                " final_path = NULL, bytes_sent = 0, transcode_started = NULL, finished_at = NULL, cancel_requested = 0,"
                " updated_at = ?"
                " WHERE id = ?",
                (stage, path, now, job_id),
            )
            self._event(db, job_id, "requeued", {"path": path})
            # A job started over may end the same way again; that ending is news again.
            db.execute("DELETE FROM outbox WHERE job_id = ? AND state != 'pending'", (job_id,))

    def prune_finished(self, before: float, *, batch: int = 500) -> int:
        """Forget jobs that ended before ``before`` (with their parts, events and sent notifications), so the queue
        holds what is live plus a window of history instead of every file ever; returns how many went."""
        pruned = 0
        while True:
            with self._write() as db:
                rows = db.execute(
                    "SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled', 'skipped') AND finished_at < ?"
                    " AND NOT EXISTS (SELECT 1 FROM outbox WHERE outbox.job_id = jobs.id AND outbox.state = 'pending')"
                    " LIMIT ?", (before, batch)).fetchall()
                ids = [row["id"] for row in rows]
                if ids:
                    marks = ",".join("?" * len(ids))
                    for table in ("parts", "events", "outbox", "contents", "jobs"):
                        key = "id" if table == "jobs" else "job_id"
                        db.execute(f"DELETE FROM {table} WHERE {key} IN ({marks})", ids)
            pruned += len(ids)
            if len(ids) < batch:
                return pruned

    def _notify(self, db: Connection, job_id: str, event: str, report: dict[str, Any], now: float,
                *, again: bool) -> None:
        """Put one notification per interested target in the outbox; ``again`` re-arms one already there."""
        targets = [t for t in self.outbox_targets if event in t.events]
        if not targets:
            return
        payload = json.dumps(report | {"event": event, "job_id": job_id}, ensure_ascii=False, sort_keys=True)
        seq = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM outbox WHERE job_id = ?", (job_id,)).fetchone()[0]
        conflict = ("DO UPDATE SET payload = excluded.payload, seq = excluded.seq, state = 'pending', attempts = 0,"
                    " next_attempt_at = excluded.next_attempt_at, lease_expires = NULL, last_error = NULL,"
                    " created_at = excluded.created_at, first_tried_at = NULL, sent_at = NULL") if again else "DO NOTHING"
        for target in targets:
            db.execute(
                "INSERT INTO outbox (job_id, event, target, label, seq, payload, state, next_attempt_at, created_at)"
                f" VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (job_id, event, target) {conflict}",
                (job_id, event, target.key, target.label, seq, payload, PENDING, now, now),
            )
        self._outbox_touched = True

    # -- the outbox --------------------------------------------------------

    def due_notifications(self, target: str, *, now: float | None = None, limit: int = 20) -> list[Notification]:
        """Pending notifications for a target that may be sent now: due, not leased, and first of their job."""
        now = self.now() if now is None else now
        rows = self._rows(
            "SELECT * FROM outbox o WHERE target = ? AND state = 'pending' AND next_attempt_at <= ?"
            " AND (lease_expires IS NULL OR lease_expires < ?)"
            " AND NOT EXISTS (SELECT 1 FROM outbox e WHERE e.job_id = o.job_id AND e.target = o.target"
            " AND e.state = 'pending' AND e.seq < o.seq)"
            " ORDER BY next_attempt_at, created_at LIMIT ?",
            (target, now, now, limit),
        )
        return [_notification(r) for r in rows]

    def claim_notification(self, n: Notification, *, lease: float, node: str | None = None,
                           now: float | None = None) -> bool:
        """Take one notification for sending; False when another sender has it (or it is no longer pending)."""
        now = self.now() if now is None else now
        with self._write() as db:
            cursor = db.execute(
                "UPDATE outbox SET lease_expires = ?, lease_node = ?, first_tried_at = COALESCE(first_tried_at, ?)"
                " WHERE job_id = ? AND event = ? AND target = ? AND state = 'pending'"
                " AND (lease_expires IS NULL OR lease_expires < ?)",
                (now + lease, node, now, n.job_id, n.event, n.target, now),
            )
        return cursor.rowcount == 1

    def notification_sent(self, n: Notification, *, now: float | None = None) -> None:
        now = self.now() if now is None else now
        with self._write() as db:
            db.execute("UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1, lease_expires = NULL,"
                       " last_error = NULL WHERE job_id = ? AND event = ? AND target = ?",
                       (now, n.job_id, n.event, n.target))

    def notification_failed(self, n: Notification, error: str, *, retry_at: float | None) -> None:
        """A try that did not get through: try again at ``retry_at``, or (None) give up and say so."""
        with self._write() as db:
            db.execute(
                "UPDATE outbox SET state = ?, attempts = attempts + 1, next_attempt_at = ?, lease_expires = NULL,"
                " last_error = ? WHERE job_id = ? AND event = ? AND target = ?",
                (PENDING if retry_at is not None else UNDELIVERABLE, retry_at or 0, error, n.job_id, n.event, n.target),
            )

    def release_notification_leases(self, *, node: str | None) -> int:
        """Start-up: a send cut short by a crash is due again now, not when its lease would have run out
        (this node's sends only, when hosts share the queue)."""
        query, args = "UPDATE outbox SET lease_expires = NULL WHERE state = 'pending' AND lease_expires IS NOT NULL", []
        if node is not None:
            query, args = query + " AND lease_node = ?", [node]
        with self._write() as db:
            return db.execute(query, args).rowcount

    def orphan_notifications(self, keys: set[str]) -> int:
        """Pending notifications for targets no longer configured become undeliverable, so they are seen, not stuck."""
        marks = ",".join("?" * len(keys))
        where = f"state = 'pending' AND target NOT IN ({marks})" if keys else "state = 'pending'"
        with self._write() as db:
            return db.execute(f"UPDATE outbox SET state = 'undeliverable', last_error = ? WHERE {where}",
                              ("its target is no longer in the config", *keys)).rowcount

    def wake_senders(self) -> None:
        with self._outbox_changed:
            self._outbox_version += 1
            self._outbox_changed.notify_all()

    def wait_for_outbox(self, seen: int, timeout: float) -> int:
        """Wait until the outbox changes after version ``seen`` (or ``timeout``); returns the version now."""
        with self._outbox_changed:
            self._outbox_changed.wait_for(lambda: self._outbox_version != seen, timeout)
            return self._outbox_version

    def notifications(self, *, states: tuple[str, ...] = (PENDING, UNDELIVERABLE), job_id: str | None = None,
                      limit: int = 1000) -> list[Notification]:
        marks = ",".join("?" * len(states))
        query, args = f"SELECT * FROM outbox WHERE state IN ({marks})", list(states)
        if job_id is not None:
            query, args = query + " AND job_id = ?", [*args, job_id]
        rows = self._rows(query + " ORDER BY created_at, seq LIMIT ?", (*args, limit))
        return [_notification(r) for r in rows]

    def notification_counts(self) -> dict[str, dict[str, int]]:
        """{target label: {state: count}} for notifications still pending or given up on; configured targets too."""
        counts = {t.label: dict.fromkeys((PENDING, UNDELIVERABLE), 0) for t in self.outbox_targets}
        for label, state, n in self._rows(
                "SELECT label, state, COUNT(*) FROM outbox WHERE state != 'sent' GROUP BY label, state"):
            counts.setdefault(label, dict.fromkeys((PENDING, UNDELIVERABLE), 0))[state] = n
        return counts

    def retry_notifications(self, *, job_id: str | None = None, now: float | None = None) -> int:
        """Give undeliverable notifications (of one job, or all) a fresh day of tries."""
        now = self.now() if now is None else now
        query = ("UPDATE outbox SET state = 'pending', attempts = 0, next_attempt_at = ?, first_tried_at = NULL,"
                 " lease_expires = NULL WHERE state = 'undeliverable'")
        args: list[Any] = [now]
        if job_id is not None:
            query, args = query + " AND job_id = ?", [*args, job_id]
        with self._write() as db:
            count = db.execute(query, args).rowcount
            self._outbox_touched = count > 0
        return count

    # -- node names (shared queues) ------------------------------------------

    def node_holders(self) -> list[NodeHolder]:
        """The daemons that hold a node name, as they last said."""
        return [_node_holder(row) for row in self._rows("SELECT * FROM nodes ORDER BY node")]

    def node_holder(self, node: str) -> NodeHolder | None:
        row = self._row("SELECT * FROM nodes WHERE node = ?", (node,))
        return _node_holder(row) if row else None

    def take_node(self, me: NodeHolder, *, replacing: NodeHolder | None) -> bool:
        """Hold ``me.node`` for ``me``, if it is still free or still held by ``replacing`` (as read a moment ago)."""
        values = tuple(getattr(me, name) for name in _NODE_COLUMNS)
        with self._write() as db:
            if replacing is None:
                marks = ",".join("?" * len(_NODE_COLUMNS))
                return db.execute(f"INSERT INTO nodes ({', '.join(_NODE_COLUMNS)}) VALUES ({marks})"
                                  " ON CONFLICT (node) DO NOTHING", values).rowcount == 1
            assignments = ", ".join(f"{name} = ?" for name in _NODE_COLUMNS)
            return db.execute(f"UPDATE nodes SET {assignments} WHERE node = ? AND instance = ? AND seen_at = ?",
                              (*values, replacing.node, replacing.instance, replacing.seen_at)).rowcount == 1

    def node_seen(self, node: str, instance: str) -> bool:
        """Say this daemon still holds ``node``; False when another daemon has taken the name meanwhile."""
        with self._write() as db:
            return db.execute("UPDATE nodes SET seen_at = ? WHERE node = ? AND instance = ?",
                              (self.now(), node, instance)).rowcount == 1

    def release_node(self, node: str, instance: str) -> None:
        with self._write() as db:
            db.execute("DELETE FROM nodes WHERE node = ? AND instance = ?", (node, instance))

    def prune_nodes(self, before: float) -> int:
        """Forget the names of daemons not heard from since ``before`` (killed, and not started again since)."""
        with self._write() as db:
            return db.execute("DELETE FROM nodes WHERE seen_at < ?", (before,)).rowcount

    def _event(self, db: Connection, job_id: str, event: str, detail: dict[str, Any] | None) -> None:
        db.execute(_INSERT_EVENT, _event_row(job_id, self.now(), event, detail))


_INSERT_EVENT = "INSERT INTO events (job_id, at, event, detail) VALUES (?,?,?,?)"


def _event_row(job_id: str, at: float, event: str, detail: dict[str, Any] | None) -> tuple[Any, ...]:
    return job_id, at, event, json.dumps(detail, ensure_ascii=False) if detail else None


def _notification(row: Any) -> Notification:
    return Notification(**{name: row[name] for name in _NOTIFICATION_COLUMNS})


def _node_holder(row: Any) -> NodeHolder:
    return NodeHolder(**{name: row[name] for name in _NODE_COLUMNS})


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="seconds")


def migrations_for(store: Store) -> list[str]:
    """The schema's migrations in this store's words."""
    def fill(sql: str) -> str:
        for word, spelling in store.ddl.items():
            sql = sql.replace("{" + word + "}", spelling)
        return sql
    return [fill(m) for m in MIGRATIONS]


def migrate(where: Path | str) -> tuple[int, list[int]]:
    """``ingestd queue migrate``: the schema version found, and the versions applied to reach the newest."""
    store = open_store(where, max_connections=1)
    try:
        found = store.schema_version()
        return found, store.migrate(migrations_for(store))
    finally:
        store.close()


def queue_path(state_dir: Path) -> Path:
    return Path(state_dir) / "queue.sqlite3"


def queue_location(config: "Config") -> Path | str:
    """Where a config keeps its queue: ``queue_url`` when set, else the SQLite file in ``state_dir``."""
    return config.queue_url or queue_path(config.state_dir)


def open_queue(config: "Config", **kwargs: Any) -> JobQueue:
    return JobQueue(queue_location(config), lease_seconds=config.queue_lease, **kwargs)


def worker_id(name: str, node: str | None = None) -> str:
    """Lease owner names, ``node:pid:thread``: unique per process and thread, readable in `jobs show`."""
    return f"{node or os.uname().nodename}:{os.getpid()}:{name}"


def node_of(owner: str) -> str:
    return owner.split(":", 1)[0]
