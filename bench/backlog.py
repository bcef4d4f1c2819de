"""Figure 4: a folder already holding thousands of files when the daemon starts.

Measures the time to ``READY=1`` on our own ``NOTIFY_SOCKET``, the time until every
file has a row in the queue, and the daemon's peak RSS. The API is unreachable (a
closed loopback port), so workers get nowhere and only discovery and enqueueing count.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from pathlib import Path

from . import MIB, DaemonProcess, cpu_seconds, Row, Scale, log, queue_counts, wait_for, wav_header, write_config

TARGET_SECONDS = {10_000: 10.0, 100_000: 15.0}
TARGET_RSS_100K = 150 * MIB


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def fill(inbox: Path, count: int) -> None:
    """Tiny but complete WAVs with real-looking names, dated an hour back so they are settled at once; all of one
    size, as takes of one length are, so the duplicate check has to tell them apart by content."""
    header = wav_header(16)
    old = time.time() - 3600
    for n in range(count):
        album = inbox / f"catalogue-{n // 1000:03d}"
        if n % 1000 == 0:
            album.mkdir()
        path = album / f"{n:06d} - take {n % 7 + 1}.wav"
        path.write_bytes(header + n.to_bytes(16, "little"))  # all one size, each its own content
        os.utime(path, (old, old))


def measure(root: Path, count: int) -> tuple[float, float, int, float, float, int]:
    """Seconds to READY=1 and to all enqueued, peak RSS, and the daemon's CPU seconds until all were enqueued;
    then, restarted with all of them still queued, its seconds to READY=1 and its peak RSS."""
    base_url = f"http://127.0.0.1:{closed_port()}/api"
    config = write_config(root, base_url, upload={"workers": 2}, folder={"settle": 1})
    fill(root / "inbox", count)
    with DaemonProcess(config) as daemon:
        ready = daemon.wait_ready(timeout=600)
        wait_for(lambda: sum(queue_counts(root / "state").values()) >= count, timeout=900, interval=0.1,
                 what=f"{count} jobs in the queue")
        enqueued = time.perf_counter() - daemon.started
        peak = daemon.peak_rss() or 0
        cpu = cpu_seconds(daemon.proc.pid)
    with DaemonProcess(config) as daemon:
        # Start-up takes back and re-checks every queued job: a restart in the middle of a backlog.
        ready_again = daemon.wait_ready(timeout=600)
        peak_again = daemon.peak_rss() or 0
    return ready, enqueued, peak, cpu, ready_again, peak_again


def run(scale: Scale) -> list[Row]:
    rows = []
    for count in scale.pick((10_000, 100_000), (10_000,)):
        with tempfile.TemporaryDirectory(prefix="ingestd-bench-") as scratch:
            ready, enqueued, peak, cpu, ready_again, peak_again = measure(Path(scratch), count)
        log(f"backlog {count}: READY=1 after {ready:.1f}s, all enqueued after {enqueued:.1f}s, peak RSS {peak / MIB:.0f} MiB, "
            f"CPU {cpu:.1f}s")
        target = TARGET_SECONDS.get(count)
        rss_target = TARGET_RSS_100K if count == 100_000 else None

        def rss_row(metric: str, peak: int) -> Row:
            return Row("backlog", metric, f"{peak / MIB:.0f} MiB", f"≤ {rss_target // MIB} MiB" if rss_target else "",
                       peak <= rss_target if rss_target else None)

        rows += [
            Row("backlog", f"{count:,} files: start → READY=1", f"{ready:.1f} s"),
            Row("backlog", f"{count:,} files: start → all enqueued", f"{enqueued:.1f} s",
                f"≤ {target:.0f} s" if target else "", enqueued <= target if target else None),
            Row("backlog", f"{count:,} files: daemon CPU until all enqueued (start-up included)", f"{cpu:.1f} s"),
            rss_row(f"{count:,} files: daemon peak RSS", peak),
            Row("backlog", f"{count:,} files still queued: restart → READY=1", f"{ready_again:.1f} s"),
            rss_row(f"{count:,} files still queued: restarted daemon's peak RSS", peak_again),
        ]
    return rows
