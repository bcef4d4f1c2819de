"""The job queue: leases, attempts, holds and outcomes, on both stores (a real SQLite file, a real PostgreSQL)."""

from __future__ import annotations

import dataclasses
import os
import sqlite3
import subprocess
import threading
import time

import pytest

from ingestd import nodes
from ingestd import queue as q
from ingestd.storage import StoreError


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request, tmp_path):
    """Where a queue lives: every test here runs on both stores."""
    if request.param == "sqlite":
        return tmp_path / "queue.sqlite3"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def queue(where):
    queue = q.JobQueue(where, lease_seconds=30)
    yield queue
    queue.close()


def _enqueue(queue, path="/in/a.mp3"):
    return queue.enqueue(path=path, root="/in", relpath=path.removeprefix("/in/"), size=10, mtime_ns=1, inode=2)


def test_database_is_wal_with_full_sync(tmp_path):
    db = q.JobQueue(tmp_path / "queue.sqlite3").store._db()
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_one_live_job_per_path(queue):
    first = _enqueue(queue)
    assert first is not None and first.state == q.QUEUED and first.stage == q.PREPARE
    assert _enqueue(queue) is None
    queue.finish(first.id, q.DONE)
    again = queue.enqueue(path="/in/a.mp3", root="/in", relpath="a.mp3", size=10, mtime_ns=7, inode=3)
    assert again is not None  # a file dropped again under the same name later is a new job


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


def test_threads_claim_each_job_once(queue):
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


# -- the notification outbox -------------------------------------------------------------------

HOOK = q.OutboxTarget("webhook:1", "webhook https://cms.example/hook", frozenset({"done", "failed", "held"}))
CHAT = q.OutboxTarget("apprise:2", "apprise slack://", frozenset({"failed"}))


def test_a_job_that_ends_puts_its_notification_in_the_outbox_in_the_same_transaction(queue):
    queue.outbox_targets = (HOOK, CHAT)
    done, failed = _enqueue(queue, "/in/a.mp3"), _enqueue(queue, "/in/b.mp3")
    queue.finish(done.id, q.DONE, report={"job_id": done.id, "media_id": "m1", "status": "done"})
    seen = queue.wait_for_outbox(-1, 0)
    queue.finish(failed.id, q.FAILED, error="not audio")
    assert queue.wait_for_outbox(seen, 0) != seen  # the senders are woken
    [to_hook] = queue.notifications(job_id=done.id)
    assert (to_hook.target, to_hook.event, to_hook.event_id) == ("webhook:1", "done", f"{done.id}:done")
    assert to_hook.body == {"job_id": done.id, "media_id": "m1", "status": "done", "event": "done"}
    # Without a report (nothing was filed) the notification still says what happened.
    assert {n.target for n in queue.notifications(job_id=failed.id)} == {"webhook:1", "apprise:2"}
    assert queue.notifications(job_id=failed.id)[0].body["reason"] == "not audio"


def test_a_cancelled_or_skipped_job_and_a_target_without_the_event_raise_nothing(queue):
    queue.outbox_targets = (CHAT,)
    for state in (q.DONE, q.CANCELLED, q.SKIPPED):
        queue.finish(_enqueue(queue, f"/in/{state}.mp3").id, state)
    assert queue.notifications() == []


def test_a_job_held_again_at_each_recheck_notifies_once(queue):
    queue.outbox_targets = (HOOK,)
    job = _enqueue(queue)
    for _ in range(3):
        queue.claim_job(job.id, "w1")
        queue.hold(job.id, "budget: too expensive", recheck_after=600)
    [held] = queue.notifications()
    assert held.body["status"] == "held" and held.body["reason"] == "budget: too expensive"


def test_notifications_of_one_job_go_out_in_order(queue):
    queue.outbox_targets = (HOOK,)
    job = _enqueue(queue)
    queue.hold(job.id, "auth: 401")
    queue.finish(job.id, q.DONE)
    due = queue.due_notifications(HOOK.key)
    assert [n.event for n in due] == ["held"]  # done waits until held is out
    assert queue.claim_notification(due[0], lease=60)
    assert not queue.claim_notification(due[0], lease=60)  # leased: nobody else sends it meanwhile
    assert queue.due_notifications(HOOK.key) == []
    queue.notification_sent(due[0])
    assert [n.event for n in queue.due_notifications(HOOK.key)] == ["done"]


