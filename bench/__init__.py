"""Benchmarks for ingestd: each figure is measured side by side in one run, as rates and ratios.

The machine these run on is shared and noisy, so no figure is a pass/fail test; each
module returns :class:`Row` objects that ``python -m bench`` prints as a markdown table.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import socket
import sqlite3
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

MIB = 1024 * 1024
T = TypeVar("T")


@dataclass(frozen=True)
class Row:
    """One line of the results table."""

    figure: str
    metric: str
    value: str
    target: str = ""
    met: bool | None = None  # None: no target for this line

    @property
    def verdict(self) -> str:
        return {True: "yes", False: "**no**", None: ""}[self.met]


@dataclass(frozen=True)
class Scale:
    """Sizes for one run; ``quick`` shrinks them so the whole suite fits in a couple of minutes."""

    quick: bool

    def pick(self, full: T, quick: T) -> T:
        return quick if self.quick else full

    def rounds(self, full: int, quick: int) -> int:
        """Alternating rounds of a contest: ``BENCH_ROUNDS`` overrides, for more pairs on a noisy machine."""
        return int(os.environ.get("BENCH_ROUNDS") or self.pick(full, quick))


class Contest:
    """Rates (MB/s) and CPU (seconds per GiB) of contenders over alternating rounds of one file size."""

    def __init__(self, figure: str, size: int, names: Sequence[str]):
        self.figure, self.size, self.names = figure, size, list(names)
        self.rates: dict[str, list[float]] = {name: [] for name in names}
        self.cpu: dict[str, list[float]] = {name: [] for name in names}

    def record(self, name: str, round_no: int, rounds: int, seconds: float, cpu_seconds: float) -> None:
        self.rates[name].append(mb_per_s(self.size, seconds))
        self.cpu[name].append(cpu_seconds / (self.size / 1024 ** 3))
        log(f"{self.figure} {self.size // MIB} MiB, round {round_no + 1}/{rounds}: {name} {self.rates[name][-1]:.0f} MB/s, "
            f"{self.cpu[name][-1]:.2f} CPU s/GiB")

    def rate_rows(self, figure: str, what: str) -> list[Row]:
        """One row per contender: the median rate, each round's, and the median CPU per GiB."""
        return [Row(figure, f"{self.size // MIB} MiB, {what}: {name}",
                    f"{median(self.rates[name]):.0f} MB/s ({', '.join(f'{r:.0f}' for r in self.rates[name])}); "
                    f"CPU {median(self.cpu[name]):.2f} s/GiB") for name in self.names]


def ratio_rows(figure: str, metric: str, rates: Sequence[float], peer_rates: Sequence[float], target: float) -> list[Row]:
    """A rate as a ratio of a peer's: best round against best round (the rounds least disturbed by the
    machine's other work, as ``timeit`` takes the fastest repeat), then round by round for the spread."""
    best = max(rates) / max(peer_rates)
    each = [r / p for r, p in zip(rates, peer_rates)]
    return [Row(figure, f"{metric}, best rounds", f"{best:.2f}×", f"≥ {target}×", best >= target),
            Row(figure, f"{metric}, round by round", ", ".join(f"{r:.2f}×" for r in each)
                + f" (geometric mean {statistics.geometric_mean(each):.2f}×, median {median(each):.2f}×)")]


def markdown(rows: Sequence[Row]) -> str:
    lines = ["| figure | metric | value | target | met |", "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r.figure} | {r.metric} | {r.value} | {r.target} | {r.verdict} |" for r in rows]
    return "\n".join(lines)


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- fixtures ---------------------------------------------------------------------------

def wav_header(data_size: int, rate: int = 44100, channels: int = 2, bits: int = 16) -> bytes:
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", 1, channels, rate, rate * block, block, bits)
    return (b"RIFF" + struct.pack("<I", 36 + data_size) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
            + b"data" + struct.pack("<I", data_size))


def write_wav(path: Path, size: int) -> Path:
    """A valid 16-bit stereo WAV of exactly ``size`` bytes; the samples are noise, so nothing compresses them."""
    data_size = size - 44
    data_size -= data_size % 4
    block = os.urandom(MIB)
    with open(path, "wb") as out:
        out.write(wav_header(data_size))
        left = data_size
        while left:
            n = min(left, MIB)
            out.write(block[:n])
            left -= n
    return path


def read_through(path: Path) -> None:
    """Read a file once so that every contender starts from the page cache."""
    with open(path, "rb") as src:
        while src.read(8 * MIB):
            pass


def cached_source(root: Path, size: int) -> Path:
    """``root/src/master.wav`` of ``size`` bytes, written back to disk and then read into the page cache."""
    (root / "src").mkdir()
    source = write_wav(root / "src" / "master.wav", size)
    os.sync()  # nothing of the source left to write back while a contender reads it
    read_through(source)
    return source


