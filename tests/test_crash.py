"""SIGKILL at every named point of a job, then a restart: nothing lost, nothing uploaded twice."""

from __future__ import annotations

import json

import pytest

from ingestd import crashpoints
from ingestd import queue as q
from ingestd.folderlock import LOCK_NAME

from .daemon import Daemon, drop, jobs_in, make_config, queue_of, wait_for

MIB = 1024 * 1024


def assert_filed_once(root, emulator, name: str, original: bytes, job: q.Job) -> None:
    """One live media with the file's exact bytes, the file once in done/ with its report, none left in the inbox."""
    media = emulator.all_media()
    assert [m["id"] for m in media] == [job.media_id], "expected exactly one media, the job's own"
    assert emulator.media_file(job.media_id).read_bytes() == original
    filed = [p for p in (root / "done").rglob("*") if p.is_file() and not p.name.endswith(".json")]
    assert [p.name for p in filed] == [name]
    assert filed[0].read_bytes() == original
    report = json.loads((root / "done" / (name + ".ingestd.json")).read_text())
    assert report["media_id"] == job.media_id and report["status"] == "done"
    assert not [p for p in (root / "inbox").rglob("*") if p.is_file() and p.name != LOCK_NAME]
    assert job.state == q.DONE


@pytest.mark.parametrize("point", crashpoints.POINTS)
def test_crash_at_point_then_restart_finishes_exactly_once(tmp_path, emulator, point):
    # 12 MiB in 5 MiB parts: three parts, so the part points fall between parts, not only at the edges.
    # A notification target too, so the point between a receiver's acceptance and its record is reached.
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1}, notify=[{"command": ["/bin/true"]}])
    source = drop(tmp_path, "take.wav", size=12 * MIB)
    original = source.read_bytes()
    visit = "2" if point in ("between_parts", "before_part_ack", "during_part") else "1"

    with Daemon(config, env={"INGESTD_CRASH_AT": f"{point}:{visit}"}) as daemon:
        assert daemon.wait_exit(30) == -9, f"the daemon never reached {point}"
    with Daemon(config) as daemon:
        [job] = wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="the job done after the restart")
        # Wherever the crash fell, the job's notification goes out (and the restarted daemon is surely up).
        wait_for(lambda: queue_of(tmp_path).notifications(states=(q.SENT,)), what="its notification sent")
        assert daemon.stop() == 0
    assert_filed_once(tmp_path, emulator, "take.wav", original, job)


def test_crash_after_done_before_the_move_files_it_once(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1})
    source = drop(tmp_path, "final.wav")
    original = source.read_bytes()
    with Daemon(config, env={"INGESTD_CRASH_AT": "before_move"}) as daemon:
        assert daemon.wait_exit(30) == -9
    job = queue_of(tmp_path).list(limit=1)[0]
    assert (job.stage, job.outcome, job.media_status) == (q.FILE, q.DONE, "done")
    assert source.exists()
    sent_before = len(emulator.requests)

    with Daemon(config) as daemon:
        [job] = wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="done after restart")
        daemon.stop()
    again = [r for r in emulator.requests[sent_before:] if r.method != "GET" or r.path.endswith("/complete")]
    assert not again, "nothing is created, sent or completed again"
    assert_filed_once(tmp_path, emulator, "final.wav", original, job)


def test_start_up_fails_a_job_whose_file_vanished_and_deletes_its_media(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1})
    source = drop(tmp_path, "gone.wav", size=12 * MIB)
    with Daemon(config, env={"INGESTD_CRASH_AT": "between_parts:1"}) as daemon:
        assert daemon.wait_exit(30) == -9
    [job] = jobs_in(tmp_path, q.RUNNING)
    assert job.media_id
    source.unlink()

    with Daemon(config) as daemon:
        [job] = wait_for(lambda: jobs_in(tmp_path, q.FAILED), timeout=30, what="the job failed")
        wait_for(lambda: not emulator.all_media(), timeout=10, what="the half-uploaded media deleted")
        daemon.stop()
    assert "disappeared while ingestd was not running" in job.error
    assert not list((tmp_path / "failed").iterdir()), "there is no file to put in failed/"


def test_start_up_enqueues_a_file_that_arrived_while_stopped(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="daemon ready")
        assert daemon.stop() == 0
    assert sum(queue_of(tmp_path).counts().values()) == 0
    source = drop(tmp_path, "meanwhile.wav")
    original = source.read_bytes()
    with Daemon(config) as daemon:
        [job] = wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="the new file uploaded")
        daemon.stop()
    assert_filed_once(tmp_path, emulator, "meanwhile.wav", original, job)