def test_a_failed_send_waits_and_a_given_up_one_is_undeliverable_until_retried(queue):
    queue.outbox_targets = (HOOK,)
    job = _enqueue(queue)
    queue.finish(job.id, q.DONE)
    [n] = queue.due_notifications(HOOK.key)
    queue.claim_notification(n, lease=60)
    queue.notification_failed(n, "HTTP 500", retry_at=time.time() + 100)
    assert queue.due_notifications(HOOK.key) == []
    [later] = queue.due_notifications(HOOK.key, now=time.time() + 101)
    assert later.attempts == 1 and later.first_tried_at is not None
    queue.notification_failed(n, "HTTP 500", retry_at=None)
    assert queue.notification_counts() == {HOOK.label: {"pending": 0, "undeliverable": 1}}
    assert queue.retry_notifications() == 1
    [again] = queue.due_notifications(HOOK.key)
    assert again.attempts == 0 and again.state == q.PENDING and again.first_tried_at is None


def test_a_job_retried_after_it_was_notified_notifies_its_new_ending(queue):
    queue.outbox_targets = (HOOK,)
    job = _enqueue(queue)
    queue.finish(job.id, q.FAILED, error="not audio")
    [n] = queue.due_notifications(HOOK.key)
    queue.notification_sent(n)
    queue.requeue(job.id, path=job.path)
    queue.finish(job.id, q.FAILED, error="still not audio")
    [again] = queue.due_notifications(HOOK.key)
    assert again.body["reason"] == "still not audio"


