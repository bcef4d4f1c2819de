"""The status listener: Prometheus metrics after a real upload, the health check, and the page as a browser renders it."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from ingestd import queue as q
from ingestd.config import load_config
from ingestd.service import Service
from ingestd.status_server import StatusServer

from .daemon import Daemon, drop, free_port, jobs_in, make_config, wait_for
from .png import read_png

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")



def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def _samples(text: str) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_metrics_after_an_upload(tmp_path, emulator):
    port = free_port()
    config = make_config(tmp_path, emulator.base_url, status={"listen": f"127.0.0.1:{port}"})
    base = f"http://127.0.0.1:{port}"
    with Daemon(config) as daemon:
        wait_for(lambda: _get(base + "/healthz")[0] == 200, what="status listener")
        size = drop(tmp_path, "episode.wav").stat().st_size
        wait_for(lambda: jobs_in(tmp_path, q.DONE), what="done job")
        status, text = _get(base + "/metrics")
        assert daemon.stop() == 0
    assert status == 200
    metrics = _samples(text)
    assert metrics[("ingestd_jobs", (("state", "done"),))] == 1
    assert metrics[("ingestd_jobs", (("state", "queued"),))] == 0
    assert metrics[("ingestd_uploaded_bytes_total", ())] == size
    assert metrics[("ingestd_part_upload_seconds_count", ())] == 1
    assert metrics[("ingestd_api_request_seconds_count", (("endpoint", "POST /media/create"),))] == 1
    assert metrics[("ingestd_api_request_seconds_count", (("endpoint", "GET /media/{id}"),))] >= 1
    assert metrics[("ingestd_last_success_timestamp_seconds", ())] > 0
    assert metrics[("ingestd_api_paused", ())] == 0
    assert not [k for k in metrics if k[0] == "ingestd_api_errors_total"]


def test_api_errors_are_counted_by_class(tmp_path, emulator):
    port = free_port()
    config = make_config(tmp_path, emulator.base_url, token="not-the-token", status={"listen": f"127.0.0.1:{port}"})
    base = f"http://127.0.0.1:{port}"
    with Daemon(config) as daemon:
        wait_for(lambda: _get(base + "/healthz")[0] == 200, what="status listener")
        drop(tmp_path, "episode.wav")
        wait_for(lambda: jobs_in(tmp_path, q.HELD), what="job held for its credentials")
        metrics = _samples(_get(base + "/metrics")[1])
        assert daemon.stop() == 0
    assert metrics[("ingestd_jobs", (("state", "held"),))] == 1
    errors = {dict(k[1])["error_class"]: v for k, v in metrics.items() if k[0] == "ingestd_api_errors_total"}
    assert errors == {"auth": 1}


def test_healthz_turns_503_when_the_main_loop_stalls(tmp_path, emulator):
    port = free_port()
    config = load_config(make_config(tmp_path, emulator.base_url, status={"listen": f"127.0.0.1:{port}"}))
    service = Service(config)
    server = StatusServer(config.status.listen, service)
    server.start()
    try:
        url = f"http://127.0.0.1:{port}/healthz"
        service.heartbeat()
        assert _get(url) == (200, "ok\n")
        service.stall_after = 0.2  # the main loop is not running here: nothing ticks
        status, body = wait_for(lambda: (r := _get(url))[0] == 503 and r, timeout=5, what="503")
        assert body.startswith("stalled")
        service.heartbeat()
        service.stall_after = 60
        for _ in range(5):
            service.breaker.failure()  # five transient failures in a row open the breaker
        assert _get(url) == (200, "ok; API unreachable, paused\n")
    finally:
        server.stop()
        service.client.close()


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_status_page_in_a_browser(tmp_path, emulator):
    port = free_port()
    config = make_config(tmp_path, emulator.base_url, status={"listen": f"127.0.0.1:{port}"})
    with Daemon(config) as daemon:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/healthz")[0] == 200, what="status listener")
        (tmp_path / "inbox" / "notes <draft>.mp3").write_bytes(b"meeting notes, not audio\n" * 40)
        drop(tmp_path, "good & proper.wav")
        wait_for(lambda: jobs_in(tmp_path, q.DONE) and jobs_in(tmp_path, q.FAILED), what="one done, one failed")
        [failed] = jobs_in(tmp_path, q.FAILED)
        profile = tmp_path / "chromium-profile"
        result = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--dump-dom", f"http://127.0.0.1:{port}/"],
            capture_output=True, text=True, timeout=90,
        )
        assert daemon.stop() == 0
    dom = result.stdout
    assert "<title>ingestd status</title>" in dom, result.stderr[-2000:]
    assert re.search(r'<tr id="count-done"><td data-label="state">done</td><td data-label="jobs">1</td></tr>', dom)
    assert re.search(r'<tr id="count-failed"><td data-label="state">failed</td><td data-label="jobs">1</td></tr>', dom)
    # The file name is text, not markup: the browser made no <draft> element of it.
    assert "notes &lt;draft&gt;.mp3" in dom
    assert "<draft>" not in dom
    assert "good &amp; proper.wav" in dom
    reason = failed.error.split(" — ")[0]
    assert reason and reason.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;") in dom
    assert f'<td data-label="folder">{tmp_path / "inbox"}</td><td data-label="state">watching</td>' in dom


def chromium(url: str, profile, *, width: int, height: int, screenshot=None) -> str:
    """The page as headless Chromium renders it in a window of this size: its DOM, and a screenshot if asked."""
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars",
            f"--user-data-dir={profile}", f"--window-size={width},{height}"]
    args += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    result = subprocess.run([*args, url], capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def a_page_of_everything(tmp_path, emulator, port: int) -> Service:
    """A service whose queue holds one job in every situation the page shows, and an optional share not mounted."""
    path = make_config(tmp_path, emulator.base_url, status={"listen": f"127.0.0.1:{port}"})
    data = yaml.safe_load(path.read_text())
    data["folders"].append({"path": str(tmp_path / "nas"), "optional": True, "done_dir": str(tmp_path / "nas-done"),
                            "failed_dir": str(tmp_path / "nas-failed")})
    path.write_text(yaml.safe_dump(data))
    service = Service(load_config(path))
    queue = service.queue
    inbox = tmp_path / "inbox"

    def job(name: str) -> q.Job:
        return queue.enqueue(path=str(inbox / name), root=str(inbox), relpath=name, size=12 * 2**20, mtime_ns=1,
                             inode=hash(name) % 10**6)

    published = job("shows/mytalk/mytalk_ep12.wav")
    queue.update(published.id, media_id="m-12", media=json.dumps(
        {"id": "m-12", "title": "Mytalk <12> & friends", "assets": {"hls_player_url": "https://player.example/m-12?a=1&b=2"}}))
    queue.finish(published.id, q.DONE)
    held = job("shows/pricey/a-very-long-file-name-that-a-phone-must-wrap-rather-than-cut-off-at-the-edge.wav")
    queue.hold(held.id, "budget: transcoding costs $0.0042, more than upload.max_cost_usd ($0.001)")
    uploading = job("uploading-now.wav")
    queue.claim_job(uploading.id, q.worker_id("worker-0"))
    service.progress.update(uploading.id, 3 * 2**20, 12 * 2**20)
    job("waiting-its-turn.wav")
    failed = job("notes.mp3")
    queue.update(failed.id, error="not audio: no known format in the first bytes")
    queue.finish(failed.id, q.FAILED)
    return service


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_status_page_on_a_desktop_and_on_a_phone(tmp_path, emulator):
    port = free_port()
    service = a_page_of_everything(tmp_path, emulator, port)
    service.watcher.start()
    server = StatusServer(service.config.status.listen, service)
    server.start()
    url, profile = f"http://127.0.0.1:{port}/", tmp_path / "chromium-profile"
    try:
        dom = chromium(url, profile, width=390, height=844)
        shots = {}
        # Windows tall enough to hold the whole page, so the screenshots show all of it.
        for name, (width, height) in {"desktop": (1280, 1100), "phone": (390, 2200)}.items():
            shots[name] = tmp_path / f"status-{name}.png"
            chromium(url, profile, width=width, height=height, screenshot=shots[name])
    finally:
        server.stop()
        service.watcher.stop()
        service.client.close()

    # The title links to the player; the title is text, the URL an attribute.
    assert '<a href="https://player.example/m-12?a=1&amp;b=2">Mytalk &lt;12&gt; &amp; friends</a>' in dom
    # One section for what is under way: the upload with its bar, and the job waiting its turn.
    progress = dom[dom.index('id="in-progress"'):dom.index('id="held"')]
    assert "uploading-now.wav" in progress and "waiting-its-turn.wav" in progress
    assert '<progress max="12582912" value="3145728"></progress> 25% of 12.0MiB' in progress
    assert "<h2>Uploading</h2>" not in dom
    # A held job says why, and what to do about it.
    held = dom[dom.index('id="held"'):]
    assert "more than upload.max_cost_usd ($0.001)" in held
    assert "top up the account balance or raise upload.max_cost_usd" in held
    assert f'<td data-label="folder">{tmp_path / "nas"}</td><td data-label="state">missing (optional' in dom

    for name, shot in shots.items():
        width, height, rows = read_png(shot)
        assert (width, height) == ((1280, 1100) if name == "desktop" else (390, 2200)), name
        white = (255, 255, 255)
        ink = sum(1 for row in rows[::4] for pixel in row[::4] if pixel != white)
        assert ink > 500, f"{name}: the screenshot is (nearly) blank"
        # Nothing runs off the right edge: the last columns are page margin, on every line of the screen.
        edge = [(y, row[x]) for y, row in enumerate(rows) for x in range(width - 6, width) if row[x] != white]
        assert not edge, f"{name}: content cut off at the right edge (first at y={edge[0][0]}), see {shot}"


def _threads_and_fds(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/task")), len(os.listdir(f"/proc/{pid}/fd"))


def test_a_flood_of_idle_connections_starves_neither_healthz_nor_uploads(tmp_path, emulator):
    """1,100 connections that never send a byte, against a daemon under the common nofile limit of 1024."""
    port = free_port()
    config = make_config(tmp_path, emulator.base_url, status={"listen": f"127.0.0.1:{port}"})
    base = f"http://127.0.0.1:{port}"
    idle: list[socket.socket] = []
    with Daemon(config, prefix=["prlimit", "--nofile=1024:1024", "--"]) as daemon:
        wait_for(lambda: _get(base + "/healthz")[0] == 200, what="status listener")
        try:
            for _ in range(1100):
                conn = socket.socket()
                conn.setblocking(False)
                conn.connect_ex(("127.0.0.1", port))
                idle.append(conn)
            drop(tmp_path, "during the flood.wav")
            # Connections beyond the limit wait in the kernel's backlog; idle ones are closed after a few seconds.
            wait_for(lambda: _get(base + "/healthz")[0] == 200, timeout=60, what="/healthz during the flood")
            wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=60, what="the file dropped during the flood uploaded")
            threads, fds = _threads_and_fds(daemon.proc.pid)
        finally:
            for conn in idle:
                conn.close()
        assert daemon.stop() == 0
    assert threads < 40, f"{threads} threads: connections must not cost a thread each"
    assert fds < 1024 - 100, f"{fds} descriptors open: the listener must leave the rest of the daemon room"
    assert "Too many open files" not in daemon.log()


def test_status_token_guards_every_page_but_healthz(tmp_path, emulator):
    port = free_port()
    token = "status-0123456789abcdef"
    config = make_config(tmp_path, emulator.base_url, status={"listen": f"127.0.0.1:{port}", "token": token})
    base = f"http://127.0.0.1:{port}"

    def get(path: str, authorization: str | None = None) -> int:
        request = urllib.request.Request(base + path, headers={"Authorization": authorization} if authorization else {})
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    with Daemon(config) as daemon:
        wait_for(lambda: _get(base + "/healthz")[0] == 200, what="status listener")
        answers = {(path, auth): get(path, auth) for path in ("/", "/metrics", "/healthz")
                   for auth in (None, "Bearer wrong-token-value", f"Basic {token}", f"Bearer {token}")}
        assert daemon.stop() == 0
    assert answers == {(path, auth): 200 if path == "/healthz" or auth == f"Bearer {token}" else 401
                       for path, auth in answers}


@pytest.mark.parametrize("status,warned", [
    ({"listen": "0.0.0.0:9137"}, True), ({"listen": "[::]:9137"}, True), ({"listen": "status.example:9137"}, True),
    ({"listen": "0.0.0.0:9137", "token": "status-0123456789"}, False), ({"listen": "127.0.0.1:9137"}, False),
    ({"listen": "[::1]:9137"}, False), ({"listen": "localhost:9137"}, False),
])
def test_check_config_warns_of_an_open_listener_without_a_token(tmp_path, status, warned):
    config = make_config(tmp_path, "http://127.0.0.1:9", status=status)
    result = subprocess.run([sys.executable, "-m", "ingestd", "check-config", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "listen:" in text)
    expected = f"{config}:{line}: status.listen: warning: {status['listen']} can be reached from other hosts"
    assert (expected in result.stderr) is warned, result.stderr
