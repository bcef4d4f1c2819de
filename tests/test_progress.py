"""An upload's progress: live in memory for whoever shows it, written to the queue only per acknowledged part."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path

from ingestd import queue as q
from ingestd import service as service_module
from ingestd.config import load_config
from ingestd.service import Service

from .daemon import drop, make_config, wait_for

MIB = 1024 * 1024


def test_the_daemon_writes_the_queue_once_per_part_not_once_per_chunk_sent(tmp_path, emulator, monkeypatch):
    # The daemon reports bytes sent per 1 MiB chunk; a queue write (a disk sync) for each would cost the daemon a
    # third of its upload rate against `ingestd upload`. Only an acknowledged part is worth a write.
    timeline: list[tuple[str, threading.Thread]] = []
    real_update = service_module.LiveProgress.update

    def chunk_sent(self, job_id: str, sent: int, total: int) -> None:
        timeline.append(("chunk", threading.current_thread()))
        real_update(self, job_id, sent, total)

    monkeypatch.setattr(service_module.LiveProgress, "update", chunk_sent)
    config = load_config(make_config(tmp_path, emulator.base_url, upload={"workers": 1, "chunk_size": "5MiB"}))
    service = Service(config)
    real_transaction = service.queue.store.transaction

    @contextmanager
    def counted_transaction():
        with real_transaction() as db:
            yield db
        timeline.append(("write", threading.current_thread()))

    monkeypatch.setattr(service.queue.store, "transaction", counted_transaction)
    source = drop(tmp_path, "long-take.wav", size=12 * MIB)
    size = source.stat().st_size
    service.start()
    try:
        wait_for(lambda: service.queue.counts()[q.DONE] == 1, timeout=60, what="the upload to finish")
    finally:
        service.stop()

    chunks = [i for i, (what, _) in enumerate(timeline) if what == "chunk"]
    uploader = timeline[chunks[0]][1]
    during = [what for what, thread in timeline[chunks[0]:chunks[-1] + 1] if thread is uploader]
    parts = -(-size // (5 * MIB))
    assert during.count("chunk") >= size // MIB
    # Between the first chunk and the last: one write per part acknowledged before the last (the last one's
    # comes after its last chunk), nothing else.
    assert during.count("write") == parts - 1, during
    assert Path(service.queue.list(states=(q.DONE,))[0].final_path).exists()


def test_a_backlog_of_equal_sized_files_is_prepared_without_reading_every_other_job(tmp_path, emulator, monkeypatch):
    # The duplicate check used to load every live job of the same size for each file it prepared: a backlog of
    # takes of one length was quadratic in queue reads (and, for files without a content key yet, in file reads).
    config = load_config(make_config(tmp_path, emulator.base_url, upload={"workers": 1}))
    service = Service(config)
    reads = 0
    real_read = service.queue.store.read

    @contextmanager
    def counted_read():
        nonlocal reads
        reads += 1
        with real_read() as db:
            yield db

    monkeypatch.setattr(service.queue.store, "read", counted_read)
    takes = 40
    for n in range(takes):
        drop(tmp_path, f"take-{n:02d}.wav", seconds=0.2, freq=200.0 + n)  # one length, each its own sound
    service.start()
    try:
        wait_for(lambda: service.queue.counts()[q.DONE] == takes, timeout=120, what="every take to be uploaded")
    finally:
        service.stop()
    assert len(emulator.all_media()) == takes
    # A few dozen reads per job for its own steps; comparing with every other job would add ~takes²/2.
    assert reads < 40 * takes, reads


def test_off_a_terminal_the_upload_bar_is_not_redrawn_by_a_thread_of_its_own(tmp_path):
    # Into a file or a pipe the bar is written once, at its end; a refresh thread would still rebuild it ten times a
    # second for nobody, a quarter of a CPU second per GiB uploaded.
    import io

    from rich.console import Console

    from ingestd.progress import UploadProgress

    shown = io.StringIO()
    bar = UploadProgress("take.wav", Console(file=shown, force_terminal=False))
    before = set(threading.enumerate())
    bar.bytes("job", 0, 100)
    bar.bytes("job", 60, 100)
    assert set(threading.enumerate()) - before == set()
    bar.bytes("job", 100, 100)
    bar.close(finished=True)
    assert "take.wav" in shown.getvalue()
