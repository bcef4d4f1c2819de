"""sd_notify as systemd sees it: the daemon's datagrams on a real NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import pytest

from ingestd import queue as q

from .audio import write_wav
from .daemon import Daemon, jobs_in, make_config, queue_of


class NotifySocket:
    """The receiving end systemd would hold: every datagram the daemon sends, in order."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + address[1:] if address.startswith("@") else address)
        self.messages: list[str] = []

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "a notification") -> str:
        """The first message (received from now on) for which ``predicate`` holds."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                message = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append(message)
            if predicate(message):
                return message
        raise AssertionError(f"no {what} within {timeout}s; got {self.messages[-5:]}")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(params=["path", "abstract"])
def notify(request, tmp_path_factory):
    if request.param == "path":
        # A short directory: unix socket paths are limited to 107 bytes.
        address = str(tmp_path_factory.mktemp("n") / "notify.sock")
    else:
        address = f"@ingestd-test-{uuid.uuid4().hex}"
    sock = NotifySocket(address)
    yield sock
    sock.close()


def fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.splitlines() if "=" in line)


def test_ready_only_once_the_startup_backlog_is_queued_then_live_status(tmp_path, emulator, notify):
    config = make_config(tmp_path, emulator.base_url)
    waiting = tmp_path / "inbox" / "waiting.wav"
    write_wav(waiting, 1.0)
    hour_ago = time.time() - 3600
    os.utime(waiting, (hour_ago, hour_ago))
    with Daemon(config, env={"NOTIFY_SOCKET": notify.address}) as daemon:
        ready = notify.wait_for(lambda m: "READY=1" in m, what="READY=1")
        # At READY the file that waited while ingestd was down is already a job.
        assert [job.path for job in queue_of(tmp_path).list()] == [str(waiting)]
        assert "queued" in fields(ready)["STATUS"]
        status = notify.wait_for(lambda m: "1 done" in fields(m).get("STATUS", ""), what="STATUS with 1 done")
        assert fields(status)["STATUS"] == "0 uploading, 0 queued, 0 transcoding, 0 held, 1 done, 0 failed"
        assert daemon.stop() == 0
    assert not any("WATCHDOG=1" in m for m in notify.messages), "no watchdog was asked for"


def test_watchdog_pings_at_half_the_interval(tmp_path, emulator, notify):
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config, env={"NOTIFY_SOCKET": notify.address, "WATCHDOG_USEC": "600000"}) as daemon:
        notify.wait_for(lambda m: "READY=1" in m, what="READY=1")
        pings = []
        for _ in range(4):
            notify.wait_for(lambda m: "WATCHDOG=1" in m, timeout=5, what="WATCHDOG=1")
            pings.append(time.monotonic())
        assert daemon.stop() == 0
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    # Every 0.3 s: well inside the 0.6 s systemd would allow.
    assert all(0.15 < gap < 0.55 for gap in gaps), gaps


def test_reloading_then_ready_then_stopping(tmp_path, emulator, notify):
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config, env={"NOTIFY_SOCKET": notify.address}) as daemon:
        notify.wait_for(lambda m: "READY=1" in m, what="READY=1")
        sent_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        daemon.proc.send_signal(signal.SIGHUP)
        reloading = fields(notify.wait_for(lambda m: "RELOADING=1" in m, what="RELOADING=1"))
        # systemd matches the reload to its own clock: the same CLOCK_MONOTONIC, after the signal.
        assert 0 <= int(reloading["MONOTONIC_USEC"]) - sent_at < 10_000_000
        notify.wait_for(lambda m: "READY=1" in m, what="READY=1 after the reload")

        daemon.proc.send_signal(signal.SIGTERM)
        notify.wait_for(lambda m: "STOPPING=1" in m, what="STOPPING=1")
        assert daemon.wait_exit(30) == 0
    assert "config_reloaded" in daemon.log()
    assert jobs_in(tmp_path, q.RUNNING) == []
