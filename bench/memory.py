"""Figure 2: peak RSS of ``ingestd upload`` while it sends a large file in 200 MB parts.

The peak comes from ``wait4`` for the ingestd process alone (the kernel's ``ru_maxrss``),
so the emulator's memory and the page cache holding the file are not counted.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from . import MIB, EmulatorProcess, Row, Scale, cached_source, ingestd_command, log, mb_per_s, run_measured, write_config

PART = 200 * 1000 * 1000
TARGET = 100 * MIB


def run(scale: Scale) -> list[Row]:
    size = scale.pick(2048 * MIB, 512 * MIB)
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-") as scratch:
        root = Path(scratch)
        source = cached_source(root, size)
        with EmulatorProcess(root / "emulator") as emulator:
            config = write_config(root / "run", emulator.base_url, upload={"chunk_size": "200MB", "workers": 1})
            measured = run_measured(ingestd_command("upload", "--config", str(config), str(source)), log_path=root / "upload.log")
        if measured.returncode != 0:
            raise RuntimeError(f"ingestd upload failed:\n{(root / 'upload.log').read_text()[-2000:]}")
    log(f"memory: peak RSS {measured.peak_rss / MIB:.1f} MiB at {mb_per_s(size, measured.seconds):.0f} MB/s")
    return [Row("memory", f"peak RSS of `ingestd upload`, {size // MIB} MiB in 200 MB parts",
                f"{measured.peak_rss / MIB:.1f} MiB", f"≤ {TARGET // MIB} MiB", measured.peak_rss <= TARGET)]
