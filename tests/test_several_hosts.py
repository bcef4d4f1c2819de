"""Several daemons on one PostgreSQL queue, watching one shared folder: each file becomes one job and one media,
and the upload of a daemon killed mid-way is taken over by another and resumed from its acknowledged parts."""

from __future__ import annotations

import dataclasses
import json
import re
import os
import shutil
import signal
import textwrap
import time
import urllib.request

import psycopg
import pytest
import yaml

from ingestd import queue as q
from ingestd.cli import main
from ingestd.client import StreamClient
from ingestd.config import load_config
from ingestd.emulator import Faults
from ingestd.errors import ConfigError
from ingestd.folderlock import LOCK_NAME
from ingestd.pipeline import Pipeline

from .daemon import Daemon, clock_off_by, drop, free_port, make_config, wait_for
from .postgres import PostgresServer, server_binaries
from .sim import Simulation
from .test_crash import assert_filed_once

MIB = 1024 * 1024
LEASE = 4.0  # seconds: a dead daemon's job is taken over this long after its last heartbeat



def _daemons(tmp_path, emulator, url, count, **top):
    """``count`` daemons, each with its own state folder and node name, all on the folder ``tmp_path/share``."""
    share = tmp_path / "share"
    folder = {"path": str(share / "inbox"), "done_dir": str(share / "done"), "failed_dir": str(share / "failed")}
    for name in ("inbox", "done", "failed"):
        (share / name).mkdir(parents=True, exist_ok=True)
    return share, [Daemon(make_config(tmp_path / f"host{n}", emulator.base_url, upload={"workers": 1}, folder=folder,
                                      queue_url=url, node_name=f"host{n}", queue_lease=LEASE, **top))
                   for n in range(count)]


def _acked_at(url, job_id):
    """When each part of a job was acknowledged: a part sent again would be acknowledged anew."""
    with psycopg.connect(url) as db:
        return dict(db.execute("SELECT idx, acked_at FROM parts WHERE job_id = %s", (job_id,)).fetchall())


def test_three_daemons_share_a_folder_and_a_killed_ones_upload_resumes_elsewhere(tmp_path, emulator_factory,
                                                                                 postgres_url, capsys):
    # Each part takes 0.3 s at the emulator: a 12 MiB file (three 5 MiB parts) is mid-upload long enough to kill.
    emulator = emulator_factory(faults=Faults(slow=1.0, slow_seconds=0.3, endpoints=frozenset({"part"})))
    ports = [free_port() for _ in range(3)]
    share, daemons = _daemons(tmp_path, emulator, postgres_url, 3)
    for daemon, port in zip(daemons, ports):  # each with its status listener
        config = yaml.safe_load(daemon.config.read_text())
        daemon.config.write_text(yaml.safe_dump(config | {"status": {"listen": f"127.0.0.1:{port}"}}))
    queue = q.JobQueue(postgres_url)
    try:
        for daemon in daemons:
            daemon.start()
        for daemon in daemons:
            wait_for(lambda: '"event": "ready"' in daemon.log(), timeout=30, what="every daemon ready")
        names = [f"take{n}.wav" for n in range(5)]
        sources = {name: drop(share, name, size=12 * MIB, freq=200 + 50 * n).read_bytes()
                   for n, name in enumerate(names)}
        # A copy of one file under another name: under duplicates: skip only one of the two becomes a media.
        shutil.copy(share / "inbox" / names[0], share / "staging" / "copy.wav")
        os.replace(share / "staging" / "copy.wav", share / "inbox" / "copy.wav")

        def mid_upload():
            return next((j for j in queue.list(states=(q.RUNNING,)) if j.stage == q.UPLOAD and j.acked_parts), None)

        victim_job = wait_for(mid_upload, timeout=30, what="a job with an acknowledged part, still uploading")
        victim = daemons[int(victim_job.node.removeprefix("host"))]
        victim.proc.send_signal(signal.SIGKILL)
        victim.wait_exit(10)
        acked_before = _acked_at(postgres_url, victim_job.id)
        assert acked_before

        wait_for(lambda: queue.counts()[q.DONE] + queue.counts()[q.SKIPPED] == 6, timeout=90,
                 what="every file done or skipped as a duplicate")
        survivors = [d for d in daemons if d is not victim]
        # Each daemon says which node it is, on its page and in its metrics.
        port, node = ports[daemons.index(survivors[0])], survivors[0].config.parent.name
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            assert f'ingestd_node_info{{node="{node}",queue="postgresql"}} 1.0' in response.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            assert f"node {node}" in response.read().decode()
        for daemon in survivors:
            assert daemon.stop() == 0

        # The dead daemon's job was finished by another one, without sending its acknowledged parts again.
        taken = queue.get(victim_job.id)
        assert taken.state == q.DONE and taken.node != victim_job.node
        acked_after = _acked_at(postgres_url, victim_job.id)
        assert {i: acked_after[i] for i in acked_before} == acked_before
        claims = [e["detail"]["owner"] for e in queue.events(victim_job.id) if e["event"] == "claimed"]
        assert q.node_of(claims[-1]) != victim_job.node

        # Exactly one job per file, one media per content, every file filed once, nothing left behind.
        jobs = queue.list(limit=100)
        assert sorted(j.relpath for j in jobs) == sorted([*names, "copy.wav"])
        media = emulator.all_media()
        assert len(media) == 5
        assert sorted(emulator.media_file(m["id"]).read_bytes() for m in media) == sorted(sources.values())
        assert sorted(j.outcome for j in jobs) == ["done"] * 5 + ["duplicate"]
        filed = sorted(p.name for p in (share / "done").iterdir() if not p.name.endswith(".json"))
        assert filed == sorted([*names, "copy.wav"])
        assert [p.name for p in (share / "inbox").iterdir()] == [LOCK_NAME]  # every file filed
        statuses = {name: json.loads((share / "done" / f"{name}.ingestd.json").read_text())["status"]
                    for name in [*names, "copy.wav"]}
        # Whichever of the two identical files finishes its upload first is published; the other is its duplicate.
        assert sorted([statuses[names[0]], statuses["copy.wav"]]) == ["done", "duplicate"]
        assert all(statuses[name] == "done" for name in names[1:])

        # Which host did what is on show.
        assert main(["jobs", "list", "--config", str(survivors[0].config)]) == 0
        listing = capsys.readouterr().out
        assert "node" in listing and {j.node for j in jobs} <= {f"host{n}" for n in range(3)}
        assert all(j.node in listing for j in jobs)
        assert main(["status", "--config", str(survivors[0].config)]) == 0
        status = capsys.readouterr().out
        assert f"node {survivors[0].config.parent.name}" in status
        # The survivors stopped cleanly and released their names; the killed daemon is shown as last heard from.
        assert f"daemons: {victim.config.parent.name} on {os.uname().nodename} (pid {victim.proc.pid}, seen" in status
        assert not any(f"{d.config.parent.name} on" in status for d in survivors)
    finally:
        for daemon in daemons:
            if daemon.proc is not None and daemon.proc.poll() is None:
                daemon.kill()
        queue.close()


