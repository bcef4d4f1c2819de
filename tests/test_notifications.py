"""Notifications as receivers see them: real HTTP receivers on loopback, a real program, a real Apprise target."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import random
import signal
import re
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ingestd import queue as q
from ingestd.cli import main
from ingestd.config import WebhookNotify, load_config
from ingestd.notify import FIRST_RETRY, MAX_RETRY_WAIT, Sender, WebhookTarget, retry_delay, targets_of

from .daemon import Daemon, drop, free_port, jobs_in, make_config, queue_of, wait_for

SECRET = "hook-secret-5f1c0b7e9a"
PASSWORD = "chat-password-93ac1d"


class Receiver:
    """A webhook receiver on loopback: records every request; answers as told (fail, hang, redirect)."""

    def __init__(self, *, fail_first: int = 0, hang: bool = False, trickle: bool = False, flood: bool = False,
                 redirect_to: str | None = None, on_request=None):
        self.fail_first = fail_first
        self.hang = hang
        self.trickle = trickle
        self.flood = flood
        self.redirect_to = redirect_to
        self.on_request = on_request
        self.requests: list[dict] = []
        self.released = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                record = {"path": self.path, "headers": dict(self.headers), "body": body,
                          "seen": receiver.on_request(body) if receiver.on_request else None}
                with receiver.lock:
                    receiver.requests.append(record)
                    n = len(receiver.requests)
                if receiver.hang:
                    receiver.released.wait(60)
                    return
                if receiver.trickle:
                    # Each byte quickly enough to keep a read timeout at bay, the whole answer never.
                    for byte in b"HTTP/1.1 200 OK\r\n" * 100:
                        if receiver.released.wait(0.1):
                            return
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                    return
                if receiver.flood:
                    # An error page that goes on and on: 10 GiB announced, sent until the client hangs up.
                    self.send_response(500)
                    self.send_header("Content-Length", str(10 * 2**30))
                    self.end_headers()
                    chunk = b"x" * 2**20
                    try:
                        while not receiver.released.is_set():
                            self.wfile.write(chunk)
                    except OSError:
                        pass
                    return
                if receiver.redirect_to and self.path == "/old":
                    self.send_response(307)
                    self.send_header("Location", receiver.redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                status = 500 if n <= receiver.fail_first else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no" if status == 500 else b"ok")

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def use_tls(self, tmp_path: Path) -> None:
        """Serve HTTPS with a self-signed certificate (which no client should trust)."""
        cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                        "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.url = f"https://127.0.0.1:{self.port}"

    def bodies(self) -> list[dict]:
        with self.lock:
            return [json.loads(r["body"]) for r in self.requests if r["path"] != "/old"]

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers():
    made: list[Receiver] = []

    def make(**kwargs) -> Receiver:
        made.append(Receiver(**kwargs))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def verify(request: dict, secret: str) -> bool:
    """What a receiver does: HMAC-SHA256 of the raw body with the shared secret, compared in constant time."""
    expected = "sha256=" + hmac.new(secret.encode(), request["body"], hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, request["headers"].get("X-Ingestd-Signature", ""))


RECORDER = """\
import json, os, sys
record = {"argv": sys.argv[1:], "stdin": sys.stdin.read(), "env": dict(os.environ)}
with open(sys.argv[1], "a") as out:
    out.write(json.dumps(record) + "\\n")
