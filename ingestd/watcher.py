"""Noticing audio files in the watched folders and handing each on once it is complete.

Observers (inotify, or polling for network and FUSE filesystems) and directory scans only
*nudge* a table of candidates. One tick thread owns every decision: it re-stats each
candidate, waits until size and mtime have held still for ``settle`` seconds, asks the
format whether the file is whole, waits for a sidecar when one is wanted, and then calls
``on_ready`` (or ``on_stalled`` when a file never gets there). The same thread checks
that each folder is still present and readable, pausing and resuming it; a missing
folder never reads as "every file was deleted".
"""

from __future__ import annotations

import errno
import math
import os
import re
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import translate
from functools import lru_cache
from pathlib import Path
from typing import Literal

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserver

from .config import FolderConfig

log = structlog.get_logger("ingestd.watcher")

SIDECAR_SUFFIXES = (".yaml", ".yml", ".json")
# Filesystems where inotify misses changes made by other machines: poll them instead.
NETWORK_FSTYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "smbfs", "sshfs", "9p", "afs", "ceph", "glusterfs", "lustre",
    "gpfs", "davfs", "ncpfs", "virtiofs", "vboxsf", "fuse",
})
MOUNTINFO = Path("/proc/self/mountinfo")
INOTIFY_MAX_USER_WATCHES = Path("/proc/sys/fs/inotify/max_user_watches")

# Everything but opening and reading: each read of a file (the probe's, the upload's) would otherwise be two
# events for the observer thread to decode and the tick to ignore.
EVENTS_WATCHED = [FileCreatedEvent, DirCreatedEvent, FileModifiedEvent, DirModifiedEvent, FileMovedEvent, DirMovedEvent,
                  FileDeletedEvent, DirDeletedEvent, FileClosedEvent]

ObserverKind = Literal["native", "polling"]
StatKey = tuple[int, int, int]  # size, mtime_ns, inode


@dataclass(frozen=True, slots=True)
class ReadyFile:
    """A file that has stopped changing and is whole, with the stat it was judged on."""

    path_text: str  # as the filesystem gives it (never normalised); text, as a backlog hands on thousands
    folder: FolderConfig
    size: int
    mtime_ns: int
    inode: int
    sidecar: Path | None

    @property
    def path(self) -> Path:
        return Path(self.path_text)


@dataclass
class _FolderWatch:
    folder: FolderConfig
    observer: BaseObserver | None = None
    kind: ObserverKind = "native"
    paused: str | None = None  # the reason, while paused
    paused_at: float = 0.0
    identity: tuple[int, int] | None = None  # (st_dev, st_ino) of the folder being watched
    mount_point: str | None = None

    @property
    def state(self) -> str:
        if self.paused is not None:
            return f"paused: {self.paused}"
        return "watching" if self.kind == "native" else "polling"

    def observer_alive(self) -> bool:
        # inotify and polling emitters stop for good when the watched directory is deleted.
        return self.observer is not None and all(e.is_alive() for e in self.observer.emitters)


@dataclass(slots=True)
class _Candidate:
    path: str  # text, not a Path: a start-up backlog holds a hundred thousand of these
    watch: _FolderWatch
    key: StatKey
    first_seen: float  # time.monotonic()
    last_change: float  # time.monotonic()
    since: float  # time.time(), for the status page
    waiting_for: str = "settle"
    complete_key: StatKey | None = None  # the stat for which is_complete last said "not False"
    ready_at: float | None = None  # when the audio itself was settled and whole
    sidecar: Path | None = None
    sidecar_key: StatKey | None = None
    sidecar_change: float = 0.0
    # Stat'd by a directory listing that nothing has nudged since: the first judgement needs no stat of its own.
    listed: bool = False
    # The sidecar that listing showed beside it (a name, or None for none), good while no sidecar has been nudged.
    listed_sidecar: str | None = None
    listed_sidecar_generation: int = -1


@dataclass(frozen=True, slots=True)
class _FoundAt:
    """When a listing found its files: one set of times shared by all of them, as a backlog has a hundred thousand."""

    monotonic: float
    wall: float
    settled: float  # as if the file had been seen unchanged for settle already

    @classmethod
    def now(cls, settle: float) -> _FoundAt:
        monotonic = time.monotonic()
        return cls(monotonic, time.time(), monotonic - settle)


