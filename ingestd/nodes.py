"""One node name, one daemon: on a shared queue a running daemon holds its ``node_name``.

A daemon takes back, at start-up, the jobs its node left running, so two live daemons under one name (two hosts
cloned with the same host name, say) would take each other's jobs from under them. The name's holder says it is
alive at every tick of its main loop; a daemon that finds the name held by another live one refuses to start.
A holder is gone when it has not been seen for ``stale_after``, when its machine has restarted since, or when
its process is no longer there on this machine.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from . import queue as q
from .errors import IngestdError


class NodeNameTaken(IngestdError):
    """Another running daemon holds this node name on the shared queue."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def this_machine() -> tuple[str, str]:
    """(machine, boot): what tells this machine from another, and this boot of it from the last."""
    return _read("/etc/machine-id") or socket.gethostname(), _read("/proc/sys/kernel/random/boot_id")


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def is_gone(holder: q.NodeHolder, *, stale_after: float, now: float) -> bool:
    """Whether the daemon that holds a name has certainly stopped (or is as good as stopped); ``now`` on the queue's clock."""
    if now - holder.seen_at > stale_after:
        return True  # silent for longer than a job's lease: its jobs are free anyway
    machine, boot = this_machine()
    if holder.machine != machine:
        return False
    if holder.boot != boot:
        return True  # this machine has restarted since
    # In a container every start may be pid 1 again: a holder with our own pid is an earlier run of ours.
    return holder.pid == os.getpid() or not _process_exists(holder.pid)


class NodeName:
    """This daemon's hold on its node name in a shared queue."""

    def __init__(self, queue: q.JobQueue, node: str, *, stale_after: float):
        self.queue = queue
        self.node = node
        self.stale_after = stale_after
        self.instance = uuid.uuid4().hex

    def acquire(self) -> None:
        """Hold the name, or raise :class:`NodeNameTaken` naming the daemon that holds it."""
        machine, boot = this_machine()
        while True:
            holder = self.queue.node_holder(self.node)
            now = self.queue.now()
            if holder is not None and not is_gone(holder, stale_after=self.stale_after, now=now):
                raise NodeNameTaken(_taken_message(holder, self.stale_after, now))
            me = q.NodeHolder(node=self.node, instance=self.instance, hostname=socket.gethostname(), machine=machine,
                              boot=boot, pid=os.getpid(), started_at=now, seen_at=now)
            if self.queue.take_node(me, replacing=holder):
                return
            # Another daemon took or renewed the name between the read and the write: judge it again.

    def renew(self) -> bool:
        """Say this daemon is alive; False when another daemon has taken the name meanwhile."""
        return self.queue.node_seen(self.node, self.instance)

    def release(self) -> None:
        self.queue.release_node(self.node, self.instance)


def _taken_message(holder: q.NodeHolder, stale_after: float, now: float) -> str:
    ago = max(0.0, now - holder.seen_at)
    return (f"node_name {holder.node!r} is held by a running daemon on {holder.hostname} (pid {holder.pid}, last seen "
            f"{ago:.0f}s ago); two daemons under one name would take each other's jobs. Give each host its own "
            f"node_name in the config. If that daemon has stopped, the name is free {stale_after:.0f}s after it "
            f"was last seen.")
