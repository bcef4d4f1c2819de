"""The daemon against the strict emulator where the wire matters: lost creates, refused lists, 403s, key pairs."""

from __future__ import annotations

import signal

from ingestd import queue as q
from ingestd.emulator import Faults

from .daemon import Daemon, drop, jobs_in, make_config, queue_of, wait_for

FAST_RETRIES = {"workers": 1, "retry_delay": 0.1, "retry_delay_max": 0.5, "outage_pause": 1}
LOST_CREATE = {"drop_after_commit": 1.0, "endpoints": frozenset({"create"})}


def _config(tmp_path, emulator, **top):
    return make_config(tmp_path, emulator.base_url, upload=FAST_RETRIES | top.pop("upload", {}), **top)


def _one(tmp_path, state, timeout=30):
    return wait_for(lambda: jobs_in(tmp_path, state), timeout=timeout, what=f"a {state} job")[0]


def test_a_lost_create_is_found_by_its_title_when_the_metadata_filter_is_refused(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(**LOST_CREATE, refused_list_filters=frozenset({"metadata"})))
    drop(tmp_path, "refused.wav")
    with Daemon(_config(tmp_path, emulator)) as daemon:
        job = _one(tmp_path, q.DONE)
        daemon.stop()
    [media] = emulator.all_media()
    assert media["id"] == job.media_id
    lists = [r.status for r in emulator.requests if r.path == "/api/media"]
    assert lists == [400, 200], "the metadata filter, refused, then the title search"
    assert "media_recovered" in [e["event"] for e in queue_of(tmp_path).events(job.id)]


def test_a_lost_create_whose_listing_is_refused_holds_the_job_instead_of_failing_it(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(**LOST_CREATE, refused_list_filters=frozenset({"metadata", "search"})))
    drop(tmp_path, "unknowable.wav")
    with Daemon(_config(tmp_path, emulator)) as daemon:
        held = _one(tmp_path, q.HELD)
        assert held.held_reason.startswith("recovery:") and "unsupported filter" in held.held_reason
        assert not jobs_in(tmp_path, q.FAILED)
        emulator.settings.faults = Faults()
        daemon.proc.send_signal(signal.SIGHUP)  # a reload re-checks held jobs at once
        job = _one(tmp_path, q.DONE)
        daemon.stop()
    assert job.id == held.id
    assert [m["id"] for m in emulator.all_media()] == [job.media_id], "recovered, not created twice"


def test_a_403_while_the_credentials_work_fails_that_request_with_the_service_message(tmp_path, emulator_factory):
    emulator = emulator_factory(faults=Faults(forbidden=frozenset({"update"})))
    rules = [{"name": "default", "title": "{stem}", "qualities": "podcast", "is_public": True, "publish": "on_done"}]
    drop(tmp_path, "forbidden.wav")
    with Daemon(_config(tmp_path, emulator, rules=rules)) as daemon:
        failed = _one(tmp_path, q.FAILED)
        daemon.stop()
    assert "forbidden: this action is not allowed for this account" in failed.error
    assert not jobs_in(tmp_path, q.HELD)
    assert (tmp_path / "failed" / "forbidden.wav").exists()


def test_a_403_for_credentials_the_service_refuses_everywhere_holds_the_job(tmp_path, emulator_factory):
    emulator = emulator_factory(bad_credentials_status=403)
    drop(tmp_path, "locked.wav")
    with Daemon(_config(tmp_path, emulator, token="wrong-token")) as daemon:
        held = _one(tmp_path, q.HELD)
        daemon.stop()
    assert held.held_reason.startswith("auth:") and "403" in held.held_reason
    assert not jobs_in(tmp_path, q.FAILED)


def test_a_key_pair_uploads_end_to_end(tmp_path, emulator):
    api = {"base_url": emulator.base_url, "public_key": "test-public", "secret_key": "test-secret", "timeout": 10}
    drop(tmp_path, "paired.wav")
    with Daemon(_config(tmp_path, emulator, api=api)) as daemon:
        job = _one(tmp_path, q.DONE)
        daemon.stop()
    assert [m["id"] for m in emulator.all_media()] == [job.media_id]
    assert all(r.status < 400 for r in emulator.requests)
