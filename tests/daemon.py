"""Running the real daemon in tests: a config file on disk and `ingestd run` as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from ingestd import queue as q

from .audio import write_wav, write_wav_of_size

T = TypeVar("T")

PRESETS = {
    "podcast": [
        {"resolution": "highest", "type": "hls", "container_type": "mpegts",
         "audio_config": {"codec": "aac", "bitrate": 320000, "channels": "2", "sample_rate": 44100, "language": "en", "index": 0}},
        {"resolution": "standard", "type": "dash", "container_type": "fmp4",
         "audio_config": {"codec": "aac", "bitrate": 128000, "channels": "2", "sample_rate": 44100, "language": "en", "index": 0}},
    ]
}


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def clock_off_by(seconds: float, folder: Path) -> dict[str, str]:
    """Environment for a daemon whose host's wall clock is ``seconds`` off, as Python reads it (time.time and
    time.time_ns; the monotonic clock stays right, as it does on a host whose NTP is broken). ``folder`` holds the
    ``sitecustomize`` that shifts it. (libfaketime would shift the whole process, but its timed waits then never
    end under Python's threads.)"""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(
        "import time\n"
        "_host_time, _host_time_ns = time.time, time.time_ns\n"
        f"time.time = lambda: _host_time() + {seconds!r}\n"
        f"time.time_ns = lambda: _host_time_ns() + {int(seconds * 1e9)}\n")
    return {"PYTHONPATH": os.pathsep.join(filter(None, (str(folder), os.environ.get("PYTHONPATH"))))}


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, interval: float = 0.05, what: str = "condition") -> T:
    """Poll until ``predicate()`` is truthy; fail the test with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def make_config(root: Path, base_url: str, *, token: str = "test-token", upload: dict[str, Any] | None = None,
                rules: list[dict[str, Any]] | None = None, folder: dict[str, Any] | None = None, **top: Any) -> Path:
    """A config with one watched folder ``root/inbox`` → ``root/done`` / ``root/failed``."""
    for name in ("inbox", "done", "failed"):
        (root / name).mkdir(parents=True, exist_ok=True)
    config = {
        "api": {"base_url": base_url, "token": token, "timeout": 10},
        "state_dir": str(root / "state"),
        "upload": {"workers": 2, "chunk_size": "5MiB", "poll_interval": 0.2, "max_attempts": 10} | (upload or {}),
        "presets": PRESETS,
        "folders": [{"path": str(root / "inbox"), "settle": 0.3, "done_dir": str(root / "done"),
                     "failed_dir": str(root / "failed")} | (folder or {})],
        "log": {"format": "json", "level": "debug"},
        "rules": rules or [{"name": "default", "title": "{stem}", "qualities": "podcast"}],
    } | top
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Daemon:
    """`ingestd run` in a subprocess, stopped with SIGTERM (or killed) by the test."""

    def __init__(self, config: Path, *, env: dict[str, str] | None = None, prefix: Sequence[str] = ()):
        self.config = config
        self.prefix = list(prefix)  # e.g. setpriv, to run the daemon with fewer rights
        self.env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
        self.log_path = config.parent / "daemon.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Daemon":
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen([*self.prefix, sys.executable, "-m", "ingestd", "run", "--config", str(self.config)],
                                     stdout=log, stderr=subprocess.STDOUT, env=self.env)
        log.close()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)

    def wait_exit(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def __enter__(self) -> "Daemon":
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()


def queue_of(root: Path) -> q.JobQueue:
    return q.JobQueue(q.queue_path(root / "state"))


def jobs_in(root: Path, state: str) -> list[q.Job]:
    path = q.queue_path(root / "state")
    if not path.exists():
        return []
    return queue_of(root).list(states=(state,), limit=10_000)


def drop(root: Path, name: str, *, size: int | None = None, seconds: float = 1.0, **wav: Any) -> Path:
    """A real WAV written beside ``root/inbox``, then renamed in whole, as a careful copy tool does."""
    staging = root / "staging" / name
    if size:
        write_wav_of_size(staging, size, **wav)
    else:
        write_wav(staging, seconds, **wav)
    target = root / "inbox" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)
    return target
