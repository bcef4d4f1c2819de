"""One daemon per watched folder, unless daemons share a queue: a second one with its own queue refuses to start."""

from __future__ import annotations

import json
import os
import socket

import yaml

from ingestd import queue as q
from ingestd.folderlock import LOCK_NAME

from .daemon import Daemon, drop, jobs_in, make_config, wait_for


def test_a_second_daemon_on_the_same_folder_refuses_to_start_naming_the_first(tmp_path, emulator):
    first = make_config(tmp_path, emulator.base_url)
    other = tmp_path / "other"
    second = make_config(other, emulator.base_url)
    data = yaml.safe_load(second.read_text())
    data["folders"][0] = yaml.safe_load(first.read_text())["folders"][0]  # same inbox, its own state_dir
    second.write_text(yaml.safe_dump(data, sort_keys=False))
    with Daemon(first) as daemon:
        wait_for(lambda: '"ready"' in daemon.log(), what="first daemon ready")
        with Daemon(second) as intruder:
            assert intruder.wait_exit(30) == 1
        drop(tmp_path, "once.wav")
        wait_for(lambda: jobs_in(tmp_path, q.DONE), what="the file uploaded by the first daemon")
        holder = json.loads((tmp_path / "inbox" / LOCK_NAME).read_text())
        assert daemon.stop() == 0
    assert holder == {"host": socket.gethostname(), "pid": daemon.proc.pid, "state_dir": str(tmp_path / "state")}
    [refusal] = [json.loads(line) for line in intruder.log().splitlines() if '"folder_taken"' in line]
    assert f"{tmp_path / 'inbox'} is already watched by ingestd pid {daemon.proc.pid} on {socket.gethostname()}" \
           f" (state_dir {tmp_path / 'state'})" in refusal["error"]
    assert len(emulator.all_media()) == 1
    assert jobs_in(other, q.DONE) == []
    # The lock goes with the daemon: the second one starts now.
    with Daemon(second) as successor:
        wait_for(lambda: '"ready"' in successor.log(), what="second daemon ready once the first has stopped")
        assert successor.stop() == 0


def _on_inbox_of(tmp_path, name, emulator, **top):
    """A daemon config of its own (state folder, queue) watching ``tmp_path``'s inbox."""
    config = make_config(tmp_path / name, emulator.base_url, **top)
    data = yaml.safe_load(config.read_text())
    data["folders"][0] = yaml.safe_load((tmp_path / "config.yaml").read_text())["folders"][0]
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    return config


def test_daemons_on_one_shared_queue_share_a_folder_that_a_daemon_on_another_queue_may_not_watch(
        tmp_path, emulator, postgres):
    queue_url = postgres.url()
    first = make_config(tmp_path, emulator.base_url, queue_url=queue_url, node_name="ingest-1")
    partner = _on_inbox_of(tmp_path, "partner", emulator, queue_url=queue_url, node_name="ingest-2")
    own_sqlite = _on_inbox_of(tmp_path, "own-sqlite", emulator)
    other_queue = _on_inbox_of(tmp_path, "other-queue", emulator, queue_url=postgres.url(), node_name="ingest-3")
    with Daemon(first) as one, Daemon(partner) as two:
        for daemon in (one, two):
            wait_for(lambda: '"ready"' in daemon.log(), what="both daemons on the shared queue ready")
        for config in (own_sqlite, other_queue):
            with Daemon(config) as intruder:
                assert intruder.wait_exit(30) == 1
            [refusal] = [json.loads(line) for line in intruder.log().splitlines() if '"folder_taken"' in line]
            assert f"{tmp_path / 'inbox'} is already watched by ingestd pid" in refusal["error"]
            assert "queue postgresql://" in refusal["error"] and "different queues" in refusal["error"]
        drop(tmp_path, "once.wav")
        shared = q.JobQueue(queue_url)
        wait_for(lambda: shared.counts()[q.DONE] == 1, what="the file uploaded once by the shared-queue daemons")
        shared.close()
        assert one.stop() == 0 and two.stop() == 0
    assert len(emulator.all_media()) == 1
    # The lock file still names the first queue; its daemons have gone, so a daemon on another queue starts now.
    assert json.loads((tmp_path / "inbox" / LOCK_NAME).read_text())["queue"].startswith("postgresql://")
    with Daemon(other_queue) as successor:
        wait_for(lambda: '"ready"' in successor.log(), what="the daemon on the other queue ready")
        assert successor.stop() == 0


def test_a_daemon_on_a_shared_queue_may_not_watch_a_folder_of_a_daemon_with_its_own_queue(tmp_path, emulator,
                                                                                          postgres_url):
    own = make_config(tmp_path, emulator.base_url)
    shared = _on_inbox_of(tmp_path, "shared", emulator, queue_url=postgres_url)
    with Daemon(own) as daemon:
        wait_for(lambda: '"ready"' in daemon.log(), what="the daemon with its own queue ready")
        with Daemon(shared) as intruder:
            assert intruder.wait_exit(30) == 1
        assert f"is already watched by ingestd pid {daemon.proc.pid}" in intruder.log()
        assert daemon.stop() == 0
    # Once the first has gone, the folder is free for the shared-queue daemon.
    with Daemon(shared) as successor:
        wait_for(lambda: '"ready"' in successor.log(), what="the shared-queue daemon ready")
        assert successor.stop() == 0


def test_a_lock_file_planted_as_a_symlink_or_a_fifo_is_never_followed_or_truncated(tmp_path, emulator):
    # Anyone who may drop files may plant the lock's name: as a link to the queue itself, the daemon would
    # truncate it at start; as a FIFO, it would fail to start. It is neither followed nor used.
    config = make_config(tmp_path, emulator.base_url)
    precious = tmp_path / "precious.db"
    precious.write_bytes(b"rows that must survive\n")
    (tmp_path / "inbox" / LOCK_NAME).symlink_to(precious)
    with Daemon(config) as daemon:
        wait_for(lambda: '"ready"' in daemon.log(), what="the daemon ready")
        drop(tmp_path, "once.wav")
        wait_for(lambda: jobs_in(tmp_path, q.DONE), what="the file uploaded")
        assert daemon.stop() == 0
    assert precious.read_bytes() == b"rows that must survive\n"
    [warning] = [json.loads(line) for line in daemon.log().splitlines() if '"folder_not_locked"' in line]
    assert "not a regular file" in warning["reason"]


def test_a_lock_file_planted_as_a_fifo_does_not_stop_the_daemon(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    os.mkfifo(tmp_path / "inbox" / LOCK_NAME)
    with Daemon(config) as daemon:
        wait_for(lambda: '"ready"' in daemon.log() or daemon.proc.poll() is not None, what="the daemon ready")
        assert daemon.proc.poll() is None, daemon.log()[-2000:]
        assert daemon.stop() == 0
    assert "not a regular file" in daemon.log()
