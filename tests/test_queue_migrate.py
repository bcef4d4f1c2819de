"""`ingestd queue migrate`: the schema brought up to date, and a single host's SQLite queue moved into PostgreSQL."""

from __future__ import annotations

import pytest

from ingestd import queue as q
from ingestd.cli import main
from ingestd.service import StateLock


@pytest.fixture(autouse=True)
def _no_config_from_the_environment(monkeypatch):
    monkeypatch.delenv("INGESTD_CONFIG", raising=False)


def _sqlite_queue_with_history(state_dir):
    """Jobs in every situation a stopped daemon leaves: queued, mid-upload with acknowledged parts, done, held."""
    queue = q.JobQueue(q.queue_path(state_dir))
    jobs = {name: queue.enqueue(path=f"/in/{name}.mp3", root="/in", relpath=f"{name}.mp3", size=10, mtime_ns=1, inode=2)
            for name in ("queued", "uploading", "done", "held")}
    for name in ("uploading", "done", "held"):
        queue.claim_job(jobs[name].id, q.worker_id("worker-0", "old-host"))
    queue.update(jobs["uploading"].id, stage=q.UPLOAD, media_id="m-up", event="media_created")
    queue.ack_part(jobs["uploading"].id, 1, 0, 5, "a" * 32)
    queue.update(jobs["done"].id, media_id="m-done", content_key="k-done")
    queue.claim_content(jobs["done"].id, "k-done")
    queue.finish(jobs["done"].id, q.DONE, final_path="/done/done.mp3")
    queue.hold(jobs["held"].id, "auth: 401")
    queue.close()
    return jobs


def test_migrate_reports_the_schema_of_a_fresh_and_a_current_queue(postgres_url, capsys):
    assert main(["queue", "migrate", "--from-sqlite", "/nonexistent", "--to", "mysql://x"]) == 1
    assert "postgresql:// URL" in capsys.readouterr().err
    found, applied = q.migrate(postgres_url)
    assert (found, applied) == (0, list(range(1, q.SCHEMA_VERSION + 1)))
    assert q.migrate(postgres_url) == (q.SCHEMA_VERSION, [])


def test_a_sqlite_queue_moves_to_postgresql_without_losing_a_job(tmp_path, postgres_url, capsys):
    state = tmp_path / "state"
    jobs = _sqlite_queue_with_history(state)
    assert main(["queue", "migrate", "--from-sqlite", str(state), "--to", postgres_url]) == 0
    out = capsys.readouterr().out
    assert "4 jobs" in out and "1 job(s) left running were queued again" in out

    moved = q.JobQueue(postgres_url)
    assert {j.id for j in moved.list(limit=100)} == {j.id for j in jobs.values()}
    uploading = moved.get(jobs["uploading"].id)
    # Resumable where it stopped: same media, its acknowledged part, and claimable now by any daemon.
    assert (uploading.state, uploading.stage, uploading.media_id, uploading.acked_parts) == (
        q.QUEUED, q.UPLOAD, "m-up", {1: "a" * 32})
    assert moved.claim(q.worker_id("worker-0", "new-host")).id in {jobs["queued"].id, jobs["uploading"].id}
    assert moved.get(jobs["done"].id).final_path == "/done/done.mp3"
    assert moved.get(jobs["held"].id).held_reason == "auth: 401"
    assert [e["event"] for e in moved.events(jobs["uploading"].id)][:3] == ["enqueued", "claimed", "media_created"]
    other = moved.enqueue(path="/in/copy.mp3", root="/in", relpath="copy.mp3", size=10, mtime_ns=1, inode=3)
    assert moved.claim_content(other.id, "k-done").id == jobs["done"].id  # duplicates still found after the move

    # The SQLite file is set aside, so a daemon still on the old config cannot upload the same files again.
    assert not q.queue_path(state).exists()
    assert (state / "queue.sqlite3.moved-to-postgresql").exists()
    assert main(["queue", "migrate", "--from-sqlite", str(state), "--to", postgres_url]) == 1
    assert "no SQLite queue" in capsys.readouterr().err


def test_moving_refuses_while_a_daemon_uses_the_state_folder(tmp_path, postgres_url, capsys):
    state = tmp_path / "state"
    _sqlite_queue_with_history(state)
    lock = StateLock(state)
    lock.acquire()
    try:
        assert main(["queue", "migrate", "--from-sqlite", str(state), "--to", postgres_url]) == 1
    finally:
        lock.release()
    assert "stop it first" in capsys.readouterr().err
    assert q.queue_path(state).exists() and q.JobQueue(postgres_url).counts()[q.QUEUED] == 0


def test_moving_twice_into_one_database_copies_nothing_the_second_time(tmp_path, postgres_url, capsys):
    state = tmp_path / "state"
    _sqlite_queue_with_history(state)
    assert main(["queue", "migrate", "--from-sqlite", str(state), "--to", postgres_url]) == 0
    (state / "queue.sqlite3.moved-to-postgresql").rename(q.queue_path(state))  # an operator puts the file back
    assert main(["queue", "migrate", "--from-sqlite", str(state), "--to", postgres_url]) == 1
    assert "in the target queue already" in capsys.readouterr().err
    assert sum(q.JobQueue(postgres_url).counts().values()) == 4