def rotated(names: Sequence[str], round_no: int) -> list[str]:
    """The contenders' order in a round: rotated each round, so none always runs first (or last)."""
    shift = round_no % len(names)
    return [*names[shift:], *names[:shift]]


# -- processes --------------------------------------------------------------------------

class EmulatorProcess:
    """``ingestd emulator`` in its own process, so its parsing and hashing don't share our GIL."""

    def __init__(self, data_dir: Path, *, min_part_size: str = "5MiB", transcode_delay: float = 0.0, extra: Sequence[str] = ()):
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingestd", "emulator", "--port", "0", "--data", str(data_dir),
             "--min-part-size", min_part_size, "--transcode-delay", str(transcode_delay), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        if not line.startswith("http"):
            self.proc.kill()
            raise RuntimeError(f"the emulator did not start (said {line!r})")
        self.base_url = line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> EmulatorProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def write_config(root: Path, base_url: str, *, upload: dict[str, Any] | None = None, folder: dict[str, Any] | None = None,
                 **top: Any) -> Path:
    """A daemon config watching ``root/inbox``; state, done and failed folders beside it."""
    for name in ("inbox", "done", "failed"):
        (root / name).mkdir(parents=True, exist_ok=True)
    config = {
        "api": {"base_url": base_url, "token": "test-token", "timeout": 60},
        "state_dir": str(root / "state"),
        "upload": {"workers": 2, "poll_interval": 0.05} | (upload or {}),
        "presets": {"bench": [{"resolution": "standard", "type": "hls", "container_type": "mpegts",
                               "audio_config": {"codec": "aac", "bitrate": 128000, "channels": "2",
                                                "sample_rate": 44100, "language": "en", "index": 0}}]},
        "folders": [{"path": str(root / "inbox"), "settle": 0.2, "done_dir": str(root / "done"),
                     "failed_dir": str(root / "failed")} | (folder or {})],
        "log": {"format": "json", "level": "info"},
        "rules": [{"name": "default", "title": "{stem}", "qualities": "bench"}],
    } | top
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def ingestd_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "ingestd", *args]


@dataclass(frozen=True)
class Measured:
    seconds: float
    peak_rss: int  # bytes, from the kernel's accounting for this one child
    returncode: int
    cpu: float  # user plus system seconds of this one child


def run_measured(command: Sequence[str], *, log_path: Path | None = None, env: dict[str, str] | None = None) -> Measured:
    """Run ``command`` to its end: wall time, and peak RSS from ``wait4`` (this child only, not its siblings)."""
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        started = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    return Measured(seconds, usage.ru_maxrss * 1024, proc.returncode, usage.ru_utime + usage.ru_stime)


def vm_hwm(pid: int) -> int | None:
    """Peak RSS so far of a running process, in bytes."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.02, what: str = "condition") -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def percentile(values: Sequence[float], share: float) -> float:
    """Nearest-rank percentile (``share`` in 0–1)."""
    ordered = sorted(values)
    rank = max(1, math.ceil(share * len(ordered)))
    return ordered[rank - 1]


def mb_per_s(size: int, seconds: float) -> float:
    return size / seconds / 1e6


class DaemonProcess:
    """``ingestd run`` with a ``NOTIFY_SOCKET`` of our own, so ``READY=1`` can be timed."""

    def __init__(self, config: Path):
        self.config = config
        self.notify_path = config.parent / "notify.sock"
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.log_path = config.parent / "daemon.log"
        self.started = 0.0
        self.proc: subprocess.Popen | None = None

    def start(self) -> DaemonProcess:
        env = os.environ | {"NOTIFY_SOCKET": str(self.notify_path), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as out:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(ingestd_command("run", "--config", str(self.config)), stdout=out,
                                         stderr=subprocess.STDOUT, env=env)
        return self

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Seconds from start to ``READY=1``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                message = self.notify.recv(4096).decode(errors="replace")
            except TimeoutError:
                break
            if "READY=1" in message.split("\n"):
                return time.perf_counter() - self.started
        raise TimeoutError(f"no READY=1 within {timeout:.0f}s; see {self.log_path}")

    def peak_rss(self) -> int | None:
        return vm_hwm(self.proc.pid) if self.proc else None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.notify.close()
        self.notify_path.unlink(missing_ok=True)  # so the same folder can start another daemon

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def queue_counts(state_dir: Path) -> dict[str, int]:
    """Jobs per state, read straight from the queue database (the daemon keeps it in WAL mode)."""
    path = state_dir / "queue.sqlite3"
    if not path.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as db:
            return dict(db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall())
    except sqlite3.OperationalError:
        return {}  # the daemon is still creating its tables


def children_cpu() -> float:
    """User plus system CPU time of this process's children that have ended and been waited for."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def thread_cpu(pid: int) -> dict[int, float]:
    """User plus system CPU time so far of each thread of a running process, by thread id."""
    times = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the thread ended meanwhile
        times[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return times


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a running process has used so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
