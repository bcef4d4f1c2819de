"""How the daemon uses the whole API: lost answers, budget, publishing, failed media, duplicates."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from ingestd import queue as q
from ingestd.emulator import Faults

from .daemon import Daemon, drop, jobs_in, make_config, queue_of, wait_for

MIB = 1024 * 1024
FAST_RETRIES = {"workers": 1, "retry_delay": 0.1, "retry_delay_max": 0.5, "outage_pause": 1, "budget_recheck": 0.5}


def _config(tmp_path, emulator, **top):
    upload = FAST_RETRIES | top.pop("upload", {})
    return make_config(tmp_path, emulator.base_url, upload=upload, **top)


def _one(tmp_path, state, timeout=30):
    return wait_for(lambda: jobs_in(tmp_path, state), timeout=timeout, what=f"a {state} job")[0]


def _requests(emulator, method, suffix=""):
    return [r for r in emulator.requests if r.method == method and r.path.endswith(suffix)]


def test_a_lost_create_answer_is_found_again_not_created_twice(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(drop_after_commit=1.0, endpoints=frozenset({"create"})))
    source = drop(tmp_path, "lost.wav")
    original = source.read_bytes()
    with Daemon(_config(tmp_path, emulator)) as daemon:
        job = _one(tmp_path, q.DONE)
        daemon.stop()
    [create] = _requests(emulator, "POST", "/create")
    assert create.dropped
    [media] = emulator.all_media()
    assert media["id"] == job.media_id
    assert emulator.media_file(media["id"]).read_bytes() == original
    assert "media_recovered" in [e["event"] for e in queue_of(tmp_path).events(job.id)]


def test_a_repeated_complete_answered_400_is_settled_by_reading_the_status(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(drop_after_commit=1.0, endpoints=frozenset({"complete"})))
    drop(tmp_path, "twice.wav")
    # A second's backoff leaves time to stop dropping answers once the first complete took effect.
    with Daemon(_config(tmp_path, emulator, upload={"retry_delay": 2.0})) as daemon:
        wait_for(lambda: _requests(emulator, "GET", "/complete"), timeout=30, what="the first complete")
        emulator.settings.faults = Faults()
        job = _one(tmp_path, q.DONE)
        daemon.stop()
    completes = _requests(emulator, "GET", "/complete")
    assert [(r.status, r.dropped) for r in completes] == [(200, True), (400, False)]
    assert [m["id"] for m in emulator.all_media()] == [job.media_id]
    assert not _requests(emulator, "POST", "/part")[3:], "the parts were not sent again"


def test_zero_balance_holds_the_job_until_the_balance_is_raised(tmp_path, emulator):
    emulator.settings.accounts[0].balance_usd = 0.0
    config = _config(tmp_path, emulator)
    drop(tmp_path, "costly.wav")
    with Daemon(config) as daemon:
        held = _one(tmp_path, q.HELD)
        assert held.held_reason.startswith("budget: the account balance does not cover")
        shown = subprocess.run([sys.executable, "-m", "ingestd", "jobs", "show", held.id[:12], "--config", str(config)],
                               capture_output=True, text=True, timeout=30)
        assert "budget" in shown.stdout, shown.stdout + shown.stderr
        assert not _requests(emulator, "POST", "/create"), "nothing is created before the budget allows it"
        assert not jobs_in(tmp_path, q.FAILED)

        emulator.settings.accounts[0].balance_usd = 100.0
        job = _one(tmp_path, q.DONE, timeout=20)
        daemon.stop()
    assert len(emulator.all_media()) == 1
    assert job.id == held.id


def test_a_price_over_max_cost_holds_the_job(tmp_path, emulator):
    drop(tmp_path, "pricey.wav", seconds=2)
    with Daemon(_config(tmp_path, emulator, upload={"max_cost_usd": 0.00001})) as daemon:
        held = _one(tmp_path, q.HELD)
        daemon.stop()
    # Both amounts with the precision they need: never "$0.00, more than ... ($0.00)".
    assert re.search(r"transcoding costs \$0\.\d*[1-9]\d*, more than upload\.max_cost_usd \(\$0\.00001\)",
                     held.held_reason), held.held_reason
    assert not emulator.all_media()
    assert (tmp_path / "inbox" / "pricey.wav").exists()


def test_publish_on_done_creates_private_and_flips_public_after_transcoding(tmp_path, emulator_factory):
    emulator = emulator_factory(transcode_delay=1.0)
    rules = [{"name": "default", "title": "{stem}", "qualities": "podcast", "is_public": True, "publish": "on_done"}]
    drop(tmp_path, "later.wav")
    seen: list[tuple[str, bool]] = []

    def sample():
        seen.extend((m["status"], m["is_public"]) for m in emulator.all_media())
        return jobs_in(tmp_path, q.DONE)

    with Daemon(_config(tmp_path, emulator, rules=rules)) as daemon:
        [job] = wait_for(sample, timeout=30, what="done job")
        daemon.stop()
    assert ("transcoding", False) in seen
    assert all(not public for status, public in seen if status != "done"), "public before it was done"
    [media] = emulator.all_media()
    assert media["is_public"] is True
    [patch] = _requests(emulator, "PATCH")
    assert patch.media_id == job.media_id
    requests = emulator.requests
    before_patch = requests[: requests.index(patch)]
    assert [r for r in before_patch if r.method == "GET" and r.media_id == job.media_id and not r.path.endswith("complete")]
    report = json.loads((tmp_path / "done" / "later.wav.ingestd.json").read_text())
    assert report["is_public"] is True


def test_a_job_failing_after_its_media_was_created_deletes_the_media(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(transcode_fail=1.0))
    drop(tmp_path, "broken.wav")
    with Daemon(_config(tmp_path, emulator)) as daemon:
        job = _one(tmp_path, q.FAILED)
        daemon.stop()
    [delete] = _requests(emulator, "DELETE")
    assert delete.media_id == job.media_id and delete.status == 200
    assert not emulator.all_media()
    report = json.loads((tmp_path / "failed" / "broken.wav.error.json").read_text())
    assert "could not transcode" in report["reason"]
    assert report["media_deleted"] is True and report["media_id"] is None


def test_keep_failed_media_keeps_it(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(transcode_fail=1.0))
    drop(tmp_path, "broken.wav")
    with Daemon(_config(tmp_path, emulator, keep_failed_media=True)) as daemon:
        job = _one(tmp_path, q.FAILED)
        daemon.stop()
    assert not _requests(emulator, "DELETE")
    [media] = emulator.all_media()
    assert (media["id"], media["status"]) == (job.media_id, "fail")
    report = json.loads((tmp_path / "failed" / "broken.wav.error.json").read_text())
    assert report["media_id"] == job.media_id and report["media_deleted"] is False


def _drop_twins(tmp_path):
    first = drop(tmp_path, "a/episode.wav")
    (tmp_path / "inbox" / "b").mkdir()
    copy = tmp_path / "staging" / "copy.wav"
    copy.write_bytes(first.read_bytes())
    return copy


def test_the_same_content_twice_is_skipped_naming_the_earlier_media(tmp_path, emulator):
    copy = _drop_twins(tmp_path)
    with Daemon(_config(tmp_path, emulator)) as daemon:
        first = _one(tmp_path, q.DONE)
        copy.rename(tmp_path / "inbox" / "b" / "episode-again.wav")
        second = _one(tmp_path, q.SKIPPED)
        daemon.stop()
    assert [m["id"] for m in emulator.all_media()] == [first.media_id]
    assert first.media_id in second.error
    assert f'"earlier_media_id": "{first.media_id}"' in daemon.log()
    report = json.loads((tmp_path / "done" / "b" / "episode-again.wav.ingestd.json").read_text())
    assert report["status"] == "duplicate" and first.media_id in report["reason"]


def test_duplicates_upload_sends_both(tmp_path, emulator):
    copy = _drop_twins(tmp_path)
    with Daemon(_config(tmp_path, emulator, duplicates="upload")) as daemon:
        _one(tmp_path, q.DONE)
        copy.rename(tmp_path / "inbox" / "b" / "episode-again.wav")
        wait_for(lambda: len(jobs_in(tmp_path, q.DONE)) == 2, timeout=30, what="both uploaded")
        daemon.stop()
    assert len(emulator.all_media()) == 2


def test_a_copy_dropped_while_the_first_is_still_uploading_is_skipped(tmp_path, emulator):
    first = drop(tmp_path, "a/master.wav", size=24 * MIB)
    (tmp_path / "inbox" / "b").mkdir()
    copy = tmp_path / "staging" / "copy.wav"
    copy.write_bytes(first.read_bytes())
    with Daemon(_config(tmp_path, emulator, upload={"workers": 2})) as daemon:
        wait_for(lambda: any(j.media_id for j in jobs_in(tmp_path, q.RUNNING) + jobs_in(tmp_path, q.QUEUED)),
                 what="the first upload under way")
        copy.rename(tmp_path / "inbox" / "b" / "master-copy.wav")
        skipped = _one(tmp_path, q.SKIPPED)
        done = _one(tmp_path, q.DONE)
        daemon.stop()
    assert [m["id"] for m in emulator.all_media()] == [done.media_id]
    assert skipped.path.endswith("master-copy.wav") and done.id in skipped.error


def test_a_duplicate_is_recognised_after_the_first_copy_left_the_done_folder(tmp_path, emulator):
    first = drop(tmp_path, "show.wav", size=6 * MIB)
    content = first.read_bytes()
    with Daemon(_config(tmp_path, emulator)) as daemon:
        done = _one(tmp_path, q.DONE)
        Path(done.final_path).unlink()  # archived elsewhere by the studio
        again = tmp_path / "staging" / "show-again.wav"
        again.write_bytes(content)
        again.rename(tmp_path / "inbox" / "show-again.wav")
        skipped = _one(tmp_path, q.SKIPPED)
        daemon.stop()
    assert [m["id"] for m in emulator.all_media()] == [done.media_id]
    assert done.id in skipped.error


def test_a_copy_is_recognised_after_chunk_size_changed_since_the_first_upload(tmp_path, emulator):
    # The content key is made of the parts' MD5s, so it depends on where the parts were cut: a copy must be
    # compared under the layout the first upload used, not only under today's chunk_size.
    first = drop(tmp_path, "show.wav", size=12 * MIB)
    content = first.read_bytes()
    with Daemon(_config(tmp_path, emulator, upload={"chunk_size": "5MiB"})) as daemon:
        done = _one(tmp_path, q.DONE)
        assert daemon.stop() == 0
    with Daemon(_config(tmp_path, emulator, upload={"chunk_size": "6MiB"})) as daemon:
        again = tmp_path / "staging" / "show-again.wav"
        again.write_bytes(content)
        again.rename(tmp_path / "inbox" / "show-again.wav")
        skipped = _one(tmp_path, q.SKIPPED)
        assert daemon.stop() == 0
    assert [m["id"] for m in emulator.all_media()] == [done.media_id]
    assert done.id in skipped.error


def test_a_part_the_service_lost_is_sent_again_when_complete_reports_the_gap(tmp_path, emulator):
    source = drop(tmp_path, "lost-part.wav", size=12 * MIB)
    original = source.read_bytes()
    config = _config(tmp_path, emulator)
    with Daemon(config, env={"INGESTD_CRASH_AT": "before_complete"}) as daemon:
        assert daemon.wait_exit(60) == -9
    job = queue_of(tmp_path).list(limit=1)[0]
    assert sorted(job.acked_parts) == [1, 2, 3]
    emulator.lose_part(job.media_id, 2)

    with Daemon(config) as daemon:
        done = _one(tmp_path, q.DONE)
        daemon.stop()
    [complete_400, complete_ok] = _requests(emulator, "GET", "/complete")
    assert (complete_400.status, complete_ok.status) == (400, 200)
    assert "complete_rejected" in [e["event"] for e in queue_of(tmp_path).events(done.id)]
    assert emulator.media_file(done.media_id).read_bytes() == original
    assert len(emulator.all_media()) == 1


def test_a_failed_delete_of_a_failing_jobs_media_keeps_the_reason_it_failed(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(transcode_fail=1.0, server_error=1.0, endpoints=frozenset({"delete"})))
    drop(tmp_path, "broken.wav")
    with Daemon(_config(tmp_path, emulator)) as daemon:
        wait_for(lambda: [r for r in _requests(emulator, "DELETE") if r.status == 500], what="a refused DELETE")
        emulator.settings.faults.server_error = 0.0
        _one(tmp_path, q.FAILED)
        daemon.stop()
    report = json.loads((tmp_path / "failed" / "broken.wav.error.json").read_text())
    assert "could not transcode" in report["reason"], report["reason"]
    assert report["media_deleted"] is True
