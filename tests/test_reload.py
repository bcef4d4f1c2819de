"""SIGHUP reloads and SIGTERM stops on the real daemon."""

from __future__ import annotations

import signal
import socket
import time
import urllib.request

import yaml

from ingestd import queue as q

from .audio import write_wav, write_wav_of_size
from .daemon import Daemon, jobs_in, make_config, queue_of, wait_for

MIB = 1024 * 1024


def _drop(folder, name, *, size=None):
    staging = folder.parent / "staging" / name
    staging.parent.mkdir(parents=True, exist_ok=True)
    if size:
        write_wav_of_size(staging, size)
    else:
        write_wav(staging, 1.0)
    target = folder / name
    staging.rename(target)
    return target


def _edit(config_path, change) -> None:
    data = yaml.safe_load(config_path.read_text())
    change(data)
    config_path.write_text(yaml.safe_dump(data, sort_keys=False))


def _reload(daemon, marker: str) -> None:
    seen = daemon.log().count(marker)
    daemon.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: daemon.log().count(marker) > seen, what=marker)


def _done_count(tmp_path) -> int:
    return len(jobs_in(tmp_path, q.DONE))


def test_a_good_config_is_applied_rules_and_folders(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    second = tmp_path / "second"
    for name in ("second", "done2", "failed2"):
        (tmp_path / name).mkdir()
    with Daemon(config) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="ready")

        def change(data):
            data["rules"][0]["title"] = "Reloaded: {stem}"
            data["folders"].append({"path": str(second), "settle": 0.3, "done_dir": str(tmp_path / "done2"),
                                    "failed_dir": str(tmp_path / "failed2")})

        _edit(config, change)
        _reload(daemon, '"config_reloaded"')
        _drop(second, "fresh.wav")
        wait_for(lambda: _done_count(tmp_path) == 1, what="upload from the new folder")
        assert daemon.stop() == 0
    [media] = emulator.all_media()
    assert media["title"] == "Reloaded: fresh"
    assert (tmp_path / "done2" / "fresh.wav").exists()


def test_a_bad_config_is_refused_and_the_old_one_kept(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(config) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="ready")
        good = config.read_text()
        config.write_text(good.replace("workers: 2", "workers: many").replace("title: '{stem}'", "title: 'Broken {stem}'"))
        _reload(daemon, '"reload_refused"')
        assert daemon.proc.poll() is None
        _drop(tmp_path / "inbox", "still-works.wav")
        wait_for(lambda: _done_count(tmp_path) == 1, what="upload under the old config")
        assert daemon.stop() == 0
    refused = [line for line in daemon.log().splitlines() if '"reload_refused"' in line]
    assert any("upload.workers" in line and f"{config}:" in line for line in refused)
    [media] = emulator.all_media()
    assert media["title"] == "still-works"


def test_jobs_held_for_credentials_resume_after_a_reload_fixes_the_token(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, token="an-expired-token")
    with Daemon(config) as daemon:
        _drop(tmp_path / "inbox", "held.wav")
        [held] = wait_for(lambda: jobs_in(tmp_path, q.HELD), what="job held for its credentials")
        assert held.held_reason.startswith("auth:")
        _edit(config, lambda data: data["api"].update(token="test-token"))
        _reload(daemon, '"config_reloaded"')
        [done] = wait_for(lambda: jobs_in(tmp_path, q.DONE), what="held job done after the reload")
        assert daemon.stop() == 0
    assert done.id == held.id
    assert len(emulator.all_media()) == 1


def test_sigterm_mid_upload_checkpoints_and_a_restart_finishes(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, upload={"workers": 1})
    # Every answer takes 0.4 s: the daemon is reliably mid-upload when the signal lands.
    emulator.settings.faults.slow = 1.0
    emulator.settings.faults.slow_seconds = 0.4
    source = _drop(tmp_path / "inbox", "long.wav", size=16 * MIB)  # four 5 MiB parts
    original = source.read_bytes()
    with Daemon(config) as daemon:
        wait_for(lambda: (jobs := queue_of(tmp_path).list()) and jobs[0].acked_parts, what="first part acknowledged")
        signalled = time.monotonic()
        daemon.proc.send_signal(signal.SIGTERM)
        assert daemon.wait_exit(30) == 0
        stopped_in = time.monotonic() - signalled
    assert stopped_in < 5, "the part in flight finishes; no new part starts"
    [job] = queue_of(tmp_path).list()
    assert job.state == q.QUEUED and job.stage == q.UPLOAD
    assert 1 <= len(job.acked_parts) < 4
    events = [e["event"] for e in queue_of(tmp_path).events(job.id)]
    assert "checkpointed_for_shutdown" in events

    emulator.settings.faults.slow = 0.0
    with Daemon(config) as daemon:
        [done] = wait_for(lambda: jobs_in(tmp_path, q.DONE), what="upload finished after the restart")
        assert daemon.stop() == 0
    assert done.id == job.id
    assert len(emulator.all_media()) == 1
    assert emulator.media_file(done.media_id).read_bytes() == original
    parts = [r for r in emulator.requests if r.path.endswith("/part") and r.status == 200]
    assert len(parts) == 4, "no acknowledged part was sent twice"


def _get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status
    except OSError:
        return 0


def test_a_reload_whose_status_listen_is_taken_is_refused_whole(tmp_path, emulator):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy_port = taken.getsockname()[1]
        with socket.socket() as free:
            free.bind(("127.0.0.1", 0))
            port = free.getsockname()[1]
        config = make_config(tmp_path, emulator.base_url, status={"listen": f"127.0.0.1:{port}"})
        with Daemon(config) as daemon:
            wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz") == 200, what="status listener")

            def change(data):
                data["status"]["listen"] = f"127.0.0.1:{busy_port}"
                data["rules"][0]["title"] = "Changed {stem}"

            _edit(config, change)
            _reload(daemon, '"reload_refused"')
            assert daemon.proc.poll() is None, "the daemon lives on"
            assert _get(f"http://127.0.0.1:{port}/healthz") == 200, "the old listener still serves"
            _drop(tmp_path / "inbox", "after.wav")
            wait_for(lambda: _done_count(tmp_path) == 1, what="upload under the old config")
            assert daemon.stop() == 0
    [refused] = [line for line in daemon.log().splitlines() if '"reload_refused"' in line]
    assert f"status.listen: cannot listen on 127.0.0.1:{busy_port}" in refused and "old config" in refused
    assert '"config_reloaded"' not in daemon.log()
    [media] = emulator.all_media()
    assert media["title"] == "after", "no part of the refused config was applied"


def test_a_reload_onto_a_folder_another_daemon_watches_is_refused(tmp_path, emulator):
    other_root = tmp_path / "other"
    other = make_config(other_root, emulator.base_url)
    config = make_config(tmp_path, emulator.base_url)
    with Daemon(other) as holder, Daemon(config) as daemon:
        wait_for(lambda: '"ready"' in holder.log() and '"ready"' in daemon.log(), what="both daemons ready")
        _edit(config, lambda data: data["folders"].append(yaml.safe_load(other.read_text())["folders"][0]))
        _reload(daemon, '"reload_refused"')
        assert daemon.proc.poll() is None
        _drop(tmp_path / "inbox", "mine.wav")
        wait_for(lambda: _done_count(tmp_path) == 1, what="upload under the old config")
        assert daemon.stop() == 0 and holder.stop() == 0
    [refused] = [line for line in daemon.log().splitlines() if '"reload_refused"' in line]
    assert f"{other_root / 'inbox'} is already watched by ingestd pid {holder.proc.pid}" in refused
