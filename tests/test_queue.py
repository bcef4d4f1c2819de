"""The SQLite job queue: leases, attempts, holds and outcomes, on a real database file."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from ingestd import queue as q


@pytest.fixture
def queue(tmp_path):
    return q.JobQueue(tmp_path / "queue.sqlite3", lease_seconds=30)


def _enqueue(queue, path="/in/a.mp3"):
    return queue.enqueue(path=path, root="/in", relpath=path.removeprefix("/in/"), size=10, mtime_ns=1, inode=2)


def test_database_is_wal_with_full_sync(queue):
    db = queue._db()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_one_live_job_per_path(queue):
    first = _enqueue(queue)
    assert first is not None and first.state == q.QUEUED and first.stage == q.PREPARE
    assert _enqueue(queue) is None
    queue.finish(first.id, q.DONE)
    assert _enqueue(queue) is not None  # the same name dropped again later is a new job


def test_claim_counts_the_attempt_and_leases(queue):
    job = _enqueue(queue)
    claimed = queue.claim("w1")
    assert claimed.id == job.id and claimed.state == q.RUNNING and claimed.attempts == 1
    assert claimed.lease_owner == "w1" and claimed.lease_expires > time.time()
    assert queue.claim("w2") is None  # leased: never run twice at once


def test_expired_lease_is_taken_back(queue):
    job = _enqueue(queue)
    queue.claim("dead-worker")
    assert queue.claim("w2", now=time.time() + 31).id == job.id
    assert queue.get(job.id).attempts == 2
    assert not queue.renew(job.id, "dead-worker")


def test_release_delays_and_can_refund(queue):
    job = _enqueue(queue)
    queue.claim("w")
    queue.release(job.id, delay=60, error="503 from server")
    again = queue.get(job.id)
    assert again.state == q.QUEUED and again.attempts == 1 and again.error == "503 from server"
    assert queue.claim("w") is None
    assert queue.claim("w", now=time.time() + 61).id == job.id
    queue.release(job.id, delay=0, refund_attempt=True)
    assert queue.get(job.id).attempts == 1


def test_hold_and_unhold(queue):
    auth = _enqueue(queue, "/in/a.mp3")
    budget = _enqueue(queue, "/in/b.mp3")
    queue.claim("w")
    queue.claim("w")
    queue.hold(auth.id, "auth: 401")
    queue.hold(budget.id, "budget: too expensive", recheck_after=600)
    assert queue.counts()[q.HELD] == 2
    assert queue.get(auth.id).attempts == 0  # holding burns no attempt
    assert queue.claim("w") is None
    assert queue.unhold(due_only=True) == 0
    assert queue.unhold(due_only=True, now=time.time() + 601) == 1
    assert queue.get(budget.id).state == q.QUEUED
    assert queue.unhold(reason_prefix="auth") == 1


def test_parts_and_progress(queue):
    job = _enqueue(queue)
    queue.ack_part(job.id, 0, 0, 5, "a" * 32)
    queue.ack_part(job.id, 1, 5, 5, "b" * 32)
    again = queue.get(job.id)
    assert again.acked_parts == {0: "a" * 32, 1: "b" * 32} and again.bytes_sent == 10
    queue.forget_parts(job.id)
    assert queue.get(job.id).acked_parts == {}


def test_finish_requeue_and_history(queue):
    job = _enqueue(queue)
    queue.claim("w")
    queue.update(job.id, media_id="m1", stage=q.UPLOAD, event="media_created", detail={"media_id": "m1"})
    queue.finish(job.id, q.FAILED, error="not audio")
    assert queue.get(job.id).state == q.FAILED
    queue.requeue(job.id, path=job.path)
    again = queue.get(job.id)
    assert (again.state, again.stage, again.media_id, again.attempts, again.error) == (q.QUEUED, q.PREPARE, None, 0, None)
    assert [e["event"] for e in queue.events(job.id)] == ["enqueued", "claimed", "media_created", "failed", "requeued"]
    with pytest.raises(ValueError):
        queue.update(job.id, no_such_column=1)


def test_threads_claim_each_job_once(tmp_path):
    queue = q.JobQueue(tmp_path / "queue.sqlite3")
    for n in range(200):
        _enqueue(queue, f"/in/{n}.mp3")
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name):
        while (job := queue.claim(name)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 200 == len(set(claimed))


def test_a_second_process_sees_committed_state(tmp_path):
    queue = q.JobQueue(tmp_path / "queue.sqlite3")
    job = _enqueue(queue)
    other = sqlite3.connect(tmp_path / "queue.sqlite3")
    assert other.execute("SELECT state FROM jobs WHERE id = ?", (job.id,)).fetchone()[0] == q.QUEUED


def test_activity_tells_transcoding_apart_from_queued(queue):
    uploading, polling, waiting = (_enqueue(queue, f"/in/{n}.mp3") for n in range(3))
    queue.claim("w")
    queue.update(uploading.id, stage=q.UPLOAD)
    queue.claim("w")
    queue.update(polling.id, stage=q.TRANSCODE)
    queue.release(polling.id, delay=5)  # between two status polls
    done = _enqueue(queue, "/in/done.mp3")
    queue.finish(done.id, q.DONE)
    assert queue.activity() == {"uploading": 1, "queued": 1, "transcoding": 1, "held": 0, "done": 1, "failed": 0}
    assert queue.get(waiting.id).state == q.QUEUED
