"""Where a process spends its time: py-spy samples, each put in the first ingestd area found from the leaf up."""

from __future__ import annotations

import collections
import shutil
import signal
import subprocess
import sys
from pathlib import Path

# Frames are matched by file, walking from the innermost frame outwards.
AREAS = [
    ("SQLite queue", "ingestd/queue.py"),
    ("HTTP calls", "ingestd/client.py"),
    ("moves and reports", "ingestd/filing.py"),
    ("probe", "ingestd/probe.py"),
    ("rules and sidecars", "ingestd/rules.py"),
    ("watcher", "ingestd/watcher.py"),
    ("logging", "structlog/"),
    ("pipeline (own code)", "ingestd/pipeline.py"),
    ("service loop", "ingestd/service.py"),
]
WAITING = ("wait (", "select (", "sleep (", "_wait_for_tstate_lock", "accept (")


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Sampler:
    """``py-spy record`` attached to a running process until :meth:`stop`."""

    def __init__(self, pid: int, output: Path, rate: int = 100):
        executable = py_spy()
        if executable is None:
            raise RuntimeError("py-spy is not installed (pip install 'ingestd[bench]')")
        self.output = output
        self.proc = subprocess.Popen([executable, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                                      "--output", str(output), "--nonblocking", "--gil"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def stop(self) -> dict[str, float]:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait(60)
        return shares(self.output) if self.output.exists() else {}


def shares(raw: Path) -> dict[str, float]:
    """Busy samples per area, as shares of all busy samples (threads waiting are left out)."""
    counts: collections.Counter[str] = collections.Counter()
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, number = line.rpartition(" ")
        frames = stack.split(";")
        if not number.isdigit() or any(w in frames[-1] for w in WAITING):
            continue
        area = next((name for frame in reversed(frames) for name, marker in AREAS if marker in frame), "other")
        counts[area] += int(number)
    total = sum(counts.values()) or 1
    return {area: n / total for area, n in counts.most_common()}


def describe(areas: dict[str, float], top: int = 5) -> str:
    return ", ".join(f"{name} {share:.0%}" for name, share in list(areas.items())[:top])
