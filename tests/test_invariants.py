"""Regression tests for the ways files were lost, uploaded twice or left unexplained, one per defect.

Each test drives the real daemon against the real emulator with real files; its name says the defect.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ingestd import filing
from ingestd import queue as q

from .audio import write_wav
from .daemon import Daemon, drop, jobs_in, make_config, queue_of, wait_for
from .test_chaos import small_filesystem  # noqa: F401 (a fixture)

FAST = {"retry_delay": 0.05, "retry_delay_max": 0.5, "outage_pause": 0.3}


def ingestd(config, *argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ingestd", *argv, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def _only(tmp_path, state):
    return wait_for(lambda: jobs_in(tmp_path, state), timeout=30, what=f"a {state} job")


# -- every move refuses to replace -------------------------------------------------------------


def test_move_never_replaces_an_existing_file(tmp_path):
    source = tmp_path / "a" / "ep.wav"
    target = tmp_path / "b" / "ep.wav"
    source.parent.mkdir()
    target.parent.mkdir()
    source.write_bytes(b"old")
    target.write_bytes(b"newer")
    with pytest.raises(filing.FilingError, match="already"):
        filing.move(source, target)
    assert source.read_bytes() == b"old" and target.read_bytes() == b"newer"


def test_jobs_retry_never_overwrites_a_newer_file(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config) as daemon:
        (tmp_path / "inbox" / "ep.wav").write_bytes(b"")
        [failed] = _only(tmp_path, q.FAILED)
        assert daemon.stop() == 0
    newer = write_wav(tmp_path / "inbox" / "ep.wav", 0.5, freq=700.0).read_bytes()
    result = ingestd(config, "jobs", "retry", failed.id[:12])
    assert result.returncode == 1, result.stdout
    assert "already" in result.stderr and "ep.wav" in result.stderr
    assert (tmp_path / "inbox" / "ep.wav").read_bytes() == newer
    assert (tmp_path / "failed" / "ep.wav").read_bytes() == b""
    assert queue_of(tmp_path).get(failed.id).state == q.FAILED


# -- one bad file does not sink its batch ------------------------------------------------------


def test_one_file_the_queue_cannot_hold_as_is_does_not_sink_its_batch(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    for n in range(6):
        drop(tmp_path, f"good{n}.wav", seconds=0.3, freq=300.0 + 50 * n)
    odd = drop(tmp_path, "future.wav", seconds=0.3, freq=950.0)
    year_2446 = int((2446 - 1970) * 365.25 * 86400) * 10**9  # beyond a 64-bit count of nanoseconds
    os.utime(odd, ns=(year_2446, year_2446))
    with Daemon(config) as daemon:  # the start-up scan hands all seven on in one batch
        wait_for(lambda: len(jobs_in(tmp_path, q.DONE)) == 7, timeout=60, what="all seven files done")
        assert daemon.stop() == 0
    assert sorted(p.name for p in (tmp_path / "done").glob("*.wav")) == sorted([*(f"good{n}.wav" for n in range(6)), "future.wav"])
    assert not list((tmp_path / "inbox").glob("*.wav"))


# -- an unexpected exception ends in a bounded retry, then a failure ---------------------------


def test_an_unexpected_exception_fails_the_job_after_bounded_retries(tmp_path, emulator):
    # (A sidecar nested past the parser's depth once did this for real; it is a sidecar error now.)
    config = make_config(tmp_path, emulator.base_url, upload={"max_attempts": 2} | FAST)
    staging = write_wav(tmp_path / "staging" / "buggy.wav", 0.3)
    with Daemon(config, env={"INGESTD_RAISE_AT": "before_create"}) as daemon:
        staging.rename(tmp_path / "inbox" / "buggy.wav")
        [failed] = _only(tmp_path, q.FAILED)
        assert daemon.stop() == 0
    assert "RuntimeError: raised at before_create" in failed.error
    assert failed.attempts <= 2
    assert (tmp_path / "failed" / "buggy.wav.error.json").exists()
    assert not jobs_in(tmp_path, q.RUNNING)


# -- long names ---------------------------------------------------------------------------------


def test_a_long_name_is_uploaded_and_filed_with_a_report_that_fits(tmp_path, emulator):
    name = "x" * 245 + ".wav"
    with Daemon(make_config(tmp_path, emulator.base_url)) as daemon:
        source = drop(tmp_path, name)
        original = source.read_bytes()
        [done] = _only(tmp_path, q.DONE)
        assert daemon.stop() == 0
    assert (tmp_path / "done" / name).read_bytes() == original
    [report] = [p for p in (tmp_path / "done").iterdir() if p.name.endswith(filing.DONE_SUFFIX)]
    data = json.loads(report.read_text())
    assert data["media_id"] == done.media_id and data["source"].endswith(name)


def test_a_long_name_filed_beside_its_namesake_still_fits(tmp_path, emulator):
    name = "y" * 250 + ".wav"
    (tmp_path / "failed").mkdir()
    (tmp_path / "failed" / name).write_bytes(b"an earlier failure")
    with Daemon(make_config(tmp_path, emulator.base_url)) as daemon:
        (tmp_path / "inbox" / name).write_bytes(b"")
        [failed] = _only(tmp_path, q.FAILED)
        assert daemon.stop() == 0
    assert (tmp_path / "failed" / name).read_bytes() == b"an earlier failure"
    assert os.path.getsize(failed.final_path) == 0
    reports = [p for p in (tmp_path / "failed").iterdir() if p.name.endswith(filing.ERROR_SUFFIX)]
    assert len(reports) == 1 and "empty" in json.loads(reports[0].read_text())["reason"]


# -- names that are not UTF-8 -------------------------------------------------------------------


def test_a_name_that_is_not_utf8_is_uploaded_like_any_other(tmp_path, emulator):
    raw = os.fsencode(tmp_path / "inbox") + b"/caf\xe9 live.wav"
    staging = write_wav(tmp_path / "staging" / "latin1.wav", 0.3)
    with Daemon(make_config(tmp_path, emulator.base_url)) as daemon:
        os.rename(staging, raw)
        [done] = _only(tmp_path, q.DONE)
        assert daemon.stop() == 0
    done_dir = os.fsencode(tmp_path / "done")
    assert b"caf\xe9 live.wav" in os.listdir(done_dir)
    assert b"caf\xe9 live.wav.ingestd.json" in os.listdir(done_dir)
    [media] = emulator.all_media()
    assert media["id"] == done.media_id and media["title"].startswith("caf") and media["title"].endswith("live")


# -- old failures clear -------------------------------------------------------------------------


def test_a_later_success_supersedes_an_old_failure(tmp_path, emulator):
    with Daemon(make_config(tmp_path, emulator.base_url)) as daemon:
        (tmp_path / "inbox" / "ep.wav").write_bytes(b"")
        [failed] = _only(tmp_path, q.FAILED)
        # The person fixes the file and drops it in again, moving the failed one out of the way.
        (tmp_path / "failed" / "ep.wav").unlink()
        drop(tmp_path, "ep.wav")
        [done] = _only(tmp_path, q.DONE)
        wait_for(lambda: not jobs_in(tmp_path, q.FAILED), timeout=10, what="the old failure cleared")
        assert daemon.stop() == 0
    old = queue_of(tmp_path).get(failed.id)
    assert old.outcome == "superseded" and done.id in old.error
    assert not (tmp_path / "failed" / "ep.wav.error.json").exists()


def test_a_superseded_failure_still_beside_its_file_says_so(tmp_path, emulator):
    with Daemon(make_config(tmp_path, emulator.base_url)) as daemon:
        (tmp_path / "inbox" / "ep.wav").write_bytes(b"")
        _only(tmp_path, q.FAILED)
        drop(tmp_path, "ep.wav")
        [done] = _only(tmp_path, q.DONE)
        wait_for(lambda: not jobs_in(tmp_path, q.FAILED), timeout=10, what="the old failure cleared")
        assert daemon.stop() == 0
    report = json.loads((tmp_path / "failed" / "ep.wav.error.json").read_text())
    assert report["status"] == "superseded" and done.media_id in report["reason"]


# -- config holes -------------------------------------------------------------------------------


def test_check_config_refuses_a_done_dir_above_a_watched_folder(tmp_path):
    config = make_config(tmp_path, "http://127.0.0.1:9/api", folder={"done_dir": str(tmp_path)})
    result = ingestd(config, "check-config")
    assert result.returncode == 78
    assert "folders[0].done_dir" in result.stdout + result.stderr


def test_check_config_refuses_a_state_dir_inside_a_watched_folder(tmp_path):
    config = make_config(tmp_path, "http://127.0.0.1:9/api", state_dir=str(tmp_path / "inbox" / "state"))
    result = ingestd(config, "check-config")
    assert result.returncode == 78
    assert "state_dir" in result.stdout + result.stderr


def test_a_job_whose_folder_a_reload_removed_is_filed_in_that_folders_done_dir(tmp_path, emulator):
    import yaml

    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="daemon ready")
        emulator.settings.transcode_delay = 3.0
        drop(tmp_path, "ep.wav")
        wait_for(lambda: any(j.stage == q.TRANSCODE for j in queue_of(tmp_path).list()), timeout=30, what="transcoding")
        data = yaml.safe_load(config.read_text())
        (tmp_path / "other").mkdir()
        data["folders"][0] |= {"path": str(tmp_path / "other"), "done_dir": str(tmp_path / "other-done"),
                               "failed_dir": str(tmp_path / "other-failed")}
        config.write_text(yaml.safe_dump(data))
        daemon.proc.send_signal(1)
        wait_for(lambda: "config_reloaded" in daemon.log(), what="reloaded")
        emulator.settings.transcode_delay = 0.2
        [done] = _only(tmp_path, q.DONE)
        assert daemon.stop() == 0
    assert done.final_path == str(tmp_path / "done" / "ep.wav")
    assert (tmp_path / "done" / "ep.wav.ingestd.json").exists()


# -- a file replaced after its upload ----------------------------------------------------------


def test_a_file_replaced_after_its_upload_is_uploaded_itself_not_filed_as_the_old_one(tmp_path, emulator):
    emulator.settings.transcode_delay = 2.0
    with Daemon(make_config(tmp_path, emulator.base_url)) as daemon:
        drop(tmp_path, "episode.wav", freq=440.0)
        first = wait_for(lambda: [j for j in queue_of(tmp_path).list() if j.stage == q.TRANSCODE], timeout=30,
                         what="the first version transcoding")[0]
        newer = drop(tmp_path, "episode.wav", freq=880.0).read_bytes()  # moved over it, as `mv` does
        emulator.settings.transcode_delay = 0.2
        wait_for(lambda: len(jobs_in(tmp_path, q.DONE)) == 2, timeout=30, what="both versions done")
        assert daemon.stop() == 0
    old, new = sorted(jobs_in(tmp_path, q.DONE), key=lambda j: j.created_at)
    assert old.id == first.id and old.final_path is None
    assert emulator.media_file(new.media_id).read_bytes() == newer
    assert (tmp_path / "done" / "episode.wav").read_bytes() == newer
    report = json.loads((tmp_path / "done" / "episode.wav.ingestd.json").read_text())
    assert report["media_id"] == new.media_id != old.media_id


def test_a_file_replaced_while_it_is_being_filed_stays_in_place(tmp_path):
    source = tmp_path / "inbox" / "episode.wav"
    source.parent.mkdir()
    source.write_bytes(b"the uploaded version")
    uploaded = filing.file_key(os.stat(source))
    (tmp_path / "newer.wav").write_bytes(b"a newer version")
    os.replace(tmp_path / "newer.wav", source)  # between filing's check and its rename
    target = tmp_path / "done" / "episode.wav"
    with pytest.raises(filing.SourceReplaced):
        filing.file_away(source=source, sidecar=None, target=target, report={"media_id": "m"}, failed=False,
                         expect=uploaded)
    assert source.read_bytes() == b"a newer version"
    assert not target.exists() and not filing.report_path(target, failed=False).exists()


# -- duplicates -------------------------------------------------------------------------------------


def test_identical_files_dropped_together_are_uploaded_once(tmp_path, emulator):
    staging = write_wav(tmp_path / "staging" / "one.wav", 1.0)
    for name in ("two.wav", "three.wav"):
        (tmp_path / "staging" / name).write_bytes(staging.read_bytes())
    with Daemon(make_config(tmp_path, emulator.base_url, upload={"workers": 2})) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="daemon ready")
        for name in ("one.wav", "two.wav", "three.wav"):
            os.rename(tmp_path / "staging" / name, tmp_path / "inbox" / name)
        wait_for(lambda: len(jobs_in(tmp_path, q.DONE)) + len(jobs_in(tmp_path, q.SKIPPED)) == 3, timeout=30,
                 what="three outcomes")
        assert daemon.stop() == 0
    [done] = jobs_in(tmp_path, q.DONE)
    assert [m["id"] for m in emulator.all_media()] == [done.media_id]
    for skipped in jobs_in(tmp_path, q.SKIPPED):
        report = json.loads(filing.report_path(Path(skipped.final_path), failed=False).read_text())
        assert report["status"] == "duplicate" and report["media_id"] == done.media_id


def test_a_copy_of_a_file_that_then_fails_is_uploaded_not_filed_as_done(tmp_path, emulator):
    emulator.settings.transcode_delay = 2.0
    emulator.settings.faults.transcode_fail = 1.0
    with Daemon(make_config(tmp_path, emulator.base_url)) as daemon:
        original = drop(tmp_path, "take1.wav").read_bytes()
        wait_for(lambda: [j for j in queue_of(tmp_path).list() if j.stage == q.TRANSCODE], timeout=30,
                 what="the original transcoding")
        emulator.settings.faults.transcode_fail = 0.0
        emulator.settings.transcode_delay = 0.2
        (tmp_path / "staging" / "take2.wav").write_bytes(original)
        os.rename(tmp_path / "staging" / "take2.wav", tmp_path / "inbox" / "take2.wav")
        [failed] = _only(tmp_path, q.FAILED)
        [done] = _only(tmp_path, q.DONE)
        assert daemon.stop() == 0
    assert failed.relpath == "take1.wav" and done.relpath == "take2.wav"
    assert not jobs_in(tmp_path, q.SKIPPED)
    assert emulator.media_file(done.media_id).read_bytes() == original
    report = json.loads((tmp_path / "done" / "take2.wav.ingestd.json").read_text())
    assert report["media_id"] == done.media_id and report["status"] == "done"


def test_a_copy_of_a_deleted_media_is_uploaded_again(tmp_path, emulator):
    from ingestd.client import StreamClient

    with Daemon(make_config(tmp_path, emulator.base_url)) as daemon:
        content = drop(tmp_path, "first.wav").read_bytes()
        [first] = _only(tmp_path, q.DONE)
        with StreamClient(emulator.base_url, token="test-token") as client:
            client.delete_media(first.media_id)  # as from the dashboard
        (tmp_path / "staging" / "again.wav").write_bytes(content)
        os.rename(tmp_path / "staging" / "again.wav", tmp_path / "inbox" / "again.wav")
        wait_for(lambda: len(jobs_in(tmp_path, q.DONE)) == 2 or jobs_in(tmp_path, q.SKIPPED), timeout=30,
                 what="the copy's outcome")
        assert daemon.stop() == 0
    assert not jobs_in(tmp_path, q.SKIPPED)
    again = next(j for j in jobs_in(tmp_path, q.DONE) if j.relpath == "again.wav")
    assert [m["id"] for m in emulator.all_media()] == [again.media_id]
    assert emulator.media_file(again.media_id).read_bytes() == content


# -- a folder ingestd cannot write ------------------------------------------------------------


# Root writes anywhere whatever the mode says; without these capabilities it obeys the folder's mode like anyone.
WITHOUT_DAC_OVERRIDE = (["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                         "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="as root this needs setpriv to drop rights")
def test_a_file_in_a_folder_ingestd_cannot_write_is_held_before_upload_and_resumes_when_fixed(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, upload=FAST)
    news = tmp_path / "inbox" / "shows" / "news"
    news.mkdir(parents=True)
    with Daemon(config, prefix=WITHOUT_DAC_OVERRIDE) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="daemon ready")
        drop(tmp_path, "shows/news/bulletin.wav")
        news.chmod(0o555)  # as a member's umask 022 leaves it for the daemon
        [held] = _only(tmp_path, q.HELD)
        assert str(news) in held.held_reason and "writable" in held.held_reason
        status = ingestd(config, "status")
        assert str(news) in status.stdout
        assert emulator.all_media() == [], "nothing is published that could not be filed"
        news.chmod(0o755)
        [done] = _only(tmp_path, q.DONE)
        assert daemon.stop() == 0
    assert done.final_path == str(tmp_path / "done" / "shows" / "news" / "bulletin.wav")
    assert [m["id"] for m in emulator.all_media()] == [done.media_id]


# Root moves anyone's file out of a sticky folder; without CAP_FOWNER it obeys the sticky bit like anyone.
WITHOUT_FOWNER = (["setpriv", "--inh-caps=-fowner", "--bounding-set=-fowner"] if os.geteuid() == 0 else [])


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root (to give files away) and setpriv")
def test_a_file_in_a_sticky_folder_ingestd_may_not_move_is_held_before_upload_and_resumes_when_fixed(tmp_path, emulator):
    # A shared drop folder is often world- or group-writable with the sticky bit (chmod 1777 / 1775), so users
    # cannot delete each other's takes: then only a file's owner (or the folder's) may move it, whatever the mode.
    config = make_config(tmp_path, emulator.base_url, upload=FAST)
    news = tmp_path / "inbox" / "news"
    news.mkdir(parents=True)
    with Daemon(config, prefix=WITHOUT_FOWNER) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="daemon ready")
        os.chown(news, 65534, 65534)
        news.chmod(0o1777)
        source = tmp_path / "staging" / "bulletin.wav"
        write_wav(source, seconds=0.5)
        os.chown(source, 65533, 65533)
        os.rename(source, news / "bulletin.wav")
        [held] = _only(tmp_path, q.HELD)
        assert str(news) in held.held_reason and "sticky" in held.held_reason and "65533" in held.held_reason
        assert emulator.all_media() == [], "nothing is published that could not be filed"
        news.chmod(0o777)
        [done] = _only(tmp_path, q.DONE)
        assert daemon.stop() == 0
    assert done.final_path == str(tmp_path / "done" / "news" / "bulletin.wav")
    assert [m["id"] for m in emulator.all_media()] == [done.media_id]


# -- cancelling an upload in progress -----------------------------------------------------------

MIB = 1024 * 1024


def _slow_parts(emulator, seconds=1.0):
    emulator.settings.faults.slow = 1.0
    emulator.settings.faults.slow_seconds = seconds
    emulator.settings.faults.endpoints = frozenset({"part"})


def test_an_upload_in_progress_is_cancelled_between_parts(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    _slow_parts(emulator)
    with Daemon(config) as daemon:
        source = drop(tmp_path, "long.wav", size=16 * MIB)
        original = source.read_bytes()
        job = wait_for(lambda: [j for j in queue_of(tmp_path).list() if j.stage == q.UPLOAD and j.state == q.RUNNING],
                       timeout=30, what="the upload under way")[0]
        result = ingestd(config, "jobs", "cancel", job.id[:12])
        assert result.returncode == 0, result.stderr
        [cancelled] = _only(tmp_path, q.CANCELLED)
        assert daemon.stop() == 0
    assert "cancelled" in result.stdout
    assert len(cancelled.acked_parts) < 4, "stopped between parts, not at the end"
    assert [m["status"] for m in emulator.all_media(include_deleted=True)] == ["deleted"]
    assert (tmp_path / "failed" / "long.wav").read_bytes() == original
    report = json.loads((tmp_path / "failed" / "long.wav.error.json").read_text())
    assert "cancelled" in report["reason"] and report["media_deleted"] is True


def test_ctrl_c_in_upload_releases_the_lease_at_once(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    _slow_parts(emulator, seconds=2.0)
    source = tmp_path / "elsewhere" / "long.wav"
    from .audio import write_wav_of_size

    write_wav_of_size(source, 12 * MIB)
    # SIGINT at its default even when the suite itself was started in the background, where shells ignore it.
    upload = subprocess.Popen([sys.executable, "-m", "ingestd", "upload", str(source), "--config", str(config)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: [j for j in jobs_in(tmp_path, q.RUNNING) if j.stage == q.UPLOAD], timeout=30,
                 what="the upload under way")
        upload.send_signal(signal.SIGINT)
        assert upload.wait(30) == 130
    finally:
        if upload.poll() is None:
            upload.kill()
            upload.wait()
    [job] = queue_of(tmp_path).list()
    assert job.state == q.QUEUED and job.lease_owner is None


def test_jobs_retry_uploads_a_duplicate_whose_media_was_deleted(tmp_path, emulator):
    from ingestd.client import StreamClient

    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config) as daemon:
        content = drop(tmp_path, "first.wav").read_bytes()
        [first] = _only(tmp_path, q.DONE)
        (tmp_path / "staging" / "copy.wav").write_bytes(content)
        os.rename(tmp_path / "staging" / "copy.wav", tmp_path / "inbox" / "copy.wav")
        [copy] = _only(tmp_path, q.SKIPPED)
        with StreamClient(emulator.base_url, token="test-token") as client:
            client.delete_media(first.media_id)
        result = ingestd(config, "jobs", "retry", copy.id[:12])
        assert result.returncode == 0, result.stderr
        wait_for(lambda: queue_of(tmp_path).get(copy.id).state == q.DONE, timeout=30, what="the copy uploaded")
        assert daemon.stop() == 0
    again = queue_of(tmp_path).get(copy.id)
    assert [m["id"] for m in emulator.all_media()] == [again.media_id]
    assert emulator.media_file(again.media_id).read_bytes() == content
    report = json.loads((tmp_path / "done" / "copy.wav.ingestd.json").read_text())
    assert report["media_id"] == again.media_id and report["status"] == "done"


def test_files_that_arrive_while_the_state_disk_is_full_are_queued_once_there_is_room(tmp_path, emulator, small_filesystem):
    config = make_config(tmp_path, emulator.base_url, state_dir=str(small_filesystem / "state"))
    with Daemon(config) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="daemon ready")
        filler = small_filesystem / "filler"
        with open(filler, "wb") as out:  # every byte the disk has left
            with contextlib.suppress(OSError):
                while True:
                    out.write(b"\0" * 65536)
                    out.flush()
        for n in range(3):
            drop(tmp_path, f"ep{n}.wav", seconds=0.3, freq=300.0 + 100 * n)
        wait_for(lambda: "enqueue_failed" in daemon.log(), timeout=30, what="queueing to hit the full disk")
        filler.unlink()
        queue = q.JobQueue(q.queue_path(small_filesystem / "state"))
        wait_for(lambda: len(queue.list(states=(q.DONE,))) == 3, timeout=60, what="all three done once there is room")
        assert daemon.stop() == 0
    assert sorted(p.name for p in (tmp_path / "done").glob("*.wav")) == ["ep0.wav", "ep1.wav", "ep2.wav"]


def test_a_job_cancelled_after_a_lost_create_answer_leaves_no_media_behind(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, upload={"retry_delay": 30, "retry_delay_max": 60})
    emulator.settings.faults.drop_after_commit = 1.0  # the media is created; the answer never arrives
    emulator.settings.faults.endpoints = frozenset({"create"})
    with Daemon(config) as daemon:
        drop(tmp_path, "ep.wav")
        job = wait_for(lambda: [j for j in queue_of(tmp_path).list() if j.create_sent and j.state == q.QUEUED],
                       timeout=30, what="a create whose answer was lost")[0]
        assert len(emulator.all_media()) == 1 and job.media_id is None
        result = ingestd(config, "jobs", "cancel", job.id[:12])
        assert result.returncode == 0, result.stderr
        assert daemon.stop() == 0
    assert queue_of(tmp_path).get(job.id).state == q.CANCELLED
    assert emulator.all_media() == [], "the media the lost answer named was found by its job id and deleted"
    assert (tmp_path / "failed" / "ep.wav").exists()
