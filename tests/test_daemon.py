"""The whole path through the real daemon: a dropped file becomes a transcoded media and lands in done/."""

from __future__ import annotations

import json
import os
import time

from ingestd import queue as q

from .daemon import Daemon, drop, jobs_in, make_config, queue_of, wait_for

MIB = 1024 * 1024


def _done(tmp_path, n=1):
    return wait_for(lambda: len(jobs_in(tmp_path, q.DONE)) >= n and jobs_in(tmp_path, q.DONE), timeout=60, what=f"{n} done job(s)")


def test_single_part_upload_is_published_and_filed(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config) as daemon:
        source = drop(tmp_path, "shows/pilot.wav", seconds=1.0)
        original = source.read_bytes()
        [job] = _done(tmp_path)
        assert daemon.stop() == 0

    [media] = emulator.all_media()
    assert media["id"] == job.media_id
    assert media["status"] == "done"
    assert media["title"] == "pilot"
    assert {"key": "ingestd_job", "value": job.id} in media["metadata"]
    assert emulator.media_file(media["id"]).read_bytes() == original

    moved = tmp_path / "done" / "shows" / "pilot.wav"
    assert moved.read_bytes() == original
    assert not source.exists()
    report = json.loads((tmp_path / "done" / "shows" / "pilot.wav.ingestd.json").read_text())
    assert report["media_id"] == media["id"]
    assert report["status"] == "done"
    assert report["assets"]["hls_url"].startswith(emulator.base_url.removesuffix("/api"))
    assert "mp4_url" not in report["assets"]


def test_multi_part_upload_matches_byte_for_byte(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config) as daemon:
        source = drop(tmp_path, "long.wav", size=12 * MIB)
        original = source.read_bytes()
        [job] = _done(tmp_path)
        daemon.stop()
    parts = [r for r in emulator.requests if r.path.endswith("/part") and r.status == 200]
    assert len(parts) == 3  # 5 MiB + 5 MiB + the rest
    assert emulator.media_file(job.media_id).read_bytes() == original
    assert len(emulator.all_media()) == 1


def test_rules_shape_the_create_request(tmp_path, emulator):
    rules = [
        {"name": "weekly", "match": {"folder": "shows/*", "regex": r"^(?P<show>.+)_ep(?P<ep>\d+)\.wav$"},
         "title": "{show} - Episode {ep}", "description": "The {show} show", "tags": ["podcast", "{show}"],
         "metadata": {"show": "{show}", "episode": "{ep}"}, "qualities": "podcast"},
        {"name": "default", "title": "{stem}"},
    ]
    config = make_config(tmp_path, emulator.base_url, rules=rules)
    with Daemon(config) as daemon:
        drop(tmp_path, "shows/talk/talk_ep12.wav")
        _done(tmp_path)
        daemon.stop()
    [media] = emulator.all_media()
    assert media["title"] == "talk - Episode 12"
    assert media["description"] == "The talk show"
    assert media["tags"] == ["podcast", "talk"]
    meta = {m["key"]: m["value"] for m in media["metadata"]}
    assert meta["show"] == "talk" and meta["episode"] == "12"
    assert [qy["name"] for qy in media["qualities"]] == ["highest", "standard"]


def test_restart_mid_upload_resumes_without_resending(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1})
    source = drop(tmp_path, "master.wav", size=16 * MIB)
    original = source.read_bytes()
    # The daemon kills itself right after the server acknowledged its second part, before recording it.
    with Daemon(config, env={"INGESTD_CRASH_AT": "between_parts:2"}) as daemon:
        assert daemon.wait_exit(60) == -9
    job = queue_of(tmp_path).list(limit=1)[0]
    assert sorted(job.acked_parts) == [1, 2]  # numbered from 1 by default
    sent_before = [r for r in emulator.requests if r.path.endswith("/part")]

    with Daemon(config) as daemon:
        _done(tmp_path)
        assert daemon.stop() == 0

    sent_after = [r for r in emulator.requests if r.path.endswith("/part")][len(sent_before):]
    assert len(sent_after) == 2  # only parts 3 and 4 of 1..4
    assert len(emulator.all_media()) == 1
    assert emulator.media_file(job.media_id).read_bytes() == original


def test_a_file_still_being_written_waits_for_settle(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, folder={"settle": 1.5})
    with Daemon(config) as daemon:
        wait_for(lambda: (tmp_path / "state" / "queue.sqlite3").exists(), what="daemon start")
        target = tmp_path / "inbox" / "growing.mp3"
        with open(target, "wb") as out:
            for _ in range(6):  # keep appending more often than `settle`
                out.write(os.urandom(4096))
                out.flush()
                assert sum(queue_of(tmp_path).counts().values()) == 0, "picked up while still being written"
                time.sleep(0.5)  # the writer's own pace: a pause shorter than `settle`
        wait_for(lambda: sum(queue_of(tmp_path).counts().values()) == 1, timeout=10, what="file queued after settling")
        daemon.stop()


def test_bad_file_ends_in_failed_with_reason_and_daemon_keeps_going(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config) as daemon:
        bogus = tmp_path / "inbox" / "notes.mp3"
        bogus.write_bytes(b"these are meeting notes, not audio\n" * 50)
        drop(tmp_path, "good.wav")
        wait_for(lambda: jobs_in(tmp_path, q.FAILED), timeout=30, what="failed job")
        _done(tmp_path)
        assert daemon.stop() == 0
    report = json.loads((tmp_path / "failed" / "notes.mp3.error.json").read_text())
    assert "audio" in report["reason"]
    assert (tmp_path / "failed" / "notes.mp3").exists()
    assert len(emulator.all_media()) == 1


def test_sigterm_exits_zero_and_invalid_config_exits_78(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="ready log line")
        assert daemon.stop() == 0
    config.write_text(config.read_text().replace("workers: 2", "workers: many"))
    with Daemon(config) as daemon:
        assert daemon.wait_exit(30) == 78
    assert "upload.workers" in daemon.log()
