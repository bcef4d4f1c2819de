"""An accelerated month of hostile conditions, with the daemon's resources sampled all along.

``python -m bench.soak [--minutes M] [--files N] [--reloads R] [--restarts S]``

Thousands of files (one in fifty of three parts, one in ten broken: not audio, a bad
sidecar, an oversized sidecar) arrive at a steady rate; the API emulator, in its own
process, answers some requests with 500 or 429, drops some answers after acting, is
slow now and then and fails some transcodes; SIGHUP reloads come every couple of
seconds and the status page, the metrics and the health check are read every second.
For the first 65 % of the run one daemon lives through all of it; the rest is SIGTERM
and restart cycles. Done and failed files are collected (and deleted) as they are filed,
as an operator's archiving would.

Every two seconds: the daemon's RSS, open descriptors and threads, and the size of the
queue file. Targets: after warm-up, RSS, descriptors and threads of the long-lived daemon
grow by at most 10 % from the first quarter to the last; every file is accounted for
(filed as done or failed, with its report); the queue file stays bounded (jobs finished
longer ago than ``state.keep_finished`` are pruned). The plot goes to ``docs/soak.png``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


from ingestd.folderlock import LOCK_NAME

from . import MIB, EmulatorProcess, Row, ingestd_command, log, markdown, queue_counts, wait_for, wav_header, write_config

REPO = Path(__file__).resolve().parent.parent
LONG_LIVED_SHARE = 0.65  # of the run, before the restart cycles
WARM_UP_SHARE = 0.15  # of the long-lived daemon's samples, left out of the growth figures
TARGET_GROWTH = 0.10
SAMPLE_EVERY = 2.0
FAULTS = ["--fail-rate", "0.02", "--throttle-rate", "0.01", "--drop-rate", "0.01", "--slow-rate", "0.003",
          "--transcode-fail-rate", "0.01", "--fault-seed", "12"]


@dataclass
class Sample:
    at: float  # seconds since the start
    pid: int
    rss_mib: float
    fds: int
    threads: int
    queue_kib: float
    wal_kib: float
    phase: str


@dataclass
class Tally:
    dropped: dict[str, str] = field(default_factory=dict)  # name → expected outcome (done / failed)
    kinds: dict[str, int] = field(default_factory=dict)  # kind of file → how many were dropped
    good_but_failed: dict[str, int] = field(default_factory=dict)  # the start of the reason → how many
    filed: dict[str, str] = field(default_factory=dict)  # name → where it was filed, with its report
    reloads: int = 0
    restarts: int = 0
    unclean_exits: list[int] = field(default_factory=list)
    polls: int = 0
    poll_failures: int = 0
    poll_seconds: list[float] = field(default_factory=list)


class Daemon:
    """``ingestd run``, restarted at will; ``READY=1`` read from a notify socket of our own."""

    def __init__(self, config: Path):
        self.config = config
        self.notify_path = config.parent / "notify.sock"
        self.log = open(config.parent / "daemon.log", "ab")
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(self.notify_path))
        self.proc: subprocess.Popen | None = None

    def drain(self) -> None:
        """Read what the daemon said (STATUS=, READY=1 after reloads), so its datagrams never back up."""
        self.notify.setblocking(False)
        try:
            while True:
                self.notify.recv(4096)
        except BlockingIOError:
            pass

    def start(self) -> None:
        self.drain()
        env = os.environ | {"NOTIFY_SOCKET": str(self.notify_path), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(ingestd_command("run", "--config", str(self.config)), stdout=self.log,
                                     stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            self.notify.settimeout(max(0.01, deadline - time.monotonic()))
            if "READY=1" in self.notify.recv(4096).decode(errors="replace").split("\n"):
                return
        raise TimeoutError("no READY=1 within 120 s")

    def stop(self) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(120)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.notify.close()
        self.log.close()


def _usage(pid: int) -> tuple[float, int, int]:
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    return int(status["VmRSS"].split()[0]) / 1024, len(os.listdir(f"/proc/{pid}/fd")), int(status["Threads"])


def _size_kib(path: Path) -> float:
    try:
        return path.stat().st_size / 1024
    except FileNotFoundError:
        return 0.0


def _noise_wav(path: Path, size: int, rng: random.Random) -> None:
    data_size = size - 44 - (size - 44) % 4
    path.write_bytes(wav_header(data_size) + rng.randbytes(data_size))


def drop_file(n: int, root: Path, rng: random.Random, tally: Tally) -> None:
    """One arrival, written aside and renamed in whole; most good, some multi-part, some broken."""
    staging, inbox = root / "staging", root / "inbox" / f"batch-{n // 500:03d}"
    inbox.mkdir(parents=True, exist_ok=True)
    name = f"take-{n:05d}"
    kind = rng.random()
    if kind < 0.05:
        (staging / f"{name}.mp3").write_bytes(b"meeting notes, not audio\n" * 40)
        audio, expected, what = f"{name}.mp3", "failed", "not audio"
    else:
        multi_part = kind > 0.98
        _noise_wav(staging / f"{name}.wav", 11 * MIB if multi_part else rng.randrange(8_000, 40_000), rng)
        audio, expected, what = f"{name}.wav", "done", "3 parts" if multi_part else "one part"
        if kind < 0.08:
            (inbox / f"{name}.yaml").write_text("titel: a typo in the key\n")
            expected, what = "failed", "misspelt sidecar"
        elif kind < 0.10:
            (inbox / f"{name}.json").write_text(json.dumps({"description": "x" * (2 * MIB)}))
            expected, what = "failed", "2 MiB sidecar"
    os.replace(staging / audio, inbox / audio)
    tally.dropped[audio] = expected
    tally.kinds[what] = tally.kinds.get(what, 0) + 1


def collect(root: Path, tally: Tally) -> None:
    """Count files once they are filed with their report, then delete them, as an archiving job would."""
    for outcome, report_suffix in (("done", ".ingestd.json"), ("failed", ".error.json")):
        for report in (root / outcome).rglob(f"*{report_suffix}"):
            audio = report.with_name(report.name.removesuffix(report_suffix))
            if audio.name in tally.dropped and audio.exists():
                tally.filed[audio.name] = outcome
                if outcome == "failed" and tally.dropped[audio.name] == "done":
                    reason = " ".join(str(json.loads(report.read_text()).get("reason", "?")).split()[:4])
                    tally.good_but_failed[reason] = tally.good_but_failed.get(reason, 0) + 1
                for path in (audio, report, *audio.parent.glob(audio.stem + ".*")):
                    path.unlink(missing_ok=True)


def poll_status(port: int, tally: Tally, i: int) -> None:
    path = ("/", "/metrics", "/healthz")[i % 3]
    started = time.perf_counter()
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", path)
        response = connection.getresponse()
        response.read()
        connection.close()
        ok = response.status == 200
    except OSError:
        ok = False
    tally.polls += 1
    tally.poll_failures += not ok
    tally.poll_seconds.append(time.perf_counter() - started)


def soak(root: Path, *, minutes: float, files: int, reloads: int, restarts: int) -> tuple[list[Sample], Tally, dict[str, Any]]:
    rng = random.Random(2026)
    (root / "staging").mkdir(parents=True)
    tally = Tally()
    samples: list[Sample] = []
    with EmulatorProcess(root / "emulator", min_part_size="5MiB", transcode_delay=0.5, extra=FAULTS) as emulator:
        port = _free_port()
        config = write_config(
            root, emulator.base_url,
            upload={"workers": 2, "chunk_size": "5MiB", "poll_interval": 0.2, "retry_delay": 0.5, "retry_delay_max": 5,
                    "outage_pause": 5, "max_attempts": 10},
            folder={"settle": 0.3},
            status={"listen": f"127.0.0.1:{port}"},
            state={"keep_finished": "60s"},
        )
        daemon = Daemon(config)
        try:
            daemon.start()
            duration = minutes * 60
            restart_from = duration * LONG_LIVED_SHARE
            started = time.monotonic()
            next_sample = next_poll = next_collect = 0.0
            dropped = done_reloads = done_restarts = polls = 0
            while True:
                now = time.monotonic() - started
                if now >= duration:
                    break
                phase = "long-lived" if now < restart_from else "restarts"
                if dropped < files and now >= dropped * duration * 0.9 / files:
                    drop_file(dropped, root, rng, tally)
                    dropped += 1
                if done_reloads < reloads and now >= done_reloads * duration / reloads:
                    daemon.proc.send_signal(signal.SIGHUP)
                    done_reloads += 1
                if phase == "restarts" and done_restarts < restarts and \
                        now >= restart_from + done_restarts * (duration - restart_from) / restarts:
                    code = daemon.stop()
                    if code != 0:
                        tally.unclean_exits.append(code)
                    daemon.start()
                    done_restarts += 1
                if now >= next_poll:
                    poll_status(port, tally, polls)
                    polls += 1
                    next_poll = now + 1.0
                if now >= next_collect:
                    collect(root, tally)
                    next_collect = now + 1.0
                if now >= next_sample:
                    rss, fds, threads = _usage(daemon.proc.pid)
                    samples.append(Sample(round(now, 1), daemon.proc.pid, rss, fds, threads,
                                          _size_kib(root / "state" / "queue.sqlite3"),
                                          _size_kib(root / "state" / "queue.sqlite3-wal"), phase))
                    next_sample = now + SAMPLE_EVERY
                daemon.drain()
                time.sleep(0.01)
            tally.reloads, tally.restarts = done_reloads, done_restarts
            log(f"soak: {dropped} files dropped, {done_reloads} reloads, {done_restarts} restarts; draining")

            def drained() -> bool:
                collect(root, tally)
                return len(tally.filed) >= len(tally.dropped)

            try:
                wait_for(drained, timeout=180, interval=0.5, what="every file filed")
            except TimeoutError as exc:
                log(str(exc))
            code = daemon.stop()
            if code != 0:
                tally.unclean_exits.append(code)
        finally:
            daemon.close()
        final = {"counts": queue_counts(root / "state"), "queue_kib": _size_kib(root / "state" / "queue.sqlite3"),
                 "left_in_inbox": sorted(p.name for p in (root / "inbox").rglob("*") if p.is_file() and p.name != LOCK_NAME),
                 "media_on_the_api": _media_count(emulator.base_url)}
    return samples, tally, final


def _media_count(base_url: str) -> int:
    from ingestd.client import StreamClient
    from ingestd.errors import TransientError

    with StreamClient(base_url, token="test-token") as client:
        for _ in range(50):  # the emulator's faults hit this listing too
            try:
                return sum(1 for media in client.iter_media() if media.status != "deleted")
            except TransientError:
                time.sleep(0.2)
    raise RuntimeError("could not list the media")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def growth(samples: list[Sample], key: str) -> tuple[float, float, float]:
    """Median of the first and of the last quarter of the samples after warm-up, and the growth between them."""
    values = [getattr(s, key) for s in samples]
    values = values[int(len(values) * WARM_UP_SHARE):]
    quarter = max(1, len(values) // 4)
    first, last = statistics.median(values[:quarter]), statistics.median(values[-quarter:])
    return first, last, last / first - 1


def figures(samples: list[Sample], tally: Tally, final: dict[str, Any], seconds: float) -> list[Row]:
    long_lived = [s for s in samples if s.phase == "long-lived"]
    rows = []
    for key, label, unit in (("rss_mib", "RSS", "MiB"), ("fds", "open descriptors", ""), ("threads", "threads", "")):
        first, last, grew = growth(long_lived, key)
        shown = f"{first:.1f} → {last:.1f} {unit}".strip() if unit else f"{first:.0f} → {last:.0f}"
        rows.append(Row("soak", f"{label}, long-lived daemon, first → last quarter after warm-up",
                        f"{shown} ({grew:+.1%})", f"≤ +{TARGET_GROWTH:.0%}", grew <= TARGET_GROWTH))
    restart_samples = [s for s in samples if s.phase == "restarts"]
    if restart_samples:
        rows.append(Row("soak", "RSS / descriptors / threads, highest during the restart cycles",
                        f"{max(s.rss_mib for s in restart_samples):.1f} MiB / {max(s.fds for s in restart_samples)}"
                        f" / {max(s.threads for s in restart_samples)}"))
    half = len(samples) // 2
    first_half = max(s.queue_kib for s in samples[int(len(samples) * WARM_UP_SHARE):half])
    second_half = max(s.queue_kib for s in samples[half:])
    rows.append(Row("soak", "queue file, largest in the 1st half (after warm-up) → 2nd half",
                    f"{first_half:.0f} → {second_half:.0f} KiB", "≤ +10 %", second_half <= first_half * (1 + TARGET_GROWTH)))
    rows.append(Row("soak", "queue WAL, largest", f"{max(s.wal_kib for s in samples):.0f} KiB"))
    expected_done = sum(1 for e in tally.dropped.values() if e == "done")
    done = sum(1 for o in tally.filed.values() if o == "done")
    failed = sum(1 for o in tally.filed.values() if o == "failed")
    wrong = sorted(n for n, o in tally.filed.items() if tally.dropped[n] == "failed" and o == "done")
    missing = len(tally.dropped) - len(tally.filed)
    rows += [
        Row("soak", "files dropped", f"{len(tally.dropped)} ({', '.join(f'{n} {k}' for k, n in sorted(tally.kinds.items()))})"),
        Row("soak", "filed done / failed (of which broken on purpose)",
            f"{done} / {failed} ({len(tally.dropped) - expected_done})"),
        Row("soak", "good files failed, by reason (API faults)",
            ", ".join(f"{n}× {reason}…" for reason, n in sorted(tally.good_but_failed.items(), key=lambda i: -i[1])) or "none"),
        Row("soak", "files not accounted for, left in the inbox", f"{missing}, {len(final['left_in_inbox'])}", "0, 0",
            missing == 0 and not final["left_in_inbox"]),
        Row("soak", "broken files filed as done", str(len(wrong)), "0", not wrong),
        Row("soak", "media on the API / files filed as done", f"{final['media_on_the_api']} / {done}", "equal",
            final["media_on_the_api"] == done),
        Row("soak", "reloads / SIGTERM-restart cycles / unclean exits",
            f"{tally.reloads} / {tally.restarts} / {len(tally.unclean_exits)}", "0 unclean", not tally.unclean_exits),
        Row("soak", "status requests: answered / failed, slowest",
            f"{tally.polls - tally.poll_failures} / {tally.poll_failures}, {max(tally.poll_seconds) * 1000:.0f} ms"),
        Row("soak", "run time (soak + drain)", f"{seconds / 60:.1f} min"),
    ]
    return rows


def plot(samples: list[Sample], tally: Tally, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s.at / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 8), sharex=True)
    restart_from = next((s.at / 60 for s in samples if s.phase == "restarts"), None)
    series = [
        (axes[0], [("RSS (MiB)", [s.rss_mib for s in samples])]),
        (axes[1], [("open descriptors", [s.fds for s in samples]), ("threads", [s.threads for s in samples])]),
        (axes[2], [("queue file (KiB)", [s.queue_kib for s in samples]), ("WAL (KiB)", [s.wal_kib for s in samples])]),
    ]
    for axis, lines in series:
        for label, values in lines:
            axis.plot(minutes, values, label=label, linewidth=1)
        if restart_from is not None:
            axis.axvspan(restart_from, minutes[-1], color="0.9", label="SIGTERM/restart cycles")
        axis.set_ylim(bottom=0)
        axis.legend(loc="lower right", fontsize=8)
        axis.grid(alpha=0.3)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(f"ingestd soak: {len(tally.dropped)} files, {tally.reloads} reloads, {tally.restarts} restarts, "
                 "API faults on, status polled every second", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=16.0, help="length of the soak before draining (default: 16)")
    parser.add_argument("--files", type=int, default=5000, help="files dropped over the run (default: 5000)")
    parser.add_argument("--reloads", type=int, default=500, help="SIGHUP reloads over the run (default: 500)")
    parser.add_argument("--restarts", type=int, default=50, help="SIGTERM/restart cycles in the last 35%% (default: 50)")
    parser.add_argument("--plot", type=Path, default=REPO / "docs" / "soak.png", help="where the PNG goes")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="ingestd-soak-") as scratch:
        samples, tally, final = soak(Path(scratch), minutes=args.minutes, files=args.files, reloads=args.reloads,
                                     restarts=args.restarts)
    seconds = time.perf_counter() - started
    rows = figures(samples, tally, final, seconds)
    print(markdown(rows))  # first: a quarter of an hour's figures outlive a plot that cannot be drawn
    try:
        plot(samples, tally, args.plot)
        log(f"plot written to {args.plot}")
    except ImportError as exc:
        log(f"no plot: {exc} (pip install 'ingestd[bench]')")
    return 0 if all(r.met is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
