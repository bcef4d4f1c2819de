"""The daemon: config, queue, watcher and workers wired together, driven by signals and sd_notify.

Signals only put an event on a queue; the main loop acts on them where the
state lives (stop, reload), and also feeds systemd's watchdog, so a hung main
loop gets the service restarted.
"""

from __future__ import annotations

import fcntl
import os
import queue as stdqueue
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import sdnotify
import structlog

from . import log as logsetup
from .log import secrets_of
from . import queue as q
from .client import StreamClient
from .config import Config, load_config
from .errors import ConfigError, IngestdError
from .folderlock import FolderLocks, FolderTaken
from .metrics import Metrics
from .nodes import NodeName, NodeNameTaken
from .notify import Notifier
from .notify import secrets_of as notify_secrets
from .pipeline import Breaker, Pipeline
from .probe import is_complete
from .status_server import StatusServer
from .storage import redact
from .watcher import ReadyFile, Watcher

EX_OK, EX_FAILURE, EX_CONFIG = 0, 1, 78
ENQUEUE_BATCH = 2500
LOG_EACH_UP_TO = 100
# Below the unit's TimeoutStopSec=90, so a slow last part is not cut off by SIGKILL.
STOP_TIMEOUT = 60.0
PRUNE_INTERVAL = 3600.0
# How often a daemon on a shared queue reads the database's clock again, and how far off its own may be unremarked.
CLOCK_CHECK_INTERVAL = 60.0
CLOCK_WARN_OFFSET = 2.0

log = structlog.get_logger("ingestd.service")