print("recorded", record["env"].get("INGESTD_EVENT_ID"))
sys.exit(int(os.environ.get("INGESTD_EXIT", "0")))
"""


def recorder(tmp_path: Path) -> tuple[Path, Path]:
    script = tmp_path / "on-event.py"
    script.write_text(RECORDER)
    return script, tmp_path / "commands.jsonl"


def recorded(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def cli(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(argv))
    return code, out.getvalue()



# -- end to end, through the daemon -------------------------------------------------------------


def test_webhook_command_and_apprise_hear_of_done_and_failed_jobs(tmp_path, emulator, receivers):
    done_dir = tmp_path / "done"
    # The receiver notes whether the file had reached the done folder when the notification came.
    hook = receivers(fail_first=1, on_request=lambda body: sorted(p.name for p in done_dir.iterdir()))
    chat = receivers()
    script, out = recorder(tmp_path)
    port = free_port()
    config = make_config(tmp_path, emulator.base_url, status={"listen": f"127.0.0.1:{port}"}, notify=[
        {"webhook": hook.url + "/hooks/ingestd", "secret": SECRET, "events": ["done", "failed"]},
        {"command": [sys.executable, str(script), str(out), "{media_id}", "{title}", "{assets.hls_url|reason}"],
         "events": ["done", "failed"]},
        {"apprise": f"json://127.0.0.1:{chat.port}/chat", "events": ["failed"]},
        # Nobody listens here: its failures are logged, its password never.
        {"apprise": f"json://ingestd:{PASSWORD}@127.0.0.1:{free_port()}/chat", "events": ["done"]},
    ])
    with Daemon(config, env={"AIOZ_STREAM_TOKEN": "daemon-only-token"}) as daemon:
        drop(tmp_path, "episode.wav")
        (tmp_path / "inbox" / "notes.wav").write_bytes(b"meeting notes, not audio\n" * 50)
        wait_for(lambda: len(jobs_in(tmp_path, q.DONE)) == 1 and len(jobs_in(tmp_path, q.FAILED)) == 1, what="both ended")
        wait_for(lambda: len(hook.bodies()) >= 3 and len(recorded(out)) == 2 and chat.requests, timeout=30,
                 what="every target notified (the webhook after one refusal)")
        wait_for(lambda: "notification_failed" in daemon.log() and "apprise json://ingestd:" in daemon.log(),
                 what="the unreachable chat's failure logged")
        code, status = cli("status", "--config", str(config))
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as response:
            page = response.read().decode()
        assert daemon.stop() == 0
    [done], [failed] = jobs_in(tmp_path, q.DONE), jobs_in(tmp_path, q.FAILED)

    # The webhook: a refused try, then each event once, signed, keyed, and after the file was filed.
    assert [r["headers"]["Idempotency-Key"] for r in hook.requests].count(f"{done.id}:done") in (1, 2)
    assert all(verify(r, SECRET) for r in hook.requests)
    by_event = {json.loads(r["body"])["event"]: r for r in hook.requests}
    report = json.loads((done_dir / "episode.wav.ingestd.json").read_text())
    assert json.loads(by_event["done"]["body"]) == report | {"event": "done", "job_id": done.id}
    assert by_event["done"]["headers"]["Idempotency-Key"] == f"{done.id}:done"
    assert "episode.wav" in by_event["done"]["seen"]
    error_report = json.loads((tmp_path / "failed" / "notes.wav.error.json").read_text())
    assert json.loads(by_event["failed"]["body"]) == error_report | {"event": "failed", "job_id": failed.id}

    # The command: placeholders filled from the report, the report on stdin, a clean environment.
    runs = {json.loads(r["stdin"])["event"]: r for r in recorded(out)}
    assert runs["done"]["argv"][1:] == [done.media_id, "episode", report["assets"]["hls_url"]]
    assert runs["failed"]["argv"][1:] == ["", "", error_report["reason"]]
    env = runs["done"]["env"]
    assert env["INGESTD_EVENT_ID"] == f"{done.id}:done" and env["INGESTD_MEDIA_ID"] == done.media_id
    assert "AIOZ_STREAM_TOKEN" not in env and all(k.startswith("INGESTD_") or k in ("PATH", "LANG") for k in env)
    assert f"recorded {done.id}:done" in daemon.log()

    # Apprise: one line a person reads, for the failed file only.
    [message] = [json.loads(r["body"]) for r in chat.requests]
    assert message["message"].startswith("Failed: notes.wav — ") and "ingestd" in message["title"]

    assert code == 0 and "webhook http://127.0.0.1" in status and "0 pending, 0 undeliverable" in status
    assert f'ingestd_notifications_sent_total{{target="webhook http://127.0.0.1:{hook.port}/hooks/ingestd"}} 2.0' in metrics
    assert f'ingestd_notifications_failed_total{{target="webhook http://127.0.0.1:{hook.port}/hooks/ingestd"}} 1.0' in metrics
    assert "ingestd_notifications_pending{" in metrics
    assert "<h2>Notifications</h2>" in page and f"webhook http://127.0.0.1:{hook.port}/hooks/ingestd" in page
    assert SECRET not in daemon.log() and SECRET not in status
    assert PASSWORD not in daemon.log() and PASSWORD not in status and PASSWORD not in metrics and PASSWORD not in page


def test_a_hung_receiver_delays_only_its_own_notifications(tmp_path, emulator, receivers):
    hung, live = receivers(hang=True), receivers()
    config = make_config(tmp_path, emulator.base_url, notify=[
        {"webhook": hung.url + "/hook", "events": ["done"]},
        {"webhook": live.url + "/hook", "events": ["done"]},
    ])
    with Daemon(config) as daemon:
        drop(tmp_path, "one.wav")
        wait_for(lambda: hung.requests, what="the hung receiver to be called")
        drop(tmp_path, "two.wav", seconds=2.0)
        # While the first receiver still holds its connection, uploads and the other target go on.
        wait_for(lambda: len(live.bodies()) == 2, what="the live receiver to hear of both files")
        assert len(jobs_in(tmp_path, q.DONE)) == 2 and not hung.released.is_set()
        code, status = cli("status", "--config", str(config))
        assert f"webhook http://127.0.0.1:{hung.port}/hook: 2 pending" in status
        assert daemon.stop() == 0


def test_held_then_done_then_duplicate_reach_a_command_in_order_and_a_reload_brings_new_targets(tmp_path, emulator,
                                                                                               receivers):
    script, out = recorder(tmp_path)
    hook = receivers()
    command = {"command": [sys.executable, str(script), str(out), "{event}"], "events": ["held", "done", "duplicate"]}
    config = make_config(tmp_path, emulator.base_url, upload={"max_cost_usd": 0}, notify=[command])
    with Daemon(config) as daemon:
        drop(tmp_path, "episode.wav")
        wait_for(lambda: recorded(out), what="the held event")
        # A budget that covers it, and a webhook as well: the job goes on, and the new target hears of it.
        make_config(tmp_path, emulator.base_url, notify=[command, {"webhook": hook.url + "/hook", "events": ["done"]}])
        daemon.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(recorded(out)) == 2 and hook.requests, what="done told to both targets")
        drop(tmp_path, "copy.wav")
        wait_for(lambda: len(recorded(out)) == 3, what="the duplicate told")
        assert daemon.stop() == 0
    held, done, duplicate = (json.loads(r["stdin"]) for r in recorded(out))
    assert [held["event"], done["event"], duplicate["event"]] == ["held", "done", "duplicate"]
    assert held["job_id"] == done["job_id"] and held["reason"].startswith("budget: ") and held["status"] == "held"
    assert duplicate["status"] == "duplicate" and done["job_id"] in duplicate["reason"]
    assert [b["event"] for b in hook.bodies()] == ["done"]


def test_a_one_shot_upload_notifies_too(tmp_path, emulator, receivers):
    hook = receivers()
    config = make_config(tmp_path, emulator.base_url, notify=[{"webhook": hook.url + "/hook", "secret": SECRET}])
    source = drop(tmp_path, "episode.wav")
    result = subprocess.run([sys.executable, "-m", "ingestd", "upload", str(source), "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    [done] = jobs_in(tmp_path, q.DONE)
    assert [r["headers"]["Idempotency-Key"] for r in hook.requests] == [f"{done.id}:done"]
    assert queue_of(tmp_path).notifications(states=(q.PENDING, q.UNDELIVERABLE)) == []


@pytest.mark.parametrize("crash_at", ["after_move", "after_notification_accepted"])
def test_sigkill_around_delivery_loses_no_notification_and_repeats_carry_the_same_key(tmp_path, emulator, receivers,
                                                                                        crash_at):
    hook = receivers()
    config = make_config(tmp_path, emulator.base_url, notify=[{"webhook": hook.url + "/hook", "secret": SECRET}])
    with Daemon(config, env={"INGESTD_CRASH_AT": crash_at}) as daemon:
        drop(tmp_path, "episode.wav")
        assert daemon.wait_exit(60) == -9
    with Daemon(config) as daemon:
        wait_for(lambda: jobs_in(tmp_path, q.DONE), what="done after restart")
        wait_for(lambda: queue_of(tmp_path).notifications(states=(q.SENT,)), what="notification recorded as sent")
        assert daemon.stop() == 0
    [done] = jobs_in(tmp_path, q.DONE)
    keys = [r["headers"]["Idempotency-Key"] for r in hook.requests]
    # Killed after the receiver took it but before that was written down: sent again, with the same key and body.
    assert keys == [f"{done.id}:done"] * (2 if crash_at == "after_notification_accepted" else 1)
    assert len({r["body"] for r in hook.requests}) == 1 and all(verify(r, SECRET) for r in hook.requests)


def test_sigkill_while_a_receiver_holds_the_request_sends_it_again_after_the_restart(tmp_path, emulator, receivers):
    hook = receivers(hang=True)
    config = make_config(tmp_path, emulator.base_url, notify=[{"webhook": hook.url + "/hook", "secret": SECRET}])
    with Daemon(config) as daemon:
        drop(tmp_path, "episode.wav")
        wait_for(lambda: hook.requests, what="the delivery under way")
        daemon.kill()
    hook.hang = False
    with Daemon(config) as daemon:
        # At once, not when the killed run's lease would have run out.
        wait_for(lambda: queue_of(tmp_path).notifications(states=(q.SENT,)), timeout=20, what="sent after the restart")
        assert daemon.stop() == 0
    [done] = jobs_in(tmp_path, q.DONE)
    assert [r["headers"]["Idempotency-Key"] for r in hook.requests] == [f"{done.id}:done"] * 2
    assert hook.requests[0]["body"] == hook.requests[1]["body"] and verify(hook.requests[1], SECRET)


# -- the sender and the webhook, in process ---------------------------------------------------


def _queue_with_done_job(tmp_path: Path, targets) -> tuple[q.JobQueue, q.Job]:
    queue = q.JobQueue(q.queue_path(tmp_path / "state"))
    queue.outbox_targets = tuple(t.outbox for t in targets)
    job = queue.enqueue(path="/in/a.wav", root="/in", relpath="a.wav", size=1, mtime_ns=1, inode=1)
    queue.finish(job.id, q.DONE, report={"job_id": job.id, "media_id": "m1", "title": "A", "status": "done"})
    return queue, job


def _webhook(url: str, **kwargs) -> WebhookTarget:
    return WebhookTarget(WebhookNotify(webhook=url, secret=SECRET), **kwargs)


def test_backoff_starts_within_seconds_doubles_and_stops_at_ten_minutes():
    rng = random.Random(7)
    waits = [retry_delay(n, rng) for n in range(1, 12)]
    assert waits[0] <= 10 and FIRST_RETRY * 0.8 <= waits[0] <= FIRST_RETRY
    assert all(b > a for a, b in zip(waits[:6], waits[1:7]))
    assert all(MAX_RETRY_WAIT * 0.8 <= w <= MAX_RETRY_WAIT for w in waits[8:])


def test_a_receiver_down_for_a_day_makes_the_notification_undeliverable_until_retried(tmp_path, receivers):
    down = receivers(fail_first=10**6)
    target = _webhook(down.url + "/hook")
    queue, job = _queue_with_done_job(tmp_path, [target])
    sender = Sender(queue, target, rng=random.Random(1))
    start = time.time()
    # Tries at the backoff's pace over 25 hours of (given) time: each failure waits longer, none is dropped.
    now, tries = start, 0
    while now < start + 25 * 3600 and not queue.notifications(states=(q.UNDELIVERABLE,)):
        tries += sender.deliver_due(now=now)
        now += 60
    [given_up] = queue.notifications(states=(q.UNDELIVERABLE,))
    assert given_up.last_error.startswith("HTTP 500")
    assert 24 * 3600 <= now - start <= 24 * 3600 + 700 and 100 < tries < 200
    config = make_config(tmp_path, "http://127.0.0.1:9", notify=[{"webhook": down.url + "/hook", "secret": SECRET}])
    code, listing = cli("notify", "list", "--config", str(config))
    assert code == 0 and "undeliverable" in listing and job.id[:12] in listing and "HTTP 500" in listing
    code, status = cli("status", "--config", str(config))
    assert f"webhook http://127.0.0.1:{down.port}/hook: 0 pending, 1 undeliverable" in status
    code, said = cli("notify", "retry", "--config", str(config))
    assert code == 0 and said.startswith("1 undeliverable")
    down.fail_first = 0
    assert sender.deliver_due() == 1
    assert queue.notifications(states=(q.SENT,))[0].attempts == 1




def test_a_redirect_is_followed_on_the_same_host_only(receivers):
    final = receivers()
    same = receivers(redirect_to="/new")
    elsewhere = receivers(redirect_to=f"http://localhost:{final.port}/new")
    payload = json.dumps({"event": "done", "job_id": "j1"})
    outcome = _webhook(same.url + "/old").send(payload, "j1:done")
    assert outcome.accepted and [r["path"] for r in same.requests] == ["/old", "/new"]
    assert verify(same.requests[1], SECRET) and same.requests[1]["body"] == payload.encode()
    outcome = _webhook(elsewhere.url + "/old").send(payload, "j1:done")
    assert not outcome.accepted and "redirect to another host refused: http://localhost" in outcome.detail
    assert final.requests == []


def test_a_receiver_whose_certificate_does_not_verify_is_not_sent_the_report(tmp_path, receivers):
    impostor = receivers()
    impostor.use_tls(tmp_path)
    outcome = _webhook(impostor.url + "/hook").send(json.dumps({"event": "done", "job_id": "j1"}), "j1:done")
    assert not outcome.accepted and "CERTIFICATE_VERIFY_FAILED" in outcome.detail
    assert impostor.requests == []


@pytest.mark.parametrize("how", ["hang", "trickle"])
def test_a_receiver_that_does_not_answer_in_time_is_given_up_on(receivers, how):
    slow = receivers(**{how: True})
    outcome = _webhook(slow.url + "/hook", timeout=0.5).send("{}", "j1:done")
    assert not outcome.accepted and outcome.detail == "no answer within 0.5s"


def test_a_receiver_flooding_an_error_page_is_answered_from_its_first_bytes(receivers):
    # The whole page was read into memory for the 200 characters the log shows, until the deadline cut it off.
    flood = receivers(flood=True)
    outcome = _webhook(flood.url + "/hook", timeout=2).send("{}", "j1:done")
    assert not outcome.accepted and outcome.detail.startswith("HTTP 500: xxxx"), outcome.detail


def test_a_command_that_fails_or_hangs_is_retried_and_its_output_logged_truncated(tmp_path):
    script = tmp_path / "noisy.py"
    script.write_text("import sys, time\nprint('x' * 5000)\nsys.exit(3) if sys.argv[1] == 'fail' else time.sleep(30)\n")
    config = tmp_path / "config.yaml"
    make_config(tmp_path, "http://127.0.0.1:9", notify=[
        {"command": [sys.executable, str(script), "fail"]},
        {"command": [sys.executable, str(script), "hang"], "timeout": 0.5},
    ])
    failing, hanging = targets_of(load_config(config))
    payload = json.dumps({"event": "done", "job_id": "j1"})
    outcome = failing.send(payload, "j1:done")
    assert not outcome.accepted and outcome.detail.startswith("exit 3; stdout: xxx") and len(outcome.detail) < 2100
    outcome = hanging.send(payload, "j1:done")
    assert not outcome.accepted and outcome.detail.startswith("still running after 0.5s, killed")


def test_a_command_that_writes_a_gibibyte_is_heard_out_in_bounded_memory(tmp_path):
    # All of a command's output was kept until it ended, for the 2,000 characters the log shows of it.
    config = make_config(tmp_path, "http://127.0.0.1:9", notify=[{"command": [
        sys.executable, "-c", "import sys\nfor _ in range(1024): sys.stdout.buffer.write(b'y' * 2**20)"], "timeout": 120}])
    probe = (f"import json, resource\nfrom ingestd.config import load_config\nfrom ingestd.notify import targets_of\n"
             f"[target] = targets_of(load_config({str(config)!r}))\n"
             "outcome = target.send(json.dumps({'event': 'done', 'job_id': 'j1'}), 'j1:done')\n"
             "print(json.dumps([outcome.accepted, outcome.detail, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss]))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    accepted, detail, peak_kib = json.loads(result.stdout)
    assert accepted and detail.startswith("exit 0; stdout: yyyy") and len(detail) < 2100
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib // 1024} MiB"


def test_a_command_whose_background_child_keeps_its_output_open_leaves_no_reader_behind(tmp_path):
    # Its output can never end while the child lives: after a grace period its readers stop, rather than one thread
    # and two descriptors staying behind for every notification sent to such a command.
    make_config(tmp_path, "http://127.0.0.1:9", notify=[{"command": ["/bin/sh", "-c", "sleep 60 & echo started"]}])
    [target] = targets_of(load_config(tmp_path / "config.yaml"))
    threads = threading.active_count()
    started = time.monotonic()
    outcome = target.send(json.dumps({"event": "done", "job_id": "j1"}), "j1:done")
    assert outcome.accepted and outcome.detail == "exit 0; stdout: started"
    assert time.monotonic() - started < 20
    wait_for(lambda: threading.active_count() <= threads, timeout=10, what="the output readers to stop")


# -- commands and config ----------------------------------------------------------------------


def test_notify_test_sends_a_sample_event_to_every_target_and_fails_if_one_refuses(tmp_path, receivers):
    good, bad = receivers(), receivers(fail_first=1)
    script, out = recorder(tmp_path)
    config = make_config(tmp_path, "http://127.0.0.1:9", notify=[
        {"webhook": good.url + "/hook", "secret": SECRET},
        {"command": [sys.executable, str(script), str(out), "{event}"]},
        {"apprise": f"json://127.0.0.1:{good.port}/chat"},
        {"webhook": bad.url + "/hook"},
    ])
    code, said = cli("notify", "test", "--config", str(config))
    assert code == 1
    lines = said.splitlines()
    assert [line.split()[0] for line in lines] == ["ok", "ok", "ok", "FAILED"] and "HTTP 500" in lines[3]
    hooked = good.bodies()[0]
    assert hooked["event"] == "test" and verify(good.requests[0], SECRET)
    assert good.requests[0]["headers"]["Idempotency-Key"] == hooked["job_id"] + ":test"
    assert recorded(out)[0]["argv"][1:] == ["test"]
    code, said = cli("notify", "test", "--config", str(config))  # the flaky receiver accepts the second time
    assert code == 0, said


def test_notify_config_problems_are_located(tmp_path):
    config = make_config(tmp_path, "http://127.0.0.1:9", notify=[
        {"webhook": "ftp://cms.example/hook", "events": ["done", "publish"]},
        {"command": [], "events": ["done"]},
        {"command": ["/bin/true", "{media}"]},
        {"apprise": "nonsense://abc"},
        {"events": ["done"]},
        {"webhook": "https://cms.example/hook", "events": ["held"]},
        {"webhook": "https://cms.example/hook", "events": ["failed"]},
    ])
    result = subprocess.run([sys.executable, "-m", "ingestd", "check-config", "--config", str(config)],
                            capture_output=True, text=True)
    assert result.returncode == 78
    problems = result.stderr.splitlines()
    expected = [
        ("notify[0].webhook", "is not an http:// or https:// URL"),
        ("notify[0].events[1]", "unknown event 'publish' (events: done, failed, duplicate, held)"),
        ("notify[1].command", "the command is empty"),
        ("notify[2].command", "unknown placeholder {media} in '{media}'; did you mean 'media_id'?"),
        ("notify[3].apprise", "Apprise cannot use this URL"),
        ("notify[4]", "a notify target needs one of webhook:, command: or apprise:"),
        ("notify[6]", "the same webhook as notify[5]: list all its events there, once"),
    ]
    for key, words in expected:
        assert any(f": {key}: " in p and words in p and p.startswith(f"{config}:") for p in problems), (key, problems)
    assert "nonsense://abc" not in result.stderr.replace("notify[3].apprise: Apprise", "")


def test_the_example_configs_notify_block_is_valid_once_uncommented(tmp_path):
    example = (Path(__file__).parent.parent / "config.example.yaml").read_text()
    block = example[example.index("# notify:"):].split("\n\n", 1)[0]
    config = tmp_path / "config.yaml"
    config.write_text(example.replace(block, "\n".join(line[2:] for line in block.splitlines())))
    loaded = load_config(config, environ={"AIOZ_STREAM_TOKEN": "t" * 20, "INGESTD_HOOK_SECRET": SECRET,
                                          "INGESTD_CHAT_URL": "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"})
    assert [t.label for t in targets_of(loaded)] == [
        "webhook https://cms.example/hooks/ingestd", "command /usr/local/bin/on-published", "apprise slack://T...2/A...D/T...Q"]


def test_the_signature_checks_in_the_docs_accept_a_real_delivery_and_refuse_a_forged_one(tmp_path, receivers):
    doc = (Path(__file__).parent.parent / "docs" / "notifications.md").read_text()
    blocks = re.findall(r"```(\w+)\n(.*?)```", doc, flags=re.S)
    python = next(code for lang, code in blocks if lang == "python" and "def is_from_ingestd" in code)
    shell = next(code for lang, code in blocks if lang == "sh" and "openssl dgst" in code)
    hook = receivers()
    assert _webhook(hook.url + "/hook").send(json.dumps({"event": "done", "job_id": "j1", "title": "Ep — 1"}), "j1:done").accepted
    [request] = hook.requests
    namespace: dict = {}
    exec(python, namespace)
    body = tmp_path / "body.json"
    for payload, expect in ((request["body"], True), (request["body"].replace(b"Ep", b"EP"), False)):
        assert namespace["is_from_ingestd"](payload, request["headers"]["X-Ingestd-Signature"], SECRET) is expect
        body.write_bytes(payload)
        said = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, check=True, env={
            "PATH": "/usr/bin:/bin", "INGESTD_HOOK_SECRET": SECRET, "body": str(body),
            "signature": request["headers"]["X-Ingestd-Signature"]}).stdout
        assert said.strip() == ("from ingestd" if expect else "NOT from ingestd")
