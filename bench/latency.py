"""Figure 5: from a file's last write to the create request reaching the API.

The emulator runs in this process, so its request records (stamped on arrival) and
our write times share one clock. Files are dropped one at a time into a folder with
``settle: 1``; each waits for its create before the next is written.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from ingestd.emulator import Emulator, EmulatorSettings

from . import DaemonProcess, Row, Scale, log, percentile, wait_for, write_config, write_wav

SETTLE = 1.0


def run(scale: Scale) -> list[Row]:
    count = scale.pick(30, 8)
    delays = []
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-") as scratch:
        root = Path(scratch)
        with Emulator(EmulatorSettings(transcode_delay=0.0), data_dir=root / "emulator") as emulator:
            config = write_config(root, emulator.base_url, upload={"workers": 2}, folder={"settle": SETTLE})
            with DaemonProcess(config) as daemon:
                daemon.wait_ready()
                for n in range(count):
                    creates = sum(1 for r in emulator.requests if r.path.endswith("/media/create"))
                    write_wav(root / "inbox" / f"take-{n:03d}.wav", 200 * 1024)
                    last_write = time.time()
                    record = wait_for(lambda: [r for r in emulator.requests if r.path.endswith("/media/create")][creates:],
                                      timeout=60, interval=0.01, what=f"the create for take {n}")[0]
                    delays.append(record.received_at - last_write)
    p50, p95 = percentile(delays, 0.5), percentile(delays, 0.95)
    log(f"latency over {count} files: p50 {p50:.2f}s, p95 {p95:.2f}s (settle {SETTLE:.0f}s)")
    return [Row("latency", f"last write → create request, settle {SETTLE:.0f} s ({count} files): p50", f"{p50:.2f} s"),
            Row("latency", f"last write → create request, settle {SETTLE:.0f} s ({count} files): p95", f"{p95:.2f} s")]
