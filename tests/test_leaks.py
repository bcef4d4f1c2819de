"""Nothing grows with use: reloads and status requests by the hundred and thousand leave RSS, descriptors and
threads where they were after warm-up."""

from __future__ import annotations

import http.client
import os
import signal

import pytest

from ingestd import queue as q

from .daemon import Daemon, drop, free_port, jobs_in, make_config, wait_for

SLOW = bool(os.environ.get("INGESTD_SLOW"))



def _usage(pid: int) -> dict[str, int]:
    status = dict(line.split(":", 1) for line in open(f"/proc/{pid}/status").read().splitlines())
    return {"rss_kib": int(status["VmRSS"].split()[0]), "threads": int(status["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd"))}


@pytest.mark.parametrize("reloads,requests", [
    pytest.param(60, 600, id="short"),
    pytest.param(500, 5000, id="long", marks=[pytest.mark.slow, pytest.mark.skipif(not SLOW, reason="INGESTD_SLOW=1")]),
])
def test_reloads_and_status_requests_leak_nothing(tmp_path, emulator_factory, reloads, requests):
    # A transcode that outlasts the run keeps a job polling through every reload.
    emulator = emulator_factory(transcode_delay=3600)
    port = free_port()
    config = make_config(tmp_path, emulator.base_url, status={"listen": f"127.0.0.1:{port}"}, log={"format": "json", "level": "info"})
    with Daemon(config) as daemon:
        drop(tmp_path, "polling.wav")
        wait_for(lambda: (jobs := jobs_in(tmp_path, q.QUEUED) + jobs_in(tmp_path, q.RUNNING))
                 and jobs[0].stage == q.TRANSCODE, what="a job polling its transcode")
        log = daemon.log_path.open()
        reloaded = 0

        def reload() -> None:
            nonlocal reloaded
            daemon.proc.send_signal(signal.SIGHUP)
            target = reloaded + 1
            reloaded += wait_for(lambda: log.read().count('"config_reloaded"'), what="reload applied")
            assert reloaded == target

        def status_requests(n: int) -> None:
            for i in range(n):
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
                connection.request("GET", ("/", "/metrics", "/healthz")[i % 3])
                assert connection.getresponse().read()
                connection.close()

        warm_up = reloads // 5
        for i in range(reloads):
            if i == warm_up:
                before = _usage(daemon.proc.pid)
            reload()
            status_requests(requests // reloads)
        after = _usage(daemon.proc.pid)
        assert jobs_in(tmp_path, q.FAILED) == []
        assert daemon.stop() == 0
    assert after["fds"] <= before["fds"] + 3, (before, after)
    assert after["threads"] <= before["threads"] + 2, (before, after)
    assert after["rss_kib"] <= before["rss_kib"] * 1.10 + 4096, (before, after)
