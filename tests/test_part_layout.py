"""A job's part layout (chunk size and index base) is fixed when its upload is planned."""

from __future__ import annotations

import hashlib
import signal
import sqlite3

import pytest
import yaml

from ingestd import queue as q

from .conftest import fast_settings
from .daemon import Daemon, drop, jobs_in, make_config, queue_of, wait_for

MIB = 1024 * 1024
FAST_RETRIES = {"retry_delay": 0.1, "retry_delay_max": 0.5, "outage_pause": 0.5}


def _edit(config_path, change) -> None:
    data = yaml.safe_load(config_path.read_text())
    change(data)
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))


def _acked(tmp_path) -> int:
    running = jobs_in(tmp_path, q.RUNNING) + jobs_in(tmp_path, q.QUEUED)
    return max((len(job.acked_parts) for job in running), default=0)


@pytest.mark.parametrize("key, value", [("chunk_size", "8MiB"), ("part_index_base", 0)])
def test_changing_chunk_size_mid_upload_neither_fails_the_job_nor_resends_parts(tmp_path, emulator_factory, key, value):
    settings = fast_settings()
    # Slow part answers keep the upload in progress while the test changes the config under it.
    settings.faults.slow, settings.faults.slow_seconds, settings.faults.endpoints = 1.0, 0.4, frozenset({"part"})
    emulator = emulator_factory(settings)
    config = make_config(tmp_path, emulator.base_url,
                         upload={"workers": 1, "chunk_size": "5MiB", "part_index_base": 1} | FAST_RETRIES)
    with Daemon(config) as daemon:
        source = drop(tmp_path, "long.wav", size=18 * MIB)  # four parts of 5 MiB
        wait_for(lambda: _acked(tmp_path) >= 1, what="the first part acknowledged")
        # Every further part now fails, so the job goes back to the queue and is planned again after the reload.
        settings.faults.server_error = 1.0
        wait_for(lambda: any(r.status == 500 for r in emulator.requests), what="a part refused with 500")
        _edit(config, lambda data: data["upload"].update({key: value}))
        seen = daemon.log().count('"config_reloaded"')
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: daemon.log().count('"config_reloaded"') > seen, what="the reload")
        settings.faults.server_error = 0.0
        wait_for(lambda: jobs_in(tmp_path, q.DONE) or jobs_in(tmp_path, q.FAILED), timeout=60, what="the job to end")
        assert daemon.stop() == 0
    [job] = queue_of(tmp_path).list()
    assert job.state == q.DONE, job.error
    accepted = [r for r in emulator.requests if r.path.endswith("/part") and r.status == 200]
    assert len(accepted) == 4, f"{len(accepted)} parts accepted for a file of four parts"
    digest = hashlib.md5((tmp_path / "done" / "long.wav").read_bytes()).hexdigest()
    assert digest == hashlib.md5(emulator.media_file(job.media_id).read_bytes()).hexdigest()
    assert not source.exists()


def test_a_queue_from_before_the_layout_was_recorded_gains_its_columns(tmp_path):
    path = q.queue_path(tmp_path)
    layout = q.MIGRATIONS.index(next(m for m in q.MIGRATIONS if "chunk_size" in m))
    with sqlite3.connect(path) as db:
        for migration in q.MIGRATIONS[:layout]:
            db.executescript(migration.replace("{event_id}", "INTEGER PRIMARY KEY AUTOINCREMENT"))
        db.execute(f"PRAGMA user_version = {layout}")
        db.execute("INSERT INTO jobs (id, path, root, relpath, size, mtime_ns, inode, state, stage, created_at, updated_at)"
                   " VALUES ('old', '/in/a.wav', '/in', 'a.wav', 10, 1, 1, 'queued', 'upload', 0, 0)")
    db.close()
    queue = q.JobQueue(path)
    job = queue.get("old")
    assert (job.chunk_size, job.part_index_base) == (None, None)
    queue.update("old", chunk_size=5 * MIB, part_index_base=0)
    assert queue.get("old").chunk_size == 5 * MIB


def test_an_upload_begun_before_the_layout_was_recorded_keeps_its_numbering(tmp_path, emulator_factory):
    settings = fast_settings(strict_official=False)  # the old default numbering, from 0
    settings.faults.slow, settings.faults.slow_seconds, settings.faults.endpoints = 1.0, 0.4, frozenset({"part"})
    emulator = emulator_factory(settings)
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1, "part_index_base": 0} | FAST_RETRIES)
    with Daemon(config) as daemon:
        drop(tmp_path, "long.wav", size=18 * MIB)
        wait_for(lambda: _acked(tmp_path) >= 1, what="the first part acknowledged")
        assert daemon.stop() == 0
    assert queue_of(tmp_path).list()[0].stage == q.UPLOAD
    # As an older ingestd left it: parts acknowledged, no layout recorded; the config now takes the default numbering.
    with sqlite3.connect(q.queue_path(tmp_path / "state")) as db:
        db.execute("UPDATE jobs SET chunk_size = NULL, part_index_base = NULL")
    db.close()
    _edit(config, lambda data: data["upload"].pop("part_index_base"))
    settings.faults.slow = 0.0
    with Daemon(config) as daemon:
        wait_for(lambda: jobs_in(tmp_path, q.DONE) or jobs_in(tmp_path, q.FAILED), timeout=60, what="the job to end")
        assert daemon.stop() == 0
    [job] = queue_of(tmp_path).list()
    assert job.state == q.DONE, job.error
    assert (job.chunk_size, job.part_index_base) == (5 * MIB, 0)
    accepted = [r for r in emulator.requests if r.path.endswith("/part") and r.status == 200]
    assert len(accepted) == 4
