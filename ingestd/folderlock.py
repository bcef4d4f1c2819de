"""One daemon per watched folder: two with different queues would each upload every file.

Each watched folder holds ``.ingestd.lock`` (a dot file, so the default ``ignore`` patterns skip it),
``flock``-ed for as long as the daemon watches the folder and naming the host, pid and state_dir
that hold it, so a second daemon can say who is in the way. ``flock`` is released by the kernel
when a daemon dies, so a stale file never blocks a start. Daemons that share one queue
(``queue_url``) may share folders: the queue's leases keep them from taking the same file.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from collections.abc import Iterable
from pathlib import Path

import structlog

from .config import Config
from .errors import IngestdError

LOCK_NAME = ".ingestd.lock"

log = structlog.get_logger("ingestd.folderlock")


def folders_are_exclusive(config: Config) -> bool:
    """Whether each watched folder must belong to this daemon alone: yes, unless the queue is shared."""
    return config.queue_url is None


class FolderTaken(IngestdError):
    """Another ingestd, with a queue of its own, watches this folder."""


class FolderLocks:
    """The locks on the watched folders of one daemon."""

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self._held: dict[Path, int] = {}

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
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            # A folder that is missing or read-only (an unmounted share) is still watched; nothing can be filed there.
            log.warning("folder_not_locked", folder=str(folder), reason=exc.strerror or str(exc))
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise FolderTaken(
                f"{folder} is already watched by {holder} (lock: {path}); two daemons with their own queues would "
                "upload its files twice: stop the other one, or let both share one queue (queue_url)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "state_dir": str(self.state_dir)})
                  .encode() + b"\n", 0)
        self._held[folder] = fd
        return True

    def _release(self, folder: Path) -> None:
        fd = self._held.pop(folder)
        try:
            os.ftruncate(fd, 0)  # still ours: no other daemon can be writing its name here yet
        except OSError:
            pass
        os.close(fd)


def _describe(content: bytes) -> str:
    try:
        holder = json.loads(content)
        return f"ingestd pid {holder['pid']} on {holder['host']} (state_dir {holder['state_dir']})"
    except (ValueError, KeyError, TypeError):
        return "another ingestd"
