"""One daemon per watched folder, unless daemons share a queue: a second one with its own queue refuses to start."""

from __future__ import annotations

import json
import socket

import yaml

from ingestd import queue as q
from ingestd.config import load_config
from ingestd.folderlock import LOCK_NAME, folders_are_exclusive

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


def test_daemons_sharing_a_queue_may_share_folders(tmp_path):
    own = load_config(make_config(tmp_path, "http://127.0.0.1:9"))
    shared = load_config(make_config(tmp_path, "http://127.0.0.1:9", queue_url="postgresql://ingestd:pw@db.example/ingestd"))
    assert folders_are_exclusive(own) and not folders_are_exclusive(shared)