@dataclass(slots=True)
class _Reported:
    inode: int
    mtime_ns: int
    folder: Path
    at: float  # time.monotonic()


@dataclass
class _Nudges:
    files: dict[Path, _FolderWatch] = field(default_factory=dict)
    dirs: dict[Path, _FolderWatch] = field(default_factory=dict)


class Watcher:
    """Watches folders and calls ``on_ready`` once per complete file, from its own thread."""

    def __init__(
        self,
        folders: list[FolderConfig],
        *,
        on_ready: Callable[[ReadyFile], None],
        on_stalled: Callable[[Path, FolderConfig, str], None],
        is_complete: Callable[[str], bool | None] = lambda p: None,
        rescan_interval: float = 300.0,
        tick: float = 0.25,
    ):
        self._watches = [_FolderWatch(folder) for folder in folders]
        self._on_ready = on_ready
        self._on_stalled = on_stalled
        self._is_complete = is_complete
        self._rescan_interval = rescan_interval
        self._tick_interval = tick
        self._excluded = tuple(
            os.path.abspath(d) for f in folders for d in (f.done_dir, f.failed_dir)
        )
        self._lock = threading.Lock()
        self._candidates: dict[str, _Candidate] = {}
        # Keyed by the path's text: kept for every file handed on, so it must stay small.
        self._reported: dict[str, _Reported] = {}
        self._offered_again: set[str] = set()
        self._skipped: set[Path] = set()
        self._nudges = _Nudges()
        # Counts sidecar events: a sidecar lookup served by a listing is good only while this is unchanged.
        self._sidecar_generation = 0
        self._next_rescan = 0.0
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- public surface -------------------------------------------------------------------

    def start(self) -> None:
        """Start observing, scan for files that arrived while ingestd was down, then return."""
        for watch in self._watches:
            try:
                reason, st = self._availability(watch)
                if reason is None and st is not None:
                    self._start_observer(watch, st)
                else:
                    self._pause(watch, reason or "unavailable")
            except Exception as exc:
                self._pause(watch, f"cannot watch it: {exc}")
        self.scan()
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="ingestd-watcher", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        for watch in self._watches:
            self._stop_observer(watch)

    def scan(self) -> int:
        """Walk every available folder now; return how many new candidates were found."""
        self._next_rescan = time.monotonic() + self._rescan_interval
        return sum(self._scan_folder(watch) for watch in self._watches if watch.paused is None)

    def pending(self) -> list[dict]:
        """Files not yet handed on: ``path``, ``size``, ``waiting_for`` (settle, complete, sidecar, folder or
        handoff, while ``on_ready`` is taking it) and ``since`` (epoch seconds)."""
        with self._lock:
            return [
                {"path": c.path, "size": c.key[0], "waiting_for": c.waiting_for, "since": c.since}
                for c in self._candidates.values()
            ]

    def has_listed_backlog(self) -> bool:
        """Whether a file a scan found already settled is still to be judged or handed on (a start-up backlog)."""
        with self._lock:
            return any(c.listed or c.waiting_for == "handoff" for c in self._candidates.values())

    def folder_states(self) -> dict[Path, str]:
        """``watching`` | ``polling`` | ``paused: <reason>`` for each folder."""
        return {watch.folder.path: watch.state for watch in self._watches}

    def check_inotify_limits(self) -> str | None:
        """A warning with the fix when native watching needs more inotify watches than allowed."""
        try:
            limit = int(INOTIFY_MAX_USER_WATCHES.read_text().strip())
        except (OSError, ValueError):
            return None
        needed = sum(
            _count_directories(str(w.folder.path), w.folder.recursive)
            for w in self._watches
            if _observer_kind(w.folder) == "native"
        )
        if needed <= limit:
            return None
        # The limit is per user and other programs use watches too: leave room to grow.
        suggested = max(2 * needed, 524288)
        return (
            f"the watched folders need about {needed} inotify watches but fs.inotify.max_user_watches "
            f"is {limit}; raise it with `sysctl fs.inotify.max_user_watches={suggested}` "
            f"(and persist it in /etc/sysctl.d/), or set observer: polling on the largest folders"
        )

    # -- the tick thread -------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stopping.wait(self._tick_interval):
            try:
                self._tick()
            except Exception:
                log.exception("watcher_tick_failed")

    def _tick(self) -> None:
        self._check_folders()
        if time.monotonic() >= self._next_rescan:
            self.scan()
        self._apply_nudges()
        self._decide()

    def _check_folders(self) -> None:
        for watch in self._watches:
            try:
                reason, st = self._availability(watch)
                if reason is not None:
                    self._pause(watch, reason)
                elif st is not None and (
                    watch.paused is not None
                    or not watch.observer_alive()
                    or watch.identity != (st.st_dev, st.st_ino)
                ):
                    self._resume(watch, st)
            except Exception as exc:
                # Retried every tick; _pause logs only the first time.
                self._pause(watch, f"cannot watch it: {exc}")

    def _availability(self, watch: _FolderWatch) -> tuple[str | None, os.stat_result | None]:
        """(None, stat) when the folder can be watched, else (reason, None)."""
        path = watch.folder.path
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return "folder does not exist", None
        except OSError as exc:
            return f"cannot stat the folder: {exc.strerror or exc}", None
        if not stat.S_ISDIR(st.st_mode):
            return "not a directory", None
        if not os.access(path, os.R_OK | os.X_OK):
            return "folder is not readable", None
        if watch.identity is not None and st.st_dev != watch.identity[0] and watch.mount_point:
            # A different device under the same path: an unmounted share shows its empty mount point.
            if watch.mount_point not in {mp for mp, _ in _read_mounts()}:
                return f"{watch.mount_point} is not mounted", None
        return None, st

    def _pause(self, watch: _FolderWatch, reason: str) -> None:
        if watch.paused is None:
            log.warning("folder_paused", folder=str(watch.folder.path),
                        reason=reason)
            watch.paused_at = time.monotonic()
            self._stop_observer(watch)
        watch.paused = reason

    def _resume(self, watch: _FolderWatch, st: os.stat_result) -> None:
        was_paused = watch.paused is not None
        self._stop_observer(watch)
        self._start_observer(watch, st)
        if was_paused:
            # Time spent paused must not count against settle, max_wait or sidecar_wait.
            away = time.monotonic() - watch.paused_at
            with self._lock:
                for c in self._candidates.values():
                    if c.watch is watch:
                        c.first_seen += away
                        if c.ready_at is not None:
                            c.ready_at += away
            log.info("folder_resumed", folder=str(watch.folder.path), state=watch.state)
        else:
            log.info("folder_remounted", folder=str(watch.folder.path))
        self._scan_folder(watch)

    def _start_observer(self, watch: _FolderWatch, st: os.stat_result) -> None:
        folder = watch.folder
        kind = _observer_kind(folder)
        handler = _EventHandler(self, watch)
        try:
            observer = _make_observer(kind, folder)
            observer.schedule(handler, str(folder.path), recursive=folder.recursive, event_filter=EVENTS_WATCHED)
            observer.start()
        except OSError as exc:
            if kind != "native" or exc.errno not in (errno.ENOSPC, errno.EMFILE):
                raise
            log.warning("inotify_limit_polling_instead", folder=str(folder.path),
                        error=str(exc), fix=self.check_inotify_limits())
            kind = "polling"
            observer = _make_observer(kind, folder)
            observer.schedule(handler, str(folder.path), recursive=folder.recursive, event_filter=EVENTS_WATCHED)
            observer.start()
        mount = _mount_for(os.path.realpath(folder.path))
        watch.observer = observer
        watch.kind = kind
        watch.identity = (st.st_dev, st.st_ino)
        watch.mount_point = mount[0] if mount else None
        watch.paused = None

    def _stop_observer(self, watch: _FolderWatch) -> None:
        observer, watch.observer = watch.observer, None
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception:
            log.exception("observer_stop_failed", folder=str(watch.folder.path))

    # -- finding candidates ----------------------------------------------------------------

    def _nudge_event(self, watch: _FolderWatch, event: FileSystemEvent) -> None:
        """Called on observer threads: only note which paths to look at on the next tick."""
        if event.event_type in ("opened", "closed_no_write"):
            return  # reading a file (ours included) changes nothing
        paths = [event.src_path, getattr(event, "dest_path", "")]
        with self._lock:
            for raw in paths:
                if not raw:
                    continue
                path = Path(os.fsdecode(raw))
                if not event.is_directory:
                    self._nudges.files[path] = watch
                    if path.name.endswith(SIDECAR_SUFFIXES):
                        self._sidecar_generation += 1
                    candidate = self._candidates.get(str(path))
                    if candidate is not None:
                        candidate.listed = False
                elif event.event_type in ("created", "moved") and path != watch.folder.path:
                    self._nudges.dirs[path] = watch

    def _apply_nudges(self) -> None:
        with self._lock:
            nudges, self._nudges = self._nudges, _Nudges()
        for path, watch in nudges.files.items():
            if watch.paused is None:
                self._look_at(path, watch)
        for path, watch in nudges.dirs.items():
            try:
                if watch.paused is None and self._dir_eligible(path, watch.folder):
                    self._walk(watch, str(path))
            except OSError:
                continue  # gone again already

    def _look_at(self, path: Path, watch: _FolderWatch) -> None:
        if not self._eligible(path, watch.folder):
            return
        try:
            st = os.lstat(path)
            if not _real_directories(path.parent, watch.folder.path):
                return
        except OSError:
            # Gone. A file that reappears later (new inode or mtime) is a new file.
            if self._availability(watch)[0] is None:
                with self._lock:
                    self._reported.pop(str(path), None)
            return
        if stat.S_ISREG(st.st_mode):
            self._add(str(path), watch, st, settled=False)
        else:
            self._note_not_a_file(path, st.st_mode)

    def _scan_folder(self, watch: _FolderWatch) -> int:
        seen: set[str] = set()
        began = time.monotonic()
        found, complete = self._walk(watch, str(watch.folder.path), seen)
        if complete:
            # Forget reported files that are gone, so a new file under the same name counts.
            with self._lock:
                gone = [p for p, r in self._reported.items()
                        if r.folder == watch.folder.path and r.at < began and p not in seen]
                for path in gone:
                    del self._reported[path]
        return found

    def _walk(self, watch: _FolderWatch, top: str, seen: set[str] | None = None) -> tuple[int, bool]:
        """Scan ``top`` (recursively if the folder is): (new candidates, whether every directory was read)."""
        folder = watch.folder
        found, complete = 0, True
        stack = [top]
        while stack:
            directory = stack.pop()
            try:
                with os.scandir(directory) as listing:
                    entries = list(listing)
            except OSError as exc:
                log.warning("directory_unreadable", directory=directory, error=exc.strerror or str(exc))
                complete = False
                continue
            # The listing answers "is there a sidecar beside it?" for every file in it, without a stat each.
            sidecars = ({e.name for e in entries if e.name.endswith(SIDECAR_SUFFIXES)} if folder.sidecar != "off"
                        else set())
            generation = self._sidecar_generation
            found_at = _FoundAt.now(folder.settle)
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=False):
                        if folder.recursive and not entry.name.startswith(".") and not self._excluded_dir(entry.path):
                            stack.append(entry.path)
                        elif _name_eligible(entry.name, folder):
                            self._note_not_a_file(Path(entry.path), stat.S_IFDIR)
                        continue
                    if not _name_eligible(entry.name, folder):
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        self._note_not_a_file(Path(entry.path), entry.stat(follow_symlinks=False).st_mode)
                        continue
                    if seen is not None:
                        seen.add(entry.path)
                    st = entry.stat(follow_symlinks=False)
                except OSError:
                    continue  # vanished mid-scan
                if not stat.S_ISREG(st.st_mode):
                    continue
                # Not written to for settle seconds already: no reason to make a backlog wait out settle again.
                if _is_old(st, folder.settle):
                    stem = os.path.splitext(entry.name)[0]
                    sidecar = next((stem + suffix for suffix in SIDECAR_SUFFIXES if stem + suffix in sidecars), None) \
                        if sidecars else None
                    found += self._add(entry.path, watch, st, settled=True, listing=(sidecar, generation), at=found_at)
                else:
                    found += self._add(entry.path, watch, st, settled=False, at=found_at)
        return found, complete

    def _note_not_a_file(self, path: Path, mode: int) -> None:
        """Say once that something named like audio is skipped: a symlink is never followed, a FIFO never read."""
        with self._lock:
            if path in self._skipped:
                return
            self._skipped.add(path)
        kind = ("symlink" if stat.S_ISLNK(mode) else "directory" if stat.S_ISDIR(mode)
                else "fifo" if stat.S_ISFIFO(mode) else "special file")
        log.info("not_a_regular_file_skipped", path=str(path), kind=kind)

    def _add(self, path: str, watch: _FolderWatch, st: os.stat_result, *, settled: bool,
             listing: tuple[str | None, int] | None = None, at: _FoundAt | None = None) -> bool:
        """A new candidate; ``listing`` (sidecar name or None, sidecar generation) when a directory listing found it settled."""
        at = at or _FoundAt.now(watch.folder.settle)
        with self._lock:
            if path in self._candidates:
                return False
            reported = self._reported.get(path)
            if reported is not None and (reported.inode, reported.mtime_ns) == (st.st_ino, st.st_mtime_ns):
                return False
            candidate = _Candidate(
                path=path, watch=watch, key=_stat_key(st), first_seen=at.monotonic,
                last_change=at.settled if settled else at.monotonic, since=at.wall,
            )
            if listing is not None:
                candidate.listed = True
                candidate.listed_sidecar, candidate.listed_sidecar_generation = listing
            self._candidates[path] = candidate
        return True

    def _eligible(self, path: Path, folder: FolderConfig) -> bool:
        if not _name_eligible(path.name, folder):
            return False
        try:
            directories = path.relative_to(folder.path).parts[:-1]
        except ValueError:
            return False
        if directories and not folder.recursive:
            return False
        if any(d.startswith(".") for d in directories):
            return False
        return not self._excluded_dir(str(path))

    def _dir_eligible(self, path: Path, folder: FolderConfig) -> bool:
        try:
            parts = path.relative_to(folder.path).parts
        except ValueError:
            return False
        if not folder.recursive or any(p.startswith(".") for p in parts) or self._excluded_dir(str(path)):
            return False
        return _real_directories(path, folder.path)

    def _excluded_dir(self, path: str) -> bool:
        """Inside some folder's done_dir or failed_dir (or one of them)."""
        absolute = os.path.abspath(path)
        return any(absolute == d or absolute.startswith(d.rstrip(os.sep) + os.sep) for d in self._excluded)

    # -- deciding ------------------------------------------------------------------------------

    def _decide(self) -> None:
        with self._lock:
            candidates = list(self._candidates.values())
        for candidate in candidates:
            if self._stopping.is_set():
                return  # a stop need not wait for the rest of a backlog to be judged
            try:
                outcome = self._judge(candidate)
            except Exception:
                log.exception("readiness_check_failed", path=candidate.path)
                outcome = None
            if outcome is not None:
                self._hand_on(candidate, outcome)  # still marked listed, if it was, until it is gone from pending
            else:
                candidate.listed = False  # judged once on the listing's stat: from now on it is stat'd anew

    def _judge(self, c: _Candidate) -> ReadyFile | str | None:
        """A ReadyFile, a stall reason, or None to keep waiting. Drops files that are gone."""
        if c.watch.paused is not None:
            c.waiting_for = "folder"
            return None
        folder = c.watch.folder
        now = time.monotonic()
        if c.listed:
            # Just stat'd by the listing, and no event about it since: judged on that stat.
            key = c.key
        else:
            try:
                st = os.lstat(c.path)
            except OSError:
                # Deleted, or its folder just vanished: only the former loses the candidate.
                if self._availability(c.watch)[0] is None:
                    self._drop(c)
                return None
            if not stat.S_ISREG(st.st_mode):
                self._drop(c)
                return None
            key = _stat_key(st)
            if key != c.key:
                c.key, c.last_change, c.ready_at = key, now, None
        size, mtime_ns, inode = key

        if now - c.last_change < folder.settle:
            c.waiting_for = "settle"
            if now - c.first_seen >= folder.max_wait:
                return (f"still changing after {_human(folder.max_wait)}; it is {size} bytes and a writer "
                        f"is still appending or rewriting it (raise max_wait for slower transfers)")
            return None

        if c.complete_key != key:
            if self._call_is_complete(c.path) is False:
                c.waiting_for = "complete"
                if now - c.first_seen >= folder.max_wait:
                    return (f"still incomplete after {_human(folder.max_wait)}; it stopped growing "
                            f"before the length its own header states")
                return None
            c.complete_key = key
        if c.ready_at is None:
            c.ready_at = now

        sidecar = None
        if folder.sidecar != "off":
            sidecar, settled = self._sidecar_state(c, now)
            if (sidecar is None and folder.sidecar == "required") or (sidecar is not None and not settled):
                c.waiting_for = "sidecar"
                if now - c.ready_at < folder.sidecar_wait:
                    return None
                if sidecar is None:
                    return (f"sidecar {Path(c.path).stem}.yaml/.json is required but did not appear "
                            f"within {_human(folder.sidecar_wait)}")
                return f"sidecar {sidecar.name} was still changing after {_human(folder.sidecar_wait)}"
        return ReadyFile(path_text=c.path, folder=folder, size=size, mtime_ns=mtime_ns, inode=inode, sidecar=sidecar)

    def _sidecar_state(self, c: _Candidate, now: float) -> tuple[Path | None, bool]:
        """The sidecar beside the candidate, if any, and whether it has held still for settle."""
        found = None
        if c.listed_sidecar_generation == self._sidecar_generation:
            # Once, straight after the listing: it names the only sidecar worth a stat (or none at all).
            names = [c.listed_sidecar] if c.listed_sidecar else []
            c.listed_sidecar_generation = -1
        else:
            names = [Path(c.path).stem + suffix for suffix in SIDECAR_SUFFIXES]
        for name in names:
            path = Path(c.path).with_name(name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                found = (path, st)
                break
        if found is None:
            c.sidecar = c.sidecar_key = None
            return None, False
        path, st = found
        key = _stat_key(st)
        if path != c.sidecar:
            c.sidecar, c.sidecar_key = path, key
            # Already old: settled from the start (not "now - settle", which rounding can leave a hair short).
            c.sidecar_change = -math.inf if _is_old(st, c.watch.folder.settle) else now
        elif key != c.sidecar_key:
            c.sidecar_key, c.sidecar_change = key, now
        return path, now - c.sidecar_change >= c.watch.folder.settle

    def _call_is_complete(self, path: str) -> bool | None:
        try:
            return self._is_complete(path)
        except Exception as exc:
            log.debug("completeness_check_failed", path=str(path), error=str(exc))
            return None

    def _drop(self, c: _Candidate) -> None:
        with self._lock:
            if self._candidates.get(c.path) is c:
                del self._candidates[c.path]

    def _hand_on(self, c: _Candidate, outcome: ReadyFile | str) -> None:
        # The file stays in pending() until the callback has taken it: whoever waits for "nothing pending and
        # nothing on its way" (the service, before READY) must never see it in neither place.
        c.waiting_for = "handoff"
        try:
            # A file that already has a live job is passed on all the same: the queue ignores it, in one
            # transaction with the files around it, cheaper than a lookup per file here.
            if isinstance(outcome, ReadyFile):
                self._on_ready(outcome)
            else:
                log.warning("file_stalled", path=c.path, reason=outcome)
                self._on_stalled(Path(c.path), c.watch.folder, outcome)
        except Exception:
            # Not handed on after all: the next rescan offers it again.
            log.exception("file_handoff_failed", path=c.path)
            self._drop(c)
            return
        with self._lock:
            if self._candidates.get(c.path) is c:
                del self._candidates[c.path]
            if c.path in self._offered_again:
                self._offered_again.discard(c.path)  # its job could not be recorded: judged afresh
            else:
                self._reported[c.path] = _Reported(inode=c.key[2], mtime_ns=c.key[1], folder=c.watch.folder.path,
                                                   at=time.monotonic())

    def offer_again(self, path: str) -> None:
        """Judge ``path`` afresh: it was handed on but got no job (the queue could not record it, or a job for an
        older file at the same path is still under way)."""
        watch = next((w for w in self._watches if Path(path).is_relative_to(w.folder.path)), None)
        with self._lock:
            if self._reported.pop(path, None) is None:
                self._offered_again.add(path)  # still being handed on: not to be marked as reported
            if watch is not None:
                self._nudges.files[Path(path)] = watch


class _EventHandler(FileSystemEventHandler):
    def __init__(self, watcher: Watcher, watch: _FolderWatch):
        self._watcher = watcher
        self._watch = watch

    def on_any_event(self, event: FileSystemEvent) -> None:
        try:
            self._watcher._nudge_event(self._watch, event)
        except Exception:
            log.exception("event_handling_failed", event=repr(event))


def _make_observer(kind: ObserverKind, folder: FolderConfig) -> BaseObserver:
    return Observer() if kind == "native" else PollingObserver(timeout=folder.poll_interval)


def _observer_kind(folder: FolderConfig) -> ObserverKind:
    if folder.observer != "auto":
        return folder.observer
    mount = _mount_for(os.path.realpath(folder.path))
    return "polling" if mount and _is_network_fstype(mount[1]) else "native"


def _is_network_fstype(fstype: str) -> bool:
    return fstype in NETWORK_FSTYPES or fstype.startswith("fuse.")


def _read_mounts() -> list[tuple[str, str]]:
    """(mount point, fstype) for every mount, in /proc/self/mountinfo order."""
    try:
        lines = MOUNTINFO.read_bytes().splitlines()
    except OSError:
        return []
    mounts = []
    for line in lines:
        before, sep, after = line.partition(b" - ")
        fields, tail = before.split(), after.split()
        if not sep or len(fields) < 5 or not tail:
            continue
        # Spaces, tabs, newlines and backslashes in mount points are written as \ooo.
        point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m.group(1), 8)]), fields[4])
        mounts.append((os.fsdecode(point), os.fsdecode(tail[0])))
    return mounts