@dataclass
class LiveProgress:
    """Bytes sent per job in flight, shared with the status page."""

    uploads: dict[str, tuple[int, int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def update(self, job_id: str, sent: int, total: int) -> None:
        with self.lock:
            self.uploads[job_id] = (sent, total)

    def drop(self, job_id: str) -> None:
        with self.lock:
            self.uploads.pop(job_id, None)

    def snapshot(self) -> dict[str, tuple[int, int]]:
        with self.lock:
            return dict(self.uploads)


def _relative(path: str, folder: Path) -> str:
    """``path`` relative to ``folder``, which holds it; by text, as a backlog has thousands of them."""
    top = str(folder).rstrip(os.sep) + os.sep
    return path[len(top):] if path.startswith(top) else str(Path(path).relative_to(folder))


class AlreadyRunning(IngestdError):
    """Another ingestd holds this state directory."""


class StateLock:
    """One daemon per state directory: two would lease each other's jobs away."""

    def __init__(self, state_dir: Path):
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / "ingestd.lock"
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AlreadyRunning(f"another ingestd is using {self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class Service:
    def __init__(self, config: Config, *, notifier: sdnotify.SystemdNotifier | None = None,
                 events: stdqueue.SimpleQueue[str] | None = None):
        self.config = config
        self.notifier = notifier or sdnotify.SystemdNotifier()
        self.events: stdqueue.SimpleQueue[str] = events or stdqueue.SimpleQueue()
        self.stopping = threading.Event()
        self.work_available = threading.Event()
        self.progress = LiveProgress()
        # Bounded: a start-up backlog is handed on no faster than it is written, never all in memory at once.
        self._arrivals: stdqueue.Queue[ReadyFile] = stdqueue.Queue(maxsize=2 * ENQUEUE_BATCH)
        self._arrivals_lock = threading.Lock()
        self._arrivals_pending = 0
        self._enqueuer: threading.Thread | None = None
        self.breaker = Breaker.for_upload(config.upload)
        self._folders_seen = {str(f.path): f for f in config.folders}
        self.queue = q.open_queue(config, max_connections=config.upload.workers + 8)
        self.metrics = Metrics()
        self.metrics.watch(self)
        self.client = self.metrics.client(config.api)
        self.notifications = Notifier(self.queue, node=config.node_name, on_outcome=self.metrics.notification)
        self.pipeline = self._pipeline(config, self.client)
        self.watcher = self._watcher(config)
        self.workers: list[threading.Thread] = []
        self.started_at = time.time()
        self.status_server: StatusServer | None = None
        # The watched folders' locks, held by `ingestd run`; None when the service runs inside another program.
        self.folder_locks: FolderLocks | None = None
        self._config_lock = threading.Lock()
        # Clients replaced by a reload that workers still use, and how many workers use each client.
        self._retired_clients: list[StreamClient] = []
        self._client_users: dict[StreamClient, int] = {}
        watchdog_usec = int(os.environ.get("WATCHDOG_USEC", "0") or 0)
        self.watchdog = watchdog_usec > 0
        # Half the watchdog interval, as sd_watchdog_enabled(3) advises; never sleep longer than 5 s.
        self.tick = min(watchdog_usec / 2e6, 5.0) if self.watchdog else 5.0
        # /healthz turns 503 when the loop has not ticked for this long.
        self.stall_after = 3 * self.tick + 5.0
        # On a shared queue, this daemon's hold on its node name (renewed at every tick of the main loop).
        self.node_hold = (NodeName(self.queue, config.node_name, stale_after=max(config.queue_lease, 3 * self.tick))
                          if self.queue.shared else None)
        self._last_tick = time.monotonic()
        self._next_prune = 0.0
        self._next_clock_check = 0.0
        self._clock_off = False

    # -- wiring ------------------------------------------------------------

    def _pipeline(self, config: Config, client: StreamClient) -> Pipeline:
        self._folders_seen.update({str(f.path): f for f in config.folders})
        current = {str(f.path) for f in config.folders}
        former = {path: f for path, f in self._folders_seen.items() if path not in current}
        return Pipeline(config, self.queue, client, breaker=self.breaker, on_progress=self.progress.update, stopping=self.stopping,
                        former_folders=former)

    def _watcher(self, config: Config) -> Watcher:
        return Watcher(config.folders, on_ready=self._on_ready, on_stalled=self._on_stalled, is_complete=is_complete)

    def _on_ready(self, ready: ReadyFile) -> None:
        # Called from the watcher's thread: hand over and return, the enqueuer writes in batches.
        with self._arrivals_lock:
            self._arrivals_pending += 1
        while not self.stopping.is_set():
            try:
                self._arrivals.put(ready, timeout=0.5)
                return
            except stdqueue.Full:
                continue
        # Stopping: the file stays where it is, and the next start's scan finds it.
        with self._arrivals_lock:
            self._arrivals_pending -= 1

    def _enqueue_arrivals(self) -> None:
        """Write ready files to the queue, many per transaction, so a backlog of thousands is queued in seconds."""
        while not (self.stopping.is_set() and self._arrivals.empty()):
            try:
                batch = [self._arrivals.get(timeout=0.5)]
            except stdqueue.Empty:
                continue
            while len(batch) < ENQUEUE_BATCH:
                try:
                    batch.append(self._arrivals.get_nowait())
                except stdqueue.Empty:
                    break
            files = [q.NewFile(r.path_text, str(r.folder.path), _relative(r.path_text, r.folder.path), r.size, r.mtime_ns,
                               r.inode, str(r.sidecar) if r.sidecar else None) for r in batch]
            try:
                added = self._enqueue(files)
            finally:
                with self._arrivals_lock:
                    self._arrivals_pending -= len(batch)
            # A line per file, except for a backlog: one line per batch there, the files at debug level.
            batch_log = log.bind()
            each = batch_log.info if len(added) <= LOG_EACH_UP_TO else batch_log.debug
            for job_id, f in added:
                each("file_queued", job_id=job_id, path=f.path, size=f.size, **({"sidecar": f.sidecar} if f.sidecar else {}))
            if len(added) > LOG_EACH_UP_TO:
                batch_log.info("files_queued", count=len(added), first=added[0][1].path, last=added[-1][1].path)
            if added:
                self.work_available.set()

    def _enqueue(self, files: list[q.NewFile]) -> list[tuple[str, q.NewFile]]:
        """Queue a batch in one transaction; when that fails, file by file, so one bad file cannot hold up the rest."""
        try:
            added = self.queue.enqueue_many(files)
            if len(added) < len(files):
                self._wait_for_earlier_jobs(files, added)
            return added
        except Exception:
            if len(files) == 1:
                # Not queued, so not handed on: the watcher looks at it again (a full state disk clears up).
                log.exception("enqueue_failed", path=files[0].path)
                self.watcher.offer_again(files[0].path)
                return []
            log.exception("enqueue_batch_failed", files=len(files))
        return [added for f in files for added in self._enqueue([f])]

    def _wait_for_earlier_jobs(self, files: list[q.NewFile], added: list[tuple[str, q.NewFile]]) -> None:
        """A file refused because a live job holds its path is either that job's own file, or a newer file moved
        over it: the newer one is looked at again until that job ends, then queued in its own right."""
        queued = {f.path for _, f in added}
        refused = [f for f in files if f.path not in queued]
        live = self.queue.live_keys([f.path for f in refused])
        for f in refused:
            job_id, *key = live.get(f.path, (None,))
            if job_id is not None and tuple(key) != (f.size, q.storable(f.mtime_ns), f.inode):
                log.info("file_waits_for_earlier_job", path=f.path, job_id=job_id)
                self.watcher.offer_again(f.path)

    def _on_stalled(self, path: Path, folder, reason: str) -> None:
        try:
            st = os.stat(path, follow_symlinks=False)
        except OSError:
            return
        # Straight to filing: the file goes to the failed folder with the watcher's reason.
        added = self._enqueue([q.NewFile(str(path), str(folder.path), str(path.relative_to(folder.path)), st.st_size,
                                         st.st_mtime_ns, st.st_ino, failure=reason)])
        for job_id, _ in added:
            log.warning("file_stalled", job_id=job_id, path=str(path), reason=reason)
            self.work_available.set()

    # -- lifecycle ---------------------------------------------------------

    def reconcile(self) -> None:
        """Start-up: take back jobs this host left running, re-check held ones, notice files gone meanwhile.

        On a shared queue only this node's running jobs are taken back: the others belong to live daemons, or
        come back to the queue when their leases run out.
        """
        now = time.time()
        self.queue.take_back(node=self.config.node_name if self.queue.shared else None)
        resumed = self.queue.unhold()
        if resumed:
            log.info("held_jobs_rechecked", count=resumed)
        roots: dict[str, bool] = {}
        for job_id, path, root, stage in self.queue.queued_files():
            # A folder that is not there (a share not mounted yet) says nothing about its files.
            if root not in roots:
                roots[root] = os.path.isdir(root)
            if stage != q.FILE and roots[root] and not os.path.lexists(path):
                # Through the filing stage, which deletes a media the job may already have created.
                self.queue.update(job_id, stage=q.FILE, outcome=q.FAILED, event="file_vanished",
                                  error="the file disappeared while ingestd was not running")
                log.warning("file_vanished", job_id=job_id, path=path)
        log.info("reconciled", seconds=round(time.time() - now, 3), counts=self.queue.counts(), node=self.config.node_name,
                 queue=self.queue.where)

    def start(self) -> None:
        """Reconcile the queue, start workers, watchers and the status listener; return once the start-up backlog is queued."""
        if self.node_hold is not None:
            self.node_hold.acquire()  # before this node's running jobs are taken back: they may be another daemon's
        # Then: a job that ends from now on finds its notification targets, and what waits in the outbox is sent,
        # a send the last run was killed in the middle of included.
        self.queue.release_notification_leases(node=self.config.node_name if self.queue.shared else None)
        self.notifications.start(self.config)
        self.reconcile()
        for n in range(self.config.upload.workers):
            thread = threading.Thread(target=self._work, args=(q.worker_id(f"worker-{n}", self.config.node_name),), name=f"worker-{n}", daemon=True)
            thread.start()
            self.workers.append(thread)
        self._enqueuer = threading.Thread(target=self._enqueue_arrivals, name="enqueuer", daemon=True)
        self._enqueuer.start()
        warning = self.watcher.check_inotify_limits()
        if warning:
            log.warning("inotify_limit", message=warning)
        self.watcher.start()
        self._await_backlog()
        self._start_status_server()

    def _start_status_server(self) -> None:
        self.status_server = self._status_server(self.config)
        if self.status_server is not None:
            self.status_server.start()

    def _status_server(self, config: Config) -> StatusServer | None:
        """The listener for ``config``, bound but not yet serving; None without status.listen. OSError when the address is taken."""
        return StatusServer(config.status.listen, self) if config.status.listen else None

    def _await_backlog(self, timeout: float = 5.0) -> None:
        """Let the watcher hand on the files the start-up scan found settled, so READY means they are in the queue."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (self._arrivals_pending or self.watcher.has_listed_backlog()):
            time.sleep(0.05)

    def _work(self, owner: str) -> None:
        bound = log.bind(worker=owner)
        while not self.stopping.is_set():
            if self.breaker.is_open:
                self.stopping.wait(min(1.0, self.breaker.seconds_left()) or 0.1)
                continue
            try:
                job = self.queue.claim(owner)
                if job is None:
                    self.work_available.wait(timeout=0.5)
                    self.work_available.clear()
                    continue
                pipeline = self._use_pipeline()
                try:
                    pipeline.run(job, owner)
                finally:
                    self._done_with(pipeline.client)
                self.progress.drop(job.id)
            except Exception:
                # A bug in one job must not take the worker down with it.
                bound.exception("worker_error")
                self.stopping.wait(1.0)

    def heartbeat(self) -> None:
        self._last_tick = time.monotonic()

    def seconds_since_tick(self) -> float:
        return time.monotonic() - self._last_tick

    def health(self) -> tuple[bool, str]:
        """(alive, words): alive while the main loop ticks; an unreachable API is reported, not counted as dead."""
        stalled = self.seconds_since_tick()
        if stalled > self.stall_after:
            return False, f"stalled: the main loop has not run for {stalled:.0f}s"
        return True, "ok; API unreachable, paused" if self.breaker.is_open else "ok"

    def status_line(self) -> str:
        parts = [f"{n} {what}" for what, n in self.queue.activity().items()]
        if self.breaker.is_open:
            parts.append("API unreachable, paused")
        return ", ".join(parts)

    def reload(self, config_path: Path) -> bool:
        """Apply a new config whole, or refuse it and keep the old one: a config that does not load, or a part of
        it that cannot be put in place (the new status.listen is taken), changes nothing."""
        self.notifier.notify(f"RELOADING=1\nMONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        try:
            config = load_config(config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload_refused", problem=str(problem))
            self.notifier.notify("READY=1\nSTATUS=reload refused: config invalid, old config kept")
            return False
        # What can fail is built first, beside the running parts; nothing running is touched until all of it is in hand.
        listen_changes = self.status_server is None or self.status_server.listen != config.status.listen
        try:
            status_server = self._status_server(config) if listen_changes else self.status_server
        except OSError as exc:
            problem = f"status.listen: cannot listen on {config.status.listen}: {exc.strerror or exc}"
            if self.status_server is not None and _port(self.status_server.listen) == _port(config.status.listen):
                problem += " (the running listener holds that port; a restart applies the new address)"
            log.error("reload_refused", problem=problem, kept="the old config, whole")
            self.notifier.notify(f"READY=1\nSTATUS=reload refused: {problem}; old config kept")
            return False
        if self.folder_locks is not None:
            try:
                self.folder_locks.lock(f.path for f in config.folders)
            except FolderTaken as exc:
                if listen_changes and status_server is not None:
                    status_server.stop()
                log.error("reload_refused", problem=str(exc), kept="the old config, whole")
                self.notifier.notify("READY=1\nSTATUS=reload refused: a new folder is watched by another ingestd; old config kept")
                return False
            self.folder_locks.keep_only(f.path for f in config.folders)
        for key, old, new in (("state_dir", self.config.state_dir, config.state_dir),
                              ("upload.workers", self.config.upload.workers, config.upload.workers),
                              ("node_name", self.config.node_name, config.node_name),
                              ("queue_url", redact(self.config.queue_url or "-"), redact(config.queue_url or "-"))):
            if old != new:
                log.warning("reload_needs_restart", key=key, running_with=str(old), configured=str(new))
        logsetup.configure(format=config.log.format, level=config.log.level)
        logsetup.redactor.update(secrets_of(self.config) + secrets_of(config))
        logsetup.redactor.set("notify", notify_secrets(self.config) + notify_secrets(config))
        client = self.metrics.client(config.api)
        with self._config_lock:
            old_client = self.client
            self.config, self.client = config, client
            self.pipeline = self._pipeline(config, client)
        self._retire(old_client)
        self.watcher.stop()
        self.watcher = self._watcher(config)
        self.watcher.start()
        self.notifications.reload(config)
        if listen_changes:
            if self.status_server is not None:
                self.status_server.stop()
            self.status_server = status_server
            if status_server is not None:
                status_server.start()
        # New credentials or budget may unblock held jobs.
        resumed = self.queue.unhold()
        self.breaker.success()
        log.info("config_reloaded", path=str(config_path), held_jobs_resumed=resumed,
                 folders=[str(f.path) for f in config.folders], rules=[r.name for r in config.rules])
        self.notifier.notify(f"READY=1\nSTATUS={self.status_line()}")
        self.work_available.set()
        return True

    # -- clients in use ------------------------------------------------------
    # A reload replaces the client; workers mid-job keep theirs until the job's step ends, then the last one closes it.

    def _use_pipeline(self) -> Pipeline:
        with self._config_lock:
            pipeline = self.pipeline
            self._client_users[pipeline.client] = self._client_users.get(pipeline.client, 0) + 1
        return pipeline

    def _done_with(self, client: StreamClient) -> None:
        with self._config_lock:
            self._client_users[client] -= 1
            if self._client_users[client]:
                return
            del self._client_users[client]
            if client is self.client or client not in self._retired_clients:
                return
            self._retired_clients.remove(client)
        client.close()

    def _retire(self, client: StreamClient) -> None:
        with self._config_lock:
            if client in self._client_users:
                self._retired_clients.append(client)
                return
        client.close()

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop watching, let parts in flight finish (no new part starts), then close; jobs resume on the next start."""
        self.notifier.notify("STOPPING=1")
        log.info("stopping", timeout=timeout)
        self.stopping.set()
        self.watcher.stop()
        deadline = time.monotonic() + timeout
        for thread in [*self.workers, *([self._enqueuer] if self._enqueuer else [])]:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [t.name for t in self.workers if t.is_alive()]
        if busy:
            # Their leases run out and the next start takes the jobs back.
            log.warning("stop_timeout", workers_still_busy=busy, timeout=timeout)
        # A send about to finish may record its outcome; one a receiver holds up is sent again at the next start,
        # like every notification still waiting in the outbox.
        self.notifications.stop(timeout=min(2.0, max(0.0, deadline - time.monotonic())))
        if self.status_server is not None:
            self.status_server.stop()
        for client in [*self._retired_clients, self.client]:
            client.close()
        if self.node_hold is not None:
            self.node_hold.release()  # the name is free at once for this daemon's next start

    def _prune_if_due(self) -> None:
        """Forget jobs finished longer than state.keep_finished ago: at start-up, then a few times per window."""
        now = time.time()
        if now < self._next_prune:
            return
        keep = self.config.state.keep_finished
        self._next_prune = now + min(PRUNE_INTERVAL, keep / 4)
        pruned = self.queue.prune_finished(self.queue.now() - keep)
        if pruned:
            log.info("finished_jobs_pruned", count=pruned, finished_before_seconds_ago=keep)
        if self.queue.shared:
            self.queue.prune_nodes(self.queue.now() - keep)

    def _check_clock(self) -> None:
        """Read the shared queue's clock again now and then; say so when this host's clock is off it."""
        if not self.queue.shared or time.monotonic() < self._next_clock_check:
            return
        self._next_clock_check = time.monotonic() + CLOCK_CHECK_INTERVAL
        offset = self.queue.store.measure_clock()
        off = abs(offset) > CLOCK_WARN_OFFSET
        if off and not self._clock_off:
            # Harmless to the queue, whose leases and times are all on the database's clock; not to the rest.
            log.warning("clock_off", seconds=round(offset, 1), message=f"this host's clock is {abs(offset):.0f}s "
                        f"{'behind' if offset > 0 else 'ahead of'} the queue database's; the queue keeps to the "
                        "database's clock, but fix this host's time (NTP): file ages and log times use it")
        elif self._clock_off and not off:
            log.info("clock_in_step", seconds=round(offset, 1))
        self._clock_off = off

    def main_loop(self, config_path: Path) -> None:
        while True:
            self.heartbeat()
            if self.node_hold is not None and not self.node_hold.renew():
                raise NodeNameTaken(f"node_name {self.config.node_name!r} was taken over by another daemon while this "
                                    "one was not heard from; give each host its own node_name in the config")
            self.notifier.notify(f"STATUS={self.status_line()}" + ("\nWATCHDOG=1" if self.watchdog else ""))
            if self.queue.unhold(due_only=True):
                self.work_available.set()
            self._prune_if_due()
            self._check_clock()
            try:
                event = self.events.get(timeout=self.tick)
            except stdqueue.Empty:
                continue
            if event == "stop":
                return
            if event == "reload":
                self.reload(config_path)


def _port(listen: str | None) -> str:
    return (listen or "").rpartition(":")[2]


def run(config_path: Path) -> int:
    """``ingestd run``: the daemon in the foreground until SIGTERM or SIGINT."""
    # Signals become events at once, so a stop that arrives during start-up is a clean stop too.
    events: stdqueue.SimpleQueue[str] = stdqueue.SimpleQueue()
    signal.signal(signal.SIGTERM, lambda *_: events.put("stop"))
    signal.signal(signal.SIGINT, lambda *_: events.put("stop"))
    signal.signal(signal.SIGHUP, lambda *_: events.put("reload"))
    try:
        config = load_config(config_path)
    except ConfigError as exc:
        for problem in exc.problems:
            line = str(problem)
            print(logsetup.with_priority(line, "error") if logsetup.writes_to_journal(sys.stderr) else line,
                  flush=True, file=sys.stderr)
        return EX_CONFIG
    logsetup.configure(format=config.log.format, level=config.log.level)
    logsetup.redactor.update(secrets_of(config))
    logsetup.redactor.set("notify", notify_secrets(config))
    for warning in config.warnings():
        log.warning("config_warning", key=warning.key, message=warning.message)
    for problem in config.missing_folders():
        # Not fatal: the folder is watched as soon as it appears; but it is an error until then.
        log.error("folder_missing", key=problem.key, message=problem.message)
    lock = StateLock(Path(config.state_dir))
    try:
        lock.acquire()
    except AlreadyRunning as exc:
        log.error("already_running", error=str(exc))
        return EX_FAILURE
    folder_locks = FolderLocks.for_config(config)
    try:
        folder_locks.lock(f.path for f in config.folders)
    except FolderTaken as exc:
        log.error("folder_taken", error=str(exc))
        lock.release()
        return EX_FAILURE
    service = Service(config, events=events)
    service.folder_locks = folder_locks
    try:
        service.start()
        service.notifier.notify(f"READY=1\nSTATUS={service.status_line()}")
        log.info("ready", folders=[str(f.path) for f in config.folders], workers=config.upload.workers)
        service.main_loop(Path(config_path))
    except NodeNameTaken as exc:
        # A config problem: restarting would not help, so systemd does not (RestartPreventExitStatus=78).
        log.error("node_name_taken", error=str(exc))
        return EX_CONFIG
    finally:
        service.stop()
        folder_locks.release()
        lock.release()
    log.info("stopped")
    return EX_OK
