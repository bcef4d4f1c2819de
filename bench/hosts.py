"""Figure: several hosts on one PostgreSQL queue — claims per second, and files and MB per second for 1–3 daemons.

Runs a PostgreSQL server of its own (initdb/pg_ctl in a temp folder, fsync on, as in production) and the emulator
in its own process. ``claims``: worker threads claim and finish jobs as fast as they can, on PostgreSQL and, for
comparison, on the SQLite queue. ``daemons``: 1, 2 and 3 ``ingestd run`` processes, each with its own node_name and
state folder, share the queue and one watched folder; a batch of files is dropped at once and timed until every
job is done. All of it on this one machine, so the daemons, the emulator and the database share its cores: the
figures bound what one host does; docs/scaling.md extrapolates to several.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
import threading
import time
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event
from pathlib import Path

from ingestd import queue as q
from ingestd.service import ENQUEUE_BATCH
from tests.postgres import PostgresServer, server_binaries

from . import MIB, DaemonProcess, EmulatorProcess, Row, Scale, log, mb_per_s, wait_for, write_config, write_wav

__all__ = ["run"]


def _claimer(where: str | Path, node: str, threads: int, go: Event, results: Queue) -> None:
    """One "host": ``threads`` workers claiming and finishing jobs (two transactions each) until none is left."""
    queue = q.JobQueue(where, max_connections=threads + 2)
    done = [0] * threads

    def work(n: int) -> None:
        owner = q.worker_id(f"worker-{n}", node)
        while (job := queue.claim(owner)) is not None:
            queue.finish(job.id, q.DONE)
            done[n] += 1

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    go.wait()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    queue.close()
    results.put(sum(done))


def claims_per_second(where: str | Path, jobs: int, processes: int, threads: int) -> float:
    """Jobs claimed and finished per second by ``processes`` × ``threads`` workers on one queue."""
    queue = q.JobQueue(where)
    queue.enqueue_many([q.NewFile(f"/in/{n}.wav", "/in", f"{n}.wav", 1, 1, n) for n in range(jobs)])
    queue.close()
    context = multiprocessing.get_context("spawn")
    go, results = context.Event(), context.Queue()
    claimers = [context.Process(target=_claimer, args=(where, f"host{n}", threads, go, results))
                for n in range(processes)]
    for claimer in claimers:
        claimer.start()
    time.sleep(3.0)  # let every process import and connect before the clock starts
    started = time.perf_counter()
    go.set()
    claimed = sum(results.get(timeout=600) for _ in claimers)
    seconds = time.perf_counter() - started
    for claimer in claimers:
        claimer.join()
    assert claimed == jobs, f"{claimed} of {jobs} jobs claimed"
    return jobs / seconds


def backlog(where: str | Path, jobs: int, claims: int = 200) -> tuple[float, float]:
    """Files enqueued per second (in the batches the daemon's enqueuer writes), and milliseconds per claim
    (with finish) while ``jobs`` wait in the queue."""
    queue = q.JobQueue(where)
    started = time.perf_counter()
    for first in range(0, jobs, ENQUEUE_BATCH):
        queue.enqueue_many([q.NewFile(f"/in/{n}.wav", "/in", f"{n}.wav", 1, 1, n)
                            for n in range(first, min(first + ENQUEUE_BATCH, jobs))])
    enqueued = jobs / (time.perf_counter() - started)
    started = time.perf_counter()
    for _ in range(claims):
        queue.finish(queue.claim(q.worker_id("worker-0", "bench")).id, q.DONE)
    per_claim = (time.perf_counter() - started) / claims * 1000
    queue.close()
    return enqueued, per_claim


def done_count(where: str | Path) -> int:
    queue = q.JobQueue(where, max_connections=1)
    try:
        return queue.counts()[q.DONE]
    finally:
        queue.close()


def daemons_run(url: str | None, work: Path, hosts: int, files: int, size: int) -> tuple[float, float]:
    """Seconds from the drop to the last job done, and seconds to READY, for ``hosts`` daemons on one folder.

    ``url`` None: one daemon on its SQLite queue, for comparison.
    """
    share = work / f"share-{hosts}-{'pg' if url else 'sqlite'}"
    for name in ("inbox", "done", "failed", "staging"):
        (share / name).mkdir(parents=True)
    for n in range(files):
        write_wav(share / "staging" / f"take{n:03}.wav", size + n)  # sizes differ: no duplicate check reads
    with EmulatorProcess(work / f"emulator-{hosts}") as emulator:
        folder = {"path": str(share / "inbox"), "done_dir": str(share / "done"), "failed_dir": str(share / "failed")}
        daemons = [DaemonProcess(write_config(share / f"host{n}", emulator.base_url, folder=folder,
                                              node_name=f"host{n}", **({"queue_url": url} if url else {})))
                   for n in range(hosts)]
        where = url or q.queue_path(share / "host0" / "state")
        try:
            ready = max(d.start().wait_ready() for d in daemons)
            started = time.perf_counter()
            for path in sorted((share / "staging").iterdir()):
                os.replace(path, share / "inbox" / path.name)
            wait_for(lambda: done_count(where) == files, timeout=600, interval=0.1, what=f"{files} files done")
            return time.perf_counter() - started, ready
        finally:
            for daemon in daemons:
                daemon.stop()


def run(scale: Scale) -> list[Row]:
    bin_dir = server_binaries()
    if bin_dir is None:
        log("hosts: PostgreSQL server binaries not installed (Debian package postgresql); skipped")
        return []
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ingestd-bench-hosts-") as tmp:
        work = Path(tmp)
        server = PostgresServer(bin_dir, durable=True).start()
        try:
            jobs = scale.pick(4000, 1000)
            for store, processes, threads in (("PostgreSQL", 1, 1), ("PostgreSQL", 1, 8), ("PostgreSQL", 3, 8),
                                              ("SQLite", 1, 1), ("SQLite", 1, 8)):
                where = server.url() if store == "PostgreSQL" else work / f"claims-{processes}-{threads}.sqlite3"
                rate = claims_per_second(where, jobs, processes, threads)
                log(f"{store}, {processes} process(es) × {threads} thread(s): {rate:.0f} claims/s")
                rows.append(Row("hosts", f"claims/s, {store}, {processes} process(es) × {threads} thread(s)",
                                f"{rate:.0f}"))
            waiting = scale.pick(50_000, 10_000)
            for store in ("PostgreSQL", "SQLite"):
                where = server.url() if store == "PostgreSQL" else work / "backlog.sqlite3"
                enqueued, per_claim = backlog(where, waiting)
                log(f"{store}: {enqueued:.0f} files/s enqueued, {per_claim:.1f} ms per claim with {waiting} waiting")
                rows.append(Row("hosts", f"{store}: enqueue {waiting:,} files (batches of {ENQUEUE_BATCH:,})",
                                f"{enqueued:,.0f} files/s"))
                rows.append(Row("hosts", f"{store}: claim + finish with {waiting:,} queued", f"{per_claim:.1f} ms"))
            files, size = scale.pick(48, 24), 4 * MIB
            total = sum(size + n for n in range(files))
            for url, hosts in ((None, 1), (server.url(), 1), (server.url(), 2), (server.url(), 3)):
                seconds, ready = daemons_run(url, work, hosts, files, size)
                store = "PostgreSQL" if url else "SQLite"
                log(f"{store}, {hosts} daemon(s): {files} files in {seconds:.1f}s")
                rows.append(Row("hosts", f"{store}, {hosts} daemon(s) × 2 workers: {files} files of 4 MiB",
                                f"{files / seconds:.1f} files/s, {mb_per_s(total, seconds):.0f} MB/s (ready in {ready:.1f}s)"))
        finally:
            server.stop()
    return rows
