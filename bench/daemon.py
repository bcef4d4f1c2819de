"""Figure: the same file through ``ingestd run`` (dropped into its inbox) and ``ingestd upload``, in one run.

Both paths record the same two events in their queue: ``media_created`` just before the
first part is sent and ``upload_finished`` once the last part is acknowledged. The span
between them is the *parts window*, timed on one clock by the same code for both; the curl
recipe's window is timed around its part loop (after its create, before its complete). The
daemon's rate is given as a ratio of the one-shot's and of the curl recipe's in the same
round. Contenders alternate, each against a fresh emulator, and read the source from the
page cache. The daemon's source is renamed into the inbox after ``READY=1``, as a finished
copy appears, and renamed back out of the done folder afterwards.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
from pathlib import Path

from . import (MIB, Contest, DaemonProcess, EmulatorProcess, Row, Scale, cached_source, children_cpu, ingestd_command,
               median, queue_counts, ratio_rows, rotated, run_measured, thread_cpu, wait_for, write_config)
from .profile import Sampler, describe, py_spy
from .throughput import CHUNK, curl_recipe

TARGET_VS_ONESHOT = 0.9
TARGET_VS_CURL = 1.5
CONTENDERS = ("curl recipe", "ingestd upload", "ingestd run")
UPLOAD = {"chunk_size": CHUNK, "parallel_parts": 1, "workers": 1}


def parts_window(state_dir: Path) -> float:
    """Seconds from ``media_created`` to ``upload_finished`` of the one job in this queue."""
    with sqlite3.connect(f"file:{state_dir / 'queue.sqlite3'}?mode=ro", uri=True, timeout=5) as db:
        at = dict(db.execute("SELECT event, at FROM events WHERE event IN ('media_created', 'upload_finished')").fetchall())
    return at["upload_finished"] - at["media_created"]


def _curl(run_dir: Path, base_url: str, source: Path) -> tuple[float, float]:
    (run_dir / "parts").mkdir()
    before = children_cpu()  # dd, md5sum and curl are reaped as they end; the emulator only after this
    window = curl_recipe(base_url, source, run_dir / "parts")
    return window, children_cpu() - before


def _oneshot(run_dir: Path, base_url: str, source: Path) -> tuple[float, float]:
    config = write_config(run_dir, base_url, upload=UPLOAD)
    measured = run_measured(ingestd_command("upload", "--config", str(config), str(source)), log_path=run_dir / "upload.log")
    if measured.returncode != 0:
        raise RuntimeError(f"ingestd upload failed; see {run_dir / 'upload.log'}")
    return parts_window(run_dir / "state"), measured.cpu


def _daemon(run_dir: Path, base_url: str, source: Path, *,
            profile: Path | None = None) -> tuple[float, float, float, dict[str, float]]:
    """Parts window, CPU seconds of the whole daemon and of its threads but the uploading one, busy areas."""
    config = write_config(run_dir, base_url, upload=UPLOAD)
    with DaemonProcess(config) as daemon:
        daemon.wait_ready()
        sampler = Sampler(daemon.proc.pid, profile) if profile else None
        before = thread_cpu(daemon.proc.pid)
        os.rename(source, run_dir / "inbox" / source.name)
        try:
            # Looked at twice a second: the window is read from the queue afterwards, and a tighter poll would take
            # CPU from the daemon and the emulator while they work.
            wait_for(lambda: queue_counts(run_dir / "state").get("done"), timeout=600, interval=0.5, what="the daemon's job")
        finally:
            after = thread_cpu(daemon.proc.pid)
            areas = sampler.stop() if sampler else {}
            filed = next((run_dir / "done").rglob(source.name), None) or run_dir / "inbox" / source.name
            os.rename(filed, source)
    used = sorted((seconds - before.get(tid, 0.0) for tid, seconds in after.items()), reverse=True)
    # The uploading worker is the busiest thread by far; the rest is what the daemon costs beside the upload.
    return parts_window(run_dir / "state"), sum(used), sum(used[1:]), areas


def run(scale: Scale) -> list[Row]:
    # BENCH_PROFILE=1: py-spy on the daemon during its first round (it costs the daemon some speed).
    profile = os.environ.get("BENCH_PROFILE") == "1"
    rows: list[Row] = []
    for size in scale.pick((512 * MIB, 1024 * MIB), (256 * MIB,)):
        rows += _one_size(size, scale.rounds(3, 2), profile=profile and py_spy() is not None)
    return rows


def _one_size(size: int, rounds: int, *, profile: bool) -> list[Row]:
    contest = Contest("daemon figure", size, CONTENDERS)
    beside: list[float] = []  # CPU seconds per GiB of the daemon's other threads during its upload
    areas: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-") as scratch:
        root = Path(scratch)
        source = cached_source(root, size)
        for round_no in range(rounds):
            for name in rotated(CONTENDERS, round_no):
                run_dir = root / f"run-{round_no}-{CONTENDERS.index(name)}"
                with EmulatorProcess(run_dir / "emulator") as emulator:
                    if name == "curl recipe":
                        window, used = _curl(run_dir, emulator.base_url, source)
                    elif name == "ingestd upload":
                        window, used = _oneshot(run_dir, emulator.base_url, source)
                    else:
                        window, used, others, areas = _daemon(
                            run_dir, emulator.base_url, source,
                            profile=run_dir / "profile.txt" if profile and round_no == 0 else None)
                        beside.append(others / (size / 1024 ** 3))
                contest.record(name, round_no, rounds, window, used)
                shutil.rmtree(run_dir)
    label = f"{size // MIB} MiB"
    rows = contest.rate_rows("daemon vs one-shot", "parts window")
    rows.append(Row("daemon vs one-shot", f"{label}: CPU of the daemon's other threads while it uploads",
                    f"{median(beside) * 1000:.0f} ms/GiB ({', '.join(f'{b * 1000:.0f}' for b in beside)})"))
    for peer, target in (("ingestd upload", TARGET_VS_ONESHOT), ("curl recipe", TARGET_VS_CURL)):
        rows += ratio_rows("daemon vs one-shot", f"{label}: ingestd run / {peer}", contest.rates["ingestd run"],
                           contest.rates[peer], target)
    if areas:
        rows.append(Row("daemon vs one-shot", f"{label}: daemon busy samples by area, py-spy", describe(areas)))
    return rows