def _mount_for(path: str) -> tuple[str, str] | None:
    """The mount a real path lies on: the longest matching mount point (the later one on ties)."""
    best = None
    for point, fstype in _read_mounts():
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best[0]):
                best = (point, fstype)
    return best


def _real_directories(directory: Path, top: Path) -> bool:
    """Whether ``directory`` and each one above it, up to ``top``, is a real directory, not a symlink."""
    for path in (directory, *directory.parents):
        if path == top:
            return True
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return False
    return False


def _count_directories(top: str, recursive: bool) -> int:
    """How many inotify watches a folder takes: one per directory, as watchdog watches them."""
    if not os.path.isdir(top):
        return 0
    if not recursive:
        return 1
    count, stack = 0, [top]
    while stack:
        count += 1
        try:
            with os.scandir(stack.pop()) as entries:
                stack.extend(e.path for e in entries if _is_real_dir(e))
        except OSError:
            continue
    return count


def _is_real_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _name_eligible(name: str, folder: FolderConfig) -> bool:
    lowered = name.lower()
    if lowered.endswith(SIDECAR_SUFFIXES):
        return False
    include, ignore = _patterns(tuple(folder.include), tuple(folder.ignore))
    return include.match(lowered) is not None and ignore.match(lowered) is None


@lru_cache(maxsize=64)
def _patterns(include: tuple[str, ...], ignore: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """Each list of globs as one compiled, case-blind pattern: a scan of 100,000 names matches each name once."""
    def one(globs: tuple[str, ...]) -> re.Pattern[str]:
        return re.compile("|".join(f"(?:{translate(g.lower())})" for g in globs) or "(?!)")
    return one(include), one(ignore)


def _stat_key(st: os.stat_result) -> StatKey:
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _is_old(st: os.stat_result, settle: float) -> bool:
    return time.time_ns() - st.st_mtime_ns >= settle * 1e9


def _human(seconds: float) -> str:
    """60 → "60s", 3600 → "1h", 5400 → "1h30m"."""
    if seconds < 120 or seconds != int(seconds):
        return f"{seconds:g}s"
    hours, rest = divmod(int(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n)
