"""One daemon per watched folder, or several on one shared queue: daemons with queues of their own would each
upload every file.

Each watched folder holds ``.ingestd.lock`` (a dot file, so the default ``ignore`` patterns skip it),
``flock``-ed for as long as the daemon watches the folder and naming the host, pid, state_dir and (for a
shared queue) the queue of the daemon that locked it last, so a daemon kept out can say who is in the way.
A daemon with its own SQLite queue locks it exclusively; daemons on a shared queue (``queue_url``) lock it
shared with each other, since the queue's leases keep them from taking the same file, and refuse a folder
whose holders are on another queue. ``flock`` is released by the kernel when a daemon dies, so a stale file
never blocks a start.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import stat
from collections.abc import Iterable
from pathlib import Path

import structlog

from .config import Config
from .errors import IngestdError
from .storage import redact

LOCK_NAME = ".ingestd.lock"

log = structlog.get_logger("ingestd.folderlock")


class FolderTaken(IngestdError):
    """Another ingestd, on another queue, watches this folder."""


class FolderLocks:
    """The locks on the watched folders of one daemon."""

    def __init__(self, state_dir: Path, *, shared_queue: str | None = None):
        """``shared_queue``: the queue URL (without its password) of a daemon on a shared queue; None for SQLite."""
        self.state_dir = Path(state_dir)
        self.shared_queue = shared_queue
        self._held: dict[Path, int] = {}

    @classmethod
    def for_config(cls, config: Config) -> FolderLocks:
        return cls(Path(config.state_dir), shared_queue=redact(config.queue_url) if config.queue_url else None)

    def lock(self, folders: Iterable[Path]) -> None:
        """Lock every folder not yet held; all or none: on a conflict, what this call took is let go."""
        taken: list[Path] = []
        try:
            for folder in folders:
                if folder not in self._held and self._lock_one(folder):
                    taken.append(folder)
        except FolderTaken:
            for folder in taken:
                self._release(folder)
            raise

    def keep_only(self, folders: Iterable[Path]) -> None:
        """Let go of the folders no longer watched."""
        keep = set(folders)
        for folder in [f for f in self._held if f not in keep]:
            self._release(folder)

    def release(self) -> None:
        for folder in list(self._held):
            self._release(folder)

    def _lock_one(self, folder: Path) -> bool:
        path = folder / LOCK_NAME
        try:
            # Anyone who may drop files may plant this name: a link is never followed (to the queue, say, which the
            # lock would truncate), a FIFO never waited on.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK, 0o644)
        except OSError as exc:
            # A folder that is missing or read-only (an unmounted share) is still watched; nothing can be filed there.
            reason = f"{path} is not a regular file (a symbolic link)" if exc.errno == errno.ELOOP else exc.strerror
            log.warning("folder_not_locked", folder=str(folder), reason=reason or str(exc))
            return False
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            log.warning("folder_not_locked", folder=str(folder), reason=f"{path} is not a regular file")
            return False
        try:
            fcntl.flock(fd, (fcntl.LOCK_SH if self.shared_queue else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            if self.shared_queue and _holder(fd).get("queue", self.shared_queue) != self.shared_queue:
                # The last daemon to lock it is on another queue: alone now (it has stopped), or refused.
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # not atomic: one that slips in between keeps it
        except BlockingIOError:
            holder = _describe(_holder(fd))
            os.close(fd)
            raise FolderTaken(
                f"{folder} is already watched by {holder} (lock: {path}); daemons on different queues would each "
                "upload its files: stop the other one, or let both share one queue (queue_url)") from None
        me = {"host": socket.gethostname(), "pid": os.getpid(), "state_dir": str(self.state_dir)}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me | ({"queue": self.shared_queue} if self.shared_queue else {})).encode() + b"\n", 0)
        self._held[folder] = fd
        return True

    def _release(self, folder: Path) -> None:
        fd = self._held.pop(folder)
        if not self.shared_queue:  # a shared lock's file may name another holder still there
            try:
                os.ftruncate(fd, 0)  # still ours: no other daemon can be writing its name here yet
            except OSError:
                pass
        os.close(fd)


def _holder(fd: int) -> dict:
    try:
        holder = json.loads(os.pread(fd, 4096, 0))
    except ValueError:
        return {}
    return holder if isinstance(holder, dict) else {}


def _describe(holder: dict) -> str:
    try:
        queue = f", queue {holder['queue']}" if holder.get("queue") else ""
        return f"ingestd pid {holder['pid']} on {holder['host']} (state_dir {holder['state_dir']}{queue})"
    except KeyError:
        return "another ingestd"