@pytest.mark.parametrize("stage", [q.CREATE, q.FILE])
@pytest.mark.parametrize("store", ["sqlite", "postgresql"])
def test_a_worker_that_lost_its_lease_creates_and_moves_nothing(tmp_path, emulator, request, store, stage):
    """A worker that stalled past its lease (a long pause, a network cut) leaves the job to its new holder."""
    top = {"queue_url": request.getfixturevalue("postgres_url")} if store == "postgresql" else {}
    config = load_config(make_config(tmp_path, emulator.base_url, queue_lease=3, **top))
    path = drop(tmp_path, "late.wav")
    st = path.stat()
    queue = q.open_queue(config)
    job = queue.enqueue(path=str(path), root=str(tmp_path / "inbox"), relpath="late.wav", size=st.st_size,
                        mtime_ns=st.st_mtime_ns, inode=st.st_ino)
    queue.claim_job(job.id, "host-a:1:worker-0")
    queue.update(job.id, stage=stage, outcome=q.DONE if stage == q.FILE else None)
    stalled = queue.get(job.id)
    assert queue.claim("host-b:1:worker-0", now=queue.now() + 4).id == job.id  # host-a's lease ran out meanwhile

    with StreamClient.from_config(config.api) as client:
        Pipeline(config, queue, client).run(stalled, "host-a:1:worker-0")

    assert path.exists() and not (tmp_path / "done" / "late.wav").exists()
    assert emulator.all_media() == []
    after = queue.get(job.id)
    assert (after.state, after.lease_owner) == (q.RUNNING, "host-b:1:worker-0")
    queue.close()


@pytest.mark.parametrize("point", ["after_create", "between_parts", "after_complete", "before_move"])
def test_a_daemon_killed_at_any_step_is_finished_by_another_host_exactly_once(tmp_path, emulator, postgres_url, point):
    share, (first, second) = _daemons(tmp_path, emulator, postgres_url, 2)
    source = drop(share, "take.wav", size=12 * MIB)
    original = source.read_bytes()
    first.env["INGESTD_CRASH_AT"] = f"{point}:1"
    with first:
        assert first.wait_exit(30) == -9, f"the first daemon never reached {point}"
    queue = q.JobQueue(postgres_url)
    [job] = queue.list(states=(q.RUNNING,))
    assert job.node == "host0"
    with second:
        wait_for(lambda: queue.counts()[q.DONE] == 1, timeout=30, what="the job finished by the other host")
        assert second.stop() == 0
    job = queue.get(job.id)
    assert job.node == "host1"
    assert_filed_once(share, emulator, "take.wav", original, job)
    queue.close()