def test_two_queues_on_one_store_claim_each_job_once(where):
    """Two daemons (here two queue objects, each with its own connections) never take one job twice."""
    first, second = q.JobQueue(where), q.JobQueue(where)
    for n in range(100):
        _enqueue(first, f"/in/{n}.mp3")
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(queue, name):
        while (job := queue.claim(name)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(queue, f"{host}:1:w{i}"))
               for host, queue in (("a", first), ("b", second)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(claimed) == 100 == len(set(claimed))
    assert set(first.running_by_node()) <= {"a", "b"} and sum(first.running_by_node().values()) == 100


def test_a_claim_records_the_node_and_keeps_it_after_release(queue):
    job = _enqueue(queue)
    queue.claim(q.worker_id("worker-0", "ingest-2"))
    assert queue.get(job.id).node == "ingest-2"
    assert queue.running_by_node() == {"ingest-2": 1}
    queue.release(job.id, delay=0)
    assert queue.get(job.id).node == "ingest-2" and queue.running_by_node() == {}


def test_start_up_takes_back_only_this_nodes_running_jobs_on_a_shared_queue(queue):
    mine, theirs = _enqueue(queue, "/in/a.mp3"), _enqueue(queue, "/in/b.mp3")
    queue.claim_job(mine.id, q.worker_id("worker-0", "here"))
    queue.claim_job(theirs.id, q.worker_id("worker-0", "there"))
    assert queue.take_back(node="here") == 1
    assert queue.get(mine.id).state == q.QUEUED and queue.get(theirs.id).state == q.RUNNING
    assert queue.take_back(node=None) == 1  # one host: every running job was this host's
    assert queue.get(theirs.id).state == q.QUEUED


def test_one_job_holds_a_content_until_it_fails(queue):
    first, second, third = (_enqueue(queue, f"/in/{n}.mp3") for n in range(3))
    assert queue.claim_content(first.id, "k1") is None
    assert queue.claim_content(first.id, "k1") is None  # asking again (after a restart) is no conflict
    assert queue.claim_content(second.id, "k1").id == first.id
    queue.finish(first.id, q.FAILED, error="rejected")
    assert queue.claim_content(third.id, "k1") is None  # a failed upload does not block the next copy


def test_a_version_1_sqlite_queue_is_migrated_with_its_contents(tmp_path):
    path = tmp_path / "queue.sqlite3"
    old = sqlite3.connect(path)
    old.executescript(q.MIGRATIONS[0].replace("{event_id}", "INTEGER PRIMARY KEY AUTOINCREMENT"))
    old.execute("INSERT INTO jobs (id, path, root, relpath, size, mtime_ns, inode, state, stage, outcome, content_key,"
                " created_at, updated_at) VALUES ('j1', '/in/a.mp3', '/in', 'a.mp3', 10, 1, 2, 'done', 'file', 'done',"
                " 'k1', 0, 0)")
    old.execute("PRAGMA user_version = 1")
    old.commit()
    old.close()
    assert q.migrate(path) == (1, list(range(2, q.SCHEMA_VERSION + 1)))
    queue = q.JobQueue(path)
    job = _enqueue(queue)
    assert queue.claim_content(job.id, "k1").id == "j1"
    assert q.migrate(path) == (q.SCHEMA_VERSION, [])


def test_a_queue_written_by_a_newer_ingestd_is_refused(where):
    queue = q.JobQueue(where)
    with queue.store.transaction() as db:
        if queue.store.kind == "sqlite":
            db.execute(f"PRAGMA user_version = {q.SCHEMA_VERSION + 1}")
        else:
            db.execute("UPDATE ingestd_schema SET version = ?", (q.SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this ingestd"):
        q.JobQueue(where)


def test_finished_jobs_are_pruned_after_the_window_and_live_ones_never(queue):
    old_done, old_failed, recent, live = (_enqueue(queue, f"/in/{name}.mp3") for name in ("old", "bad", "new", "live"))
    for job in (old_done, old_failed, recent, live):
        queue.claim("w")
    queue.ack_part(old_done.id, 0, 0, 10, "0" * 32)
    queue.finish(old_done.id, q.DONE)
    queue.finish(old_failed.id, q.FAILED, error="broken")
    cutoff = queue.now() + 0.001  # on the queue's clock, which finished_at is stamped with
    while queue.now() <= cutoff:
        pass
    queue.finish(recent.id, q.DONE)
    assert queue.prune_finished(cutoff) == 2
    assert queue.get(old_done.id) is None and queue.get(old_failed.id) is None
    assert queue.events(old_done.id) == []
    assert queue.get(recent.id).state == q.DONE and queue.get(live.id).state == q.RUNNING
    assert queue.prune_finished(cutoff) == 0


def test_a_restart_takes_back_its_own_cut_short_sends_and_marks_those_of_removed_targets(queue):
    queue.outbox_targets = (HOOK, CHAT)
    ours, theirs = _enqueue(queue, "/in/a.mp3"), _enqueue(queue, "/in/b.mp3")
    queue.finish(ours.id, q.FAILED, error="not audio")
    queue.finish(theirs.id, q.FAILED, error="not audio")
    for n in queue.due_notifications(HOOK.key):
        assert queue.claim_notification(n, lease=600, node="here" if n.job_id == ours.id else "there")
    assert queue.due_notifications(HOOK.key) == []
    assert queue.release_notification_leases(node="here") == 1
    assert [n.job_id for n in queue.due_notifications(HOOK.key)] == [ours.id]
    # The chat left the config: its notifications are given up on, visibly, not left pending for ever.
    assert queue.orphan_notifications({HOOK.key}) == 2
    assert {n.last_error for n in queue.notifications(states=(q.UNDELIVERABLE,))} == {"its target is no longer in the config"}


def test_a_name_that_is_not_utf8_round_trips(queue):
    name = "/in/caf" + b"\xe9".decode("utf-8", "surrogateescape") + ".wav"  # as os.fsdecode gives it
    job = _enqueue(queue, path=name)
    queue.update(job.id, final_path=name.replace("/in/", "/done/"), error=f"cannot move {name}")
    again = queue.get(job.id)
    assert again.path == name and again.relpath == name.removeprefix("/in/")
    assert again.final_path == "/done/caf\udce9.wav" and name in again.error
    assert queue.live_job_for(name).id == job.id


def test_an_mtime_beyond_64_bits_is_stored_clamped(queue):
    job = queue.enqueue(path="/in/future.wav", root="/in", relpath="future.wav", size=10, mtime_ns=2**64, inode=2)
    assert queue.get(job.id).mtime_ns == q.INT64_MAX


def test_queued_files_pages_through_every_queued_job_once(queue):
    jobs = [_enqueue(queue, path=f"/in/take-{n}\udce9.wav") for n in range(7)]
    queue.finish(jobs[3].id, q.DONE)
    seen = list(queue.queued_files(page=3))
    assert sorted(seen) == sorted((j.id, j.path, "/in", q.PREPARE) for j in jobs if j is not jobs[3])


def test_an_inode_of_2_63_or_more_is_queued_and_known_again(queue):
    # SMB mounts (a Windows file id's sequence number in its top bits) and some NFS servers hand these out;
    # neither store's 64-bit integer holds them as they are, and the file was offered again for ever.
    big = 2**64 - 3
    job = queue.enqueue(path="/in/smb.wav", root="/in", relpath="smb.wav", size=10, mtime_ns=1, inode=big)
    assert job is not None and queue.get(job.id).inode == big
    assert queue.live_keys(["/in/smb.wav"])["/in/smb.wav"] == (job.id, 10, 1, big)
    assert queue.enqueue(path="/in/smb.wav", root="/in", relpath="smb.wav", size=10, mtime_ns=1, inode=big) is None
    queue.update(job.id, inode=2**63)
    assert queue.get(job.id).inode == 2**63
    queue.finish(job.id, q.DONE)
    assert queue.enqueue(path="/in/smb.wav", root="/in", relpath="smb.wav", size=10, mtime_ns=1, inode=2**63) is None


def test_the_same_file_offered_again_just_after_its_job_ended_is_not_queued_twice(queue):
    """A watcher that saw the file before it was moved away (here or on another host) offers it late."""
    job = _enqueue(queue)
    queue.finish(job.id, q.DONE, final_path="/done/a.mp3")
    assert _enqueue(queue) is None
    other_file = queue.enqueue(path="/in/a.mp3", root="/in", relpath="a.mp3", size=10, mtime_ns=5, inode=9)
    assert other_file is not None  # a new file under the same name is a new job
    queue.finish(other_file.id, q.DONE)
    queue.update(job.id, finished_at=time.time() - q.SAME_FILE_WINDOW - 1)
    queue.update(other_file.id, finished_at=time.time() - q.SAME_FILE_WINDOW - 1)
    assert _enqueue(queue) is not None  # put back unchanged long after: queued again


def test_a_batch_refuses_and_queues_each_file_as_it_would_alone(queue):
    """Known files are looked up for a whole batch at once, in chunks; each file is judged as a single enqueue is."""
    finished = _enqueue(queue, "/in/finished.wav")
    queue.finish(finished.id, q.DONE, final_path="/done/finished.wav")
    _enqueue(queue, "/in/live.wav")
    new = [q.NewFile(f"/in/{n}.wav", "/in", f"{n}.wav", 10, 1, 100 + n) for n in range(q.KNOWN_FILES_CHUNK + 10)]
    refused = [
        q.NewFile("/in/finished.wav", "/in", "finished.wav", 10, 1, 2),  # the very file whose job just ended
        q.NewFile("/in/live.wav", "/in", "live.wav", 10, 5, 9),  # another file where a live job holds the path
        q.NewFile("/in/0.wav", "/in", "0.wav", 10, 1, 100),  # offered twice in one batch
    ]
    stalled = q.NewFile("/in/stalled.wav", "/in", "stalled.wav", 10, 1, 3, failure="still changing")
    added = queue.enqueue_many([*new, *refused, stalled])
    assert [f for _, f in added] == [*new, stalled]
    for job_id, f in added:
        assert [(e["event"], e["detail"]) for e in queue.events(job_id)] == [
            ("enqueued", {"path": f.path, "size": 10, "failure": f.failure})]
    job = queue.get(added[-1][0])
    assert (job.state, job.stage, job.outcome, job.error) == (q.QUEUED, q.FILE, q.FAILED, "still changing")
    assert queue.counts()[q.QUEUED] == len(new) + 2


def test_a_backlog_of_one_size_is_looked_up_by_path_and_content_key_not_scanned_by_size(tmp_path):
    # Takes of one length: looked up by size, each insert of a start-up backlog (and each duplicate check) was a
    # scan of every job of that size, quadratic over 100,000 files. SQLite picks the index; this reads its plan.
    queue = q.JobQueue(q.queue_path(tmp_path))
    statements: list[str] = []
    with queue.store.read() as db:
        db.set_trace_callback(statements.append)
        job = _enqueue(queue)
        queue.ahead_with_content(job, "0" * 64)
        db.set_trace_callback(None)
        plans = {prefix: " ".join(row[-1] for sql in statements if sql.startswith(prefix)
                                  for row in db.execute("EXPLAIN QUERY PLAN " + sql))
                 for prefix in ("SELECT path, size, mtime_ns, inode FROM jobs", "SELECT * FROM jobs WHERE content_key")}
    lookup, duplicates = plans.values()
    assert "INDEX jobs_path" in lookup and "jobs_size" not in lookup, lookup
    assert "INDEX jobs_content_key" in duplicates and "jobs_size" not in duplicates, duplicates


def test_a_claim_reads_the_head_of_the_queue_not_the_whole_backlog(tmp_path):
    db = q.JobQueue(tmp_path / "queue.sqlite3").store._db()
    plan = [r[-1] for r in db.execute(
        "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE state = 'queued' AND next_attempt_at <= ?"
        " ORDER BY next_attempt_at, created_at LIMIT 1", (1.0,))]
    assert "jobs_claim_order" in plan[0] and not [p for p in plan if "TEMP B-TREE" in p], plan


def _holder(**changes):
    machine, boot = nodes.this_machine()
    now = time.time()
    holder = q.NodeHolder(node="ingest", instance="a", hostname="studio-1", machine=machine, boot=boot,
                          pid=os.getppid(), started_at=now - 60, seen_at=now - 10)
    return dataclasses.replace(holder, **changes)


def test_a_node_name_is_held_by_one_daemon_at_a_time(queue):
    assert queue.take_node(_holder(instance="a"), replacing=None)
    assert not queue.take_node(_holder(instance="b"), replacing=None)
    read = queue.node_holder("ingest")
    assert queue.node_seen("ingest", "a")  # "a" says it is alive after "b" read the row: "b" must not replace it
    assert not queue.take_node(_holder(instance="b"), replacing=read)
    assert not queue.node_seen("ingest", "b")
    assert queue.take_node(_holder(instance="b"), replacing=queue.node_holder("ingest"))
    assert not queue.node_seen("ingest", "a")  # taken over
    queue.release_node("ingest", "a")  # not a's to release any more
    assert [h.instance for h in queue.node_holders()] == ["b"]
    queue.release_node("ingest", "b")
    assert queue.node_holder("ingest") is None
    # A killed daemon's row stays until it has not been heard from for the finished jobs' window.
    assert queue.take_node(_holder(node="gone", seen_at=time.time() - 100), replacing=None)
    assert queue.take_node(_holder(node="here"), replacing=None)
    assert queue.prune_nodes(time.time() - 50) == 1
    assert [h.node for h in queue.node_holders()] == ["here"]


def test_a_node_names_holder_is_gone_when_silent_restarted_or_its_process_ended():
    ended = _ended_pid()
    assert not nodes.is_gone(_holder(machine="other", boot="x"), stale_after=30, now=time.time())  # another host, heard 10 s ago
    assert nodes.is_gone(_holder(machine="other", boot="x"), stale_after=5, now=time.time())  # ... not heard for too long
    assert nodes.is_gone(_holder(boot="an-earlier-boot"), stale_after=30, now=time.time())  # this machine restarted since
    assert not nodes.is_gone(_holder(pid=os.getppid()), stale_after=30, now=time.time())  # a live process here
    assert nodes.is_gone(_holder(pid=ended), stale_after=30, now=time.time())
    assert nodes.is_gone(_holder(pid=os.getpid()), stale_after=30, now=time.time())  # an earlier run of this very process


def _ended_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
