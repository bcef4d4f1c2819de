"""Figure 3: small files through the daemon, end to end, and where the daemon's time goes.

Files are written beside the inbox, then renamed into it all at once after ``READY=1``
(as a finished copy appears), and the clock runs until every job is done. A second
pass with py-spy attached says which areas the daemon spent its busy samples in.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from . import DaemonProcess, cpu_seconds, EmulatorProcess, Row, Scale, log, queue_counts, wait_for, write_config, write_wav
from .profile import Sampler, describe, py_spy

FILE_SIZE = 100 * 1024
WORKERS = 4
TARGET = 50.0


def _pass(root: Path, count: int, *, profile: bool) -> tuple[float, dict[str, float], tuple[float, float]]:
    """Seconds for ``count`` files; busy areas (when profiled); CPU seconds of the daemon and the emulator."""
    staging = root / "staging"
    staging.mkdir(parents=True)
    names = [f"episode-{n:05d}.wav" for n in range(count)]
    for name in names:
        write_wav(staging / name, FILE_SIZE)
    with EmulatorProcess(root / "emulator") as emulator:
        config = write_config(root, emulator.base_url, upload={"workers": WORKERS, "poll_interval": 0.05},
                              folder={"settle": 0.2})
        with DaemonProcess(config) as daemon:
            daemon.wait_ready()
            sampler = Sampler(daemon.proc.pid, root / "profile.txt") if profile else None
            cpu_before = cpu_seconds(daemon.proc.pid), cpu_seconds(emulator.proc.pid)
            started = time.perf_counter()
            for name in names:
                os.rename(staging / name, root / "inbox" / name)
            wait_for(lambda: sum(queue_counts(root / "state").get(s, 0) for s in ("done", "failed", "skipped")) >= count,
                     timeout=count * 0.5 + 60, interval=0.05, what=f"{count} jobs to finish")
            seconds = time.perf_counter() - started
            cpu = cpu_seconds(daemon.proc.pid) - cpu_before[0], cpu_seconds(emulator.proc.pid) - cpu_before[1]
            areas = sampler.stop() if sampler else {}
    counts = queue_counts(root / "state")
    if counts.get("done", 0) != count:
        raise RuntimeError(f"not every file went through: {counts}; see {root / 'daemon.log'}")
    return seconds, areas, cpu


def run(scale: Scale) -> list[Row]:
    count = scale.pick(2000, 300)
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-") as scratch:
        seconds, _, (daemon_cpu, emulator_cpu) = _pass(Path(scratch) / "plain", count, profile=False)
        rate = count / seconds
        log(f"overhead: {count} files in {seconds:.1f}s, {rate:.1f} files/s; CPU daemon {daemon_cpu:.1f}s, emulator {emulator_cpu:.1f}s")
        rows = [Row("per-file overhead", f"{count} × 100 KiB WAV through `ingestd run` ({WORKERS} workers)",
                    f"{rate:.1f} files/s", f"≥ {TARGET:.0f} files/s", rate >= TARGET),
                Row("per-file overhead", "CPU per file: daemon / emulator",
                    f"{daemon_cpu / count * 1000:.1f} ms / {emulator_cpu / count * 1000:.1f} ms")]
        if py_spy() is not None:
            profiled_seconds, areas, _ = _pass(Path(scratch) / "profiled", count, profile=True)
            log(f"overhead under py-spy: {count / profiled_seconds:.1f} files/s; {areas}")
            rows.append(Row("per-file overhead", "daemon CPU (GIL holder) by area, py-spy", describe(areas)))
    return rows