def test_a_bad_queue_url_or_node_name_is_a_config_error_with_its_line(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(textwrap.dedent(f"""\
        api: {{token: t}}
        state_dir: {tmp_path / "state"}
        queue_url: mysql://ingestd@db/ingestd
        node_name: "ingest 1:a"
        queue_lease: 1
        folders: [{{path: {tmp_path / "in"}, done_dir: {tmp_path / "done"}, failed_dir: {tmp_path / "failed"}}}]
        """))
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    problems = [str(p) for p in caught.value.problems]
    assert problems[0].startswith(f"{path}:3: queue_url: ") and "postgresql://" in problems[0]
    assert problems[1].startswith(f"{path}:4: node_name: ") and "letters, digits" in problems[1]
    assert problems[2].startswith(f"{path}:5: queue_lease: ")
    assert main(["check-config", "--config", str(path)]) == 78


def test_the_invariants_hold_with_three_daemons_on_one_queue_and_one_folder(tmp_path, postgres_url):
    """The simulation of tests/sim.py, its daemon killed now and then, with three daemons sharing the work: one
    host's clock ten minutes ahead, another's five minutes behind."""
    summary = Simulation(tmp_path, 6, hosts=3, queue_url=postgres_url, clock_offsets=(0.0, 600.0, -300.0)).run(16)
    assert summary["steps"] == 16 and sum(summary["invariant_checks_passed"].values()) > 0
    assert summary["events"].get("kill_and_restart"), summary["events"]  # this seed kills a daemon


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("INGESTD_SLOW"), reason="INGESTD_SLOW=1: half a minute of waiting for timeouts")
def test_a_daemon_whose_database_goes_away_exits_and_resumes_after_it_returns(tmp_path, emulator_factory):
    """docs/deployment.md: it exits with status 1, saying so; started again once the database is back, it goes on."""
    emulator = emulator_factory(faults=Faults(slow=1.0, slow_seconds=0.3, endpoints=frozenset({"part"})))
    server = PostgresServer(server_binaries()).start()
    try:
        url = server.url()
        share, (daemon,) = _daemons(tmp_path, emulator, url, 1)
        queue = q.JobQueue(url)
        with daemon:
            wait_for(lambda: '"event": "ready"' in daemon.log(), timeout=30, what="the daemon ready")
            drop(share, "take.wav", size=12 * MIB)
            wait_for(lambda: any(j.acked_parts for j in queue.list(states=(q.RUNNING,))), timeout=30,
                     what="an upload under way")
            queue.close()
            server.stop_server()
            assert daemon.wait_exit(90) == 1
            assert "no connection to the queue" in daemon.log()
        server.start_server()
        queue = q.JobQueue(url)
        with daemon:
            wait_for(lambda: queue.counts()[q.DONE] == 1, timeout=60, what="the upload finished after the outage")
            assert daemon.stop() == 0
        assert len(emulator.all_media()) == 1 and (share / "done" / "take.wav").exists()
        queue.close()
    finally:
        server.stop()


def test_a_second_daemon_under_a_running_daemons_node_name_refuses_to_start(tmp_path, emulator, postgres_url):
    # Two hosts cloned with one host name would both be "host0": the second would take the first's running jobs
    # back at its start-up. It refuses to start instead, naming the daemon that holds the name; systemd does not
    # restart it (exit status 78), and the first goes on undisturbed.
    share, (first,) = _daemons(tmp_path, emulator, postgres_url, 1)
    clone = Daemon(make_config(tmp_path / "clone", emulator.base_url, upload={"workers": 1}, queue_url=postgres_url,
                               node_name="host0", queue_lease=LEASE,
                               folder={"path": str(share / "inbox"), "done_dir": str(share / "done"),
                                       "failed_dir": str(share / "failed")}))
    with first:
        wait_for(lambda: '"event": "ready"' in first.log(), timeout=30, what="the first daemon ready")
        with clone:
            assert clone.wait_exit(30) == 78
        assert f"node_name 'host0' is held by a running daemon on {os.uname().nodename} (pid {first.proc.pid}" in clone.log()
        assert '"event": "ready"' not in clone.log()
        drop(share, "take.wav", size=6 * MIB)
        queue = q.JobQueue(postgres_url)
        wait_for(lambda: queue.counts()[q.DONE] == 1, timeout=60, what="the first daemon's upload")
        assert first.proc.poll() is None
        holder = queue.node_holder("host0")
        assert holder is not None and holder.pid == first.proc.pid
        assert first.stop() == 0
        assert queue.node_holder("host0") is None  # released by a clean stop
        queue.close()


