"""Faults, one at a time and all at once: the API failing, the daemon killed, the disk in the way."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from ingestd import queue as q
from ingestd.emulator import Faults
from ingestd.folderlock import LOCK_NAME

from .daemon import Daemon, drop, jobs_in, make_config, queue_of, wait_for

MIB = 1024 * 1024
FAST_RETRIES = {"retry_delay": 0.1, "retry_delay_max": 0.5, "outage_pause": 0.5}

CHAOS_SEED = int(os.environ.get("INGESTD_CHAOS_SEED", "20240611"))
CHAOS_FILES = int(os.environ.get("INGESTD_CHAOS_FILES", "20"))
# Each extra 10 seconds asked for adds a kill and restart.
CHAOS_KILLS = 6 + int(os.environ.get("INGESTD_CHAOS_SECONDS", "0")) // 10


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def _retry_delays(tmp_path, job_id):
    return [e["detail"]["delay"] for e in queue_of(tmp_path).events(job_id) if e["event"] == "retry_scheduled"]


def test_chaos_kills_and_api_faults_lose_nothing_and_upload_nothing_twice(tmp_path, emulator_factory):
    rng = random.Random(CHAOS_SEED)
    faults = Faults(seed=CHAOS_SEED, server_error=0.06, rate_limited=0.04, drop_after_commit=0.06)
    emulator = emulator_factory(faults=faults)
    config = make_config(tmp_path, emulator.base_url,
                         upload={"workers": 2, "parallel_parts": 2, "max_attempts": 10} | FAST_RETRIES)
    originals: dict[str, str] = {}

    def drop_some(count: int) -> None:
        for _ in range(count):
            if len(originals) == CHAOS_FILES:
                return
            n = len(originals)
            name = f"set{n % 3}/take-{n:02d}.wav"
            # A distinct tone per file: the same content twice would be skipped as a duplicate.
            size = 11 * MIB if rng.random() < 0.2 else None
            path = drop(tmp_path, name, size=size, seconds=rng.uniform(0.3, 1.5), freq=200.0 + 37 * n)
            originals[name] = _md5(path)

    drop_some(CHAOS_FILES // 2)
    for kill in range(CHAOS_KILLS):
        with Daemon(config) as daemon:
            # Kill after a random number of API calls: somewhere inside a create, a part, a poll or a move.
            seen = len(emulator.requests)
            calls = rng.randint(3, 40)
            wait_for(lambda: len(emulator.requests) >= seen + calls or len(jobs_in(tmp_path, q.DONE)) == len(originals),
                     timeout=30, what=f"API activity before kill {kill + 1}")
            daemon.kill()
        drop_some(rng.randint(1, 4))
    drop_some(CHAOS_FILES)

    with Daemon(config) as daemon:
        # Handlers for SIGTERM are in place once it said it is ready; the log holds every run's lines.
        readies = daemon.log().count('"event": "ready"') if daemon.log_path.exists() else 0
        wait_for(lambda: daemon.log().count('"event": "ready"') > readies, timeout=30, what="the last run ready")
        wait_for(lambda: len(jobs_in(tmp_path, q.DONE)) == CHAOS_FILES, timeout=60,
                 what=f"all {CHAOS_FILES} files done (seed {CHAOS_SEED}; counts {queue_of(tmp_path).counts()})")
        assert daemon.stop() == 0

    counts = queue_of(tmp_path).counts()
    assert counts[q.DONE] == CHAOS_FILES and sum(counts.values()) == CHAOS_FILES, counts
    done = {job.media_id: job for job in jobs_in(tmp_path, q.DONE)}
    media = emulator.all_media()
    assert len(media) == CHAOS_FILES, "one live media per file, no duplicates"
    assert {m["id"] for m in media} == set(done), "every media belongs to a done job: none orphaned"
    for job in done.values():
        relpath = job.relpath
        filed = tmp_path / "done" / relpath
        assert _md5(filed) == originals[relpath]
        assert _md5(emulator.media_file(job.media_id)) == originals[relpath]
        assert json.loads(filed.with_name(filed.name + ".ingestd.json").read_text())["media_id"] == job.media_id
    filed_audio = sorted(str(p.relative_to(tmp_path / "done")) for p in (tmp_path / "done").rglob("*.wav"))
    assert filed_audio == sorted(originals), "each file in done/ exactly once"
    assert not [p for p in (tmp_path / "inbox").rglob("*") if p.is_file() and p.name != LOCK_NAME]


def test_server_errors_back_off_exponentially_and_persist_the_next_attempt(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(server_error=1.0, endpoints=frozenset({"create"})))
    config = make_config(tmp_path, emulator.base_url,
                         upload={"workers": 1, "retry_delay": 0.2, "retry_delay_max": 0.8, "outage_pause": 1})
    drop(tmp_path, "flaky.wav")
    with Daemon(config) as daemon:
        job_id = wait_for(lambda: (job := _only(tmp_path)) and len(_retry_delays(tmp_path, job.id)) >= 4 and job.id,
                          timeout=30, what="four retries")
        job = queue_of(tmp_path).get(job_id)
        assert job.state in (q.QUEUED, q.RUNNING) and "internal server error" in job.error
        emulator.settings.faults = Faults()
        wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="done once the errors stop")
        daemon.stop()
    d1, d2, d3, d4 = _retry_delays(tmp_path, job_id)[:4]
    assert 0.1 <= d1 <= 0.2 and 0.2 <= d2 <= 0.4 and 0.4 <= d3 <= 0.8 and 0.4 <= d4 <= 0.8, (d1, d2, d3, d4)
    retried = [e for e in queue_of(tmp_path).events(job_id) if e["event"] == "retry_scheduled"][0]
    assert retried["detail"]["error"]
    assert len(emulator.all_media()) == 1


def _only(tmp_path) -> q.Job | None:
    jobs = queue_of(tmp_path).list(limit=2) if (tmp_path / "state" / "queue.sqlite3").exists() else []
    return jobs[0] if len(jobs) == 1 else None


def test_429_retry_after_is_a_floor_under_the_backoff(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(rate_limited=1.0, endpoints=frozenset({"create"})))
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1, "retry_delay": 0.05, "outage_pause": 1})
    drop(tmp_path, "busy.wav")
    with Daemon(config) as daemon:
        wait_for(lambda: (job := _only(tmp_path)) and len(_retry_delays(tmp_path, job.id)) >= 2, timeout=30,
                 what="two rate-limited retries")
        emulator.settings.faults = Faults()
        [job] = wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="done")
        daemon.stop()
    delays = _retry_delays(tmp_path, job.id)
    assert all(d >= 1.0 for d in delays), delays  # the emulator asks for one second; our own backoff is 0.05s


def test_an_api_outage_pauses_work_without_spending_attempts(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(server_error=1.0))
    config = make_config(tmp_path, emulator.base_url,
                         upload={"workers": 2, "max_attempts": 6, "retry_delay": 0.05, "retry_delay_max": 0.1, "outage_pause": 0.3})
    for n in range(3):
        drop(tmp_path, f"ep{n}.wav", freq=300.0 + 50 * n)
    with Daemon(config) as daemon:
        # Without the breaker, 0.1s retries would use up six attempts per job within a second or two.
        wait_for(lambda: sum(1 for r in emulator.requests if r.status == 500) >= 30, timeout=30, what="a long outage")
        assert "api_unreachable_pausing" in daemon.log()
        assert not jobs_in(tmp_path, q.FAILED)
        emulator.settings.faults = Faults()
        wait_for(lambda: len(jobs_in(tmp_path, q.DONE)) == 3, timeout=40, what="all done after the outage")
        daemon.stop()
    assert len(emulator.all_media()) == 3


def test_rejected_credentials_hold_jobs_until_a_restart_with_the_right_token(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, token="wrong-token", upload={"workers": 1})
    drop(tmp_path, "secret.wav")
    with Daemon(config) as daemon:
        [held] = wait_for(lambda: jobs_in(tmp_path, q.HELD), timeout=30, what="held job")
        daemon.stop()
    assert held.held_reason.startswith("auth:") and "401" in held.held_reason
    assert not jobs_in(tmp_path, q.FAILED) and not list((tmp_path / "failed").iterdir())
    assert (tmp_path / "inbox" / "secret.wav").exists()

    config.write_text(config.read_text().replace("wrong-token", "test-token"))
    with Daemon(config) as daemon:
        [job] = wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="done with the right token")
        daemon.stop()
    assert job.id == held.id
    assert len(emulator.all_media()) == 1


def test_a_part_whose_hash_the_server_rejects_is_sent_again(tmp_path, emulator_factory):
    # Seeded so that some parts are refused once or twice, never three times in a row.
    emulator = emulator_factory(faults=Faults(seed=3, part_hash_mismatch=0.4, endpoints=frozenset({"part"})))
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1})
    source = drop(tmp_path, "noisy.wav", size=12 * MIB)
    original = _md5(source)
    with Daemon(config) as daemon:
        [job] = wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="done")
        daemon.stop()
    parts = [r.status for r in emulator.requests if r.path.endswith("/part")]
    assert parts.count(400) >= 1 and parts.count(200) == 3, parts
    assert "part_hash_rejected" in daemon.log()
    assert _md5(emulator.media_file(job.media_id)) == original


def test_an_unwritable_done_folder_keeps_the_file_safe_until_fixed(tmp_path, emulator):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the done folder's parent should be\n")  # blocks root too, unlike chmod
    done_dir = blocker / "done"
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1} | FAST_RETRIES,
                         folder={"done_dir": str(done_dir)})
    source = drop(tmp_path, "safe.wav")
    original = source.read_bytes()
    with Daemon(config) as daemon:
        wait_for(lambda: "filing_failed" in daemon.log(), timeout=30, what="filing to fail")
        [job] = jobs_in(tmp_path, q.QUEUED) or jobs_in(tmp_path, q.RUNNING)
        assert job.stage == q.FILE and source.read_bytes() == original
        blocker.unlink()
        done_dir.mkdir(parents=True)
        [job] = wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="filed once the folder works")
        daemon.stop()
    assert (done_dir / "safe.wav").read_bytes() == original
    assert (done_dir / "safe.wav.ingestd.json").exists()
    assert not source.exists()
    assert len(emulator.all_media()) == 1


def test_filing_across_filesystems_copies_verifies_and_unlinks(tmp_path, emulator):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another filesystem than the test's temporary folder")
    done_dir = shm / f"ingestd-test-{uuid.uuid4().hex}"
    try:
        config = make_config(tmp_path, emulator.base_url, upload={"workers": 1}, folder={"done_dir": str(done_dir)})
        source = drop(tmp_path, "far.wav")
        original = source.read_bytes()
        with Daemon(config) as daemon:
            wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="done")
            daemon.stop()
        assert (done_dir / "far.wav").read_bytes() == original
        assert not source.exists()
        assert not [p.name for p in done_dir.iterdir() if "partial" in p.name]
    finally:
        shutil.rmtree(done_dir, ignore_errors=True)


def test_a_file_changed_after_its_upload_began_starts_over_on_a_fresh_media(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1})
    source = drop(tmp_path, "edit.wav", size=12 * MIB)
    with Daemon(config, env={"INGESTD_CRASH_AT": "between_parts:1"}) as daemon:
        assert daemon.wait_exit(30) == -9
    [stale] = emulator.all_media()
    drop(tmp_path, "edit.wav", size=12 * MIB, freq=880.0)  # re-exported while the upload was under way
    edited = _md5(source)

    with Daemon(config) as daemon:
        [job] = wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="done")
        daemon.stop()
    assert job.media_id != stale["id"]
    assert [m["id"] for m in emulator.all_media()] == [job.media_id]
    assert [m["status"] for m in emulator.all_media(include_deleted=True) if m["id"] == stale["id"]] == ["deleted"]
    assert _md5(emulator.media_file(job.media_id)) == edited
    assert _md5(tmp_path / "done" / "edit.wav") == edited


@pytest.fixture
def small_filesystem(tmp_path):
    """A 4 MiB tmpfs of its own (needs root and mount rights)."""
    mountpoint = tmp_path / "small-fs"
    mountpoint.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mountpoint)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)


def test_a_full_disk_while_moving_keeps_the_source_until_the_copy_is_whole(tmp_path, emulator, small_filesystem):
    done_dir = small_filesystem / "done"
    done_dir.mkdir()
    filler = small_filesystem / "filler"
    filler.write_bytes(b"\0" * (3 * MIB))  # leaves less room than the file needs
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1} | FAST_RETRIES,
                         folder={"done_dir": str(done_dir)})
    source = drop(tmp_path, "big.wav", size=2 * MIB)
    original = source.read_bytes()
    with Daemon(config) as daemon:
        wait_for(lambda: "filing_failed" in daemon.log(), timeout=30, what="filing to hit the full disk")
        assert source.read_bytes() == original
        assert not [p.name for p in done_dir.iterdir() if p.name.endswith((".wav", "-partial"))]
        assert "No space left" in daemon.log()
        filler.unlink()
        wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="filed once there is room")
        daemon.stop()
    assert (done_dir / "big.wav").read_bytes() == original
    assert not source.exists()
    assert len(emulator.all_media()) == 1