def test_a_daemon_killed_and_started_again_holds_its_node_name_at_once(tmp_path, emulator, postgres_url):
    share, (daemon,) = _daemons(tmp_path, emulator, postgres_url, 1)
    with daemon:
        wait_for(lambda: '"event": "ready"' in daemon.log(), timeout=30, what="the daemon ready")
        killed = daemon.proc.pid
        daemon.kill()
    queue = q.JobQueue(postgres_url)
    assert queue.node_holder("host0").pid == killed  # a kill leaves the row behind
    with daemon:
        wait_for(lambda: daemon.log().count('"event": "ready"') == 2, timeout=30, what="the daemon ready again")
        assert queue.node_holder("host0").pid == daemon.proc.pid
        assert daemon.stop() == 0
    queue.close()


def test_a_daemon_whose_node_name_was_taken_over_stops(tmp_path, emulator, postgres_url):
    # Silent for longer than its lease (a frozen VM, a long network cut), its name may pass to another daemon;
    # it must not go on as a second "host0" when it wakes.
    share, (daemon,) = _daemons(tmp_path, emulator, postgres_url, 1)
    queue = q.JobQueue(postgres_url)
    with daemon:
        wait_for(lambda: '"event": "ready"' in daemon.log(), timeout=30, what="the daemon ready")
        holder = queue.node_holder("host0")
        other = dataclasses.replace(holder, instance="another-daemon", hostname="elsewhere", machine="elsewhere")
        assert queue.take_node(other, replacing=holder)
        assert daemon.wait_exit(30) == 78
    assert "was taken over by another daemon" in daemon.log()
    assert queue.node_holder("host0").instance == "another-daemon"  # not released: it is not this daemon's
    queue.close()


def test_a_host_whose_clock_is_ahead_does_not_take_a_live_daemons_job(tmp_path, emulator_factory, postgres_url):
    # Leases are stamped on the database's clock: a host ten minutes ahead (NTP broken) must not judge the lease
    # of a job another daemon is uploading as long run out, and take it from under it.
    emulator = emulator_factory(faults=Faults(slow=1.0, slow_seconds=1.0, endpoints=frozenset({"part"})))
    share, (honest, skewed) = _daemons(tmp_path, emulator, postgres_url, 2)
    skewed.env |= clock_off_by(600.0, tmp_path / "clock-ahead")
    port = free_port()
    config = yaml.safe_load(skewed.config.read_text())
    skewed.config.write_text(yaml.safe_dump(config | {"status": {"listen": f"127.0.0.1:{port}"}}))
    queue = q.JobQueue(postgres_url)
    with honest:
        wait_for(lambda: '"event": "ready"' in honest.log(), timeout=30, what="the first daemon ready")
        drop(share, "take.wav", size=20 * MIB)
        job = wait_for(lambda: next((j for j in queue.list(states=(q.RUNNING,)) if j.acked_parts), None),
                       timeout=30, what="the first daemon uploading")
        with skewed:
            wait_for(lambda: '"event": "ready"' in skewed.log(), timeout=30, what="the skewed daemon ready")
            wait_for(lambda: queue.get(job.id).state == q.DONE, timeout=60, what="the upload done")
            [warning] = [json.loads(line) for line in skewed.log().splitlines() if '"clock_off"' in line]
            assert -610 < warning["seconds"] < -590 and "ahead of the queue database's" in warning["message"]
            assert abs(queue.node_holder("host1").seen_at - time.time()) < 30  # its row is on the database's clock
            # Its status page reads the jobs' times on the same clock: just done, not ten minutes ago.
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
                page = response.read().decode()
            assert re.search(r'data-label="file">take\.wav</td>.*?data-label="finished">\d+s ago<', page), page
            assert skewed.stop() == 0
        assert honest.stop() == 0
    # While host0 uploaded, its lease was live: only host0 claimed the job. (Afterwards, between two polls of the
    # transcode, the job is free for either daemon to take.)
    events = [e["event"] for e in queue.events(job.id)]
    uploading = queue.events(job.id)[:events.index("upload_finished")]
    claims = [q.node_of(e["detail"]["owner"]) for e in uploading if e["event"] == "claimed"]
    assert claims == ["host0"], claims
    assert len(emulator.all_media()) == 1
    queue.close()
