"""Credentials never leave the config: not in logs, the queue, filed reports, moved sidecars or CLI output."""

from __future__ import annotations

import base64
import contextlib
import http.server
import io
import json
import os
import subprocess
import sys
import threading
import urllib.parse
import urllib.request
import uuid

import pytest
import yaml

from ingestd import queue as q
from ingestd.cli import main
from ingestd.emulator import Account

from .audio import write_wav
from .daemon import Daemon, free_port, jobs_in, make_config, queue_of, wait_for


def _drop(root, name, *, seconds: float, sidecar: dict | None = None):
    staging = root / "staging" / name
    write_wav(staging, seconds)
    if sidecar is not None:
        (root / "inbox" / (staging.stem + ".json")).write_text(json.dumps(sidecar))
    staging.rename(root / "inbox" / name)


def _cli(*argv: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        main(list(argv))
    return out.getvalue() + err.getvalue()


def _leaks(root, texts: list[str], secrets: list[str]) -> list[str]:
    """Every file under ``root`` (logs, the queue and its WAL, reports, moved sidecars) and every text, searched for
    each secret in each of its forms."""
    forms = [(f"{s[:8]}… {kind}", form) for s in secrets for kind, form in _forms(s, "pub-ingestd").items()]
    found = []
    for path in [p for p in root.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        found += [f"{path}: {what}" for what, form in forms if form.encode() in data]
    found += [f"captured output: {what}" for what, form in forms for text in texts if form in text]
    return found


def _config(root, base_url, api: dict):
    """make_config, with credentials left to ${VAR}s so the config file itself holds no secret."""
    path = make_config(root, base_url)
    data = yaml.safe_load(path.read_text())
    data["api"] = {"base_url": base_url, "timeout": 10} | api
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _exercise(root, config, env: dict[str, str], wrong_env: dict[str, str], monkeypatch) -> list[str]:
    """Hold a job on a 401, fix the credentials, upload one good file (with a sidecar) and one bad one."""
    with Daemon(config, env=wrong_env) as daemon:
        _drop(root, "first.wav", seconds=1.0)
        wait_for(lambda: jobs_in(root, q.HELD), what="job held after a 401")
        assert daemon.stop() == 0
    with Daemon(config, env=env) as daemon:
        _drop(root, "second.wav", seconds=1.5, sidecar={"title": "With a sidecar", "tags": ["x"]})
        (root / "inbox" / "notes.mp3").write_bytes(b"not audio at all\n" * 100)
        wait_for(lambda: len(jobs_in(root, q.DONE)) == 2 and jobs_in(root, q.FAILED), what="two done, one failed")
        assert daemon.stop() == 0
    assert (root / "done" / "second.json").exists(), "the sidecar moved with its audio"
    assert (root / "failed" / "notes.mp3.error.json").exists()

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("INGESTD_CONFIG", str(config))
    outputs = [_cli("status", "--json"), _cli("jobs", "list", "--json")]
    outputs += [_cli("jobs", "show", "--json", job.id) for job in queue_of(root).list()]
    log = (root / "daemon.log").read_text()
    assert '"credentials_rejected"' in log, "the 401 was provoked and logged"
    # The journal gets one JSON object per line; a job's events carry what it is about.
    events = [json.loads(line) for line in log.splitlines()]
    created = [e for e in events if e["event"] == "media_created"]
    assert created and all({"job_id", "path", "stage", "attempt", "media_id", "timestamp", "level"} <= e.keys() for e in created)
    return outputs


def test_a_token_never_leaks(tmp_path, emulator_factory, monkeypatch):
    token, wrong = f"tok-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    emulator = emulator_factory(accounts=[Account(token=token)])
    root = tmp_path / "ingest"
    config = _config(root, emulator.base_url, {"token": "${INGESTD_TEST_TOKEN}"})
    outputs = _exercise(root, config, {"INGESTD_TEST_TOKEN": token}, {"INGESTD_TEST_TOKEN": wrong}, monkeypatch)
    assert _leaks(root, outputs, [token, wrong]) == []


def test_a_key_pair_never_leaks(tmp_path, emulator_factory, monkeypatch):
    secret, wrong = f"sec-{uuid.uuid4().hex}", f"wrong-{uuid.uuid4().hex}"
    emulator = emulator_factory(accounts=[Account(public_key="pub-ingestd", secret_key=secret)])
    root = tmp_path / "ingest"
    config = _config(root, emulator.base_url,
                     {"public_key": "pub-ingestd", "secret_key": "${INGESTD_TEST_SECRET}"})
    outputs = _exercise(root, config, {"INGESTD_TEST_SECRET": secret}, {"INGESTD_TEST_SECRET": wrong}, monkeypatch)
    assert _leaks(root, outputs, [secret, wrong]) == []


def _forms(secret: str, public_key: str) -> dict[str, str]:
    """The shapes a credential takes in text once something quotes or encodes it."""
    return {
        "raw": secret,
        "json-escaped": json.dumps(secret)[1:-1],
        "repr": repr(secret)[1:-1],
        "bytes repr": repr(secret.encode())[2:-1],
        "percent-encoded": urllib.parse.quote(secret, safe=""),
        "base64": base64.b64encode(secret.encode()).decode(),
        "Basic": base64.b64encode(f"{public_key}:{secret}".encode()).decode(),
    }


class _EchoingAPI(http.server.BaseHTTPRequestHandler):
    """A careless API that quotes the caller's credentials, in every form, in each refusal."""

    public_key = "pub-ingestd"

    def _refuse(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        token = self.headers.get("Authorization", "").removeprefix("Bearer ")
        message = "invalid request from " + " / ".join(_forms(token, self.public_key).values())
        body = json.dumps({"status": "error", "message": message}).encode()
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PATCH = do_DELETE = _refuse

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echoing_api():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _EchoingAPI)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()



def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5):
            return True
    except OSError:
        return False


def test_a_token_quoted_back_in_any_form_is_redacted_everywhere(tmp_path, echoing_api, monkeypatch):
    # Printable, but escaped and percent-encoded differently from the raw text.
    token = f'tok"{uuid.uuid4().hex}\\/+='
    root = tmp_path / "ingest"
    port = free_port()
    config = _config(root, echoing_api, {"token": "${INGESTD_TEST_TOKEN}"})
    data = yaml.safe_load(config.read_text())
    data["status"] = {"listen": f"127.0.0.1:{port}"}
    data["upload"]["max_attempts"] = 1
    config.write_text(yaml.safe_dump(data, sort_keys=False))
    pages = []
    with Daemon(config, env={"INGESTD_TEST_TOKEN": token}) as daemon:
        # The listener opens once the start-up backlog is queued; a file refused at once can be filed before that.
        wait_for(lambda: _answers(f"http://127.0.0.1:{port}/healthz"), what="the status listener")
        _drop(root, "episode.wav", seconds=1.0)
        wait_for(lambda: (root / "failed" / "episode.wav.error.json").exists(), what="the refused file filed as failed")
        for page in ("/", "/metrics", "/healthz"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{page}", timeout=10) as response:
                pages.append(response.read().decode())
        assert daemon.stop() == 0
    assert "[redacted]" in (root / "failed" / "episode.wav.error.json").read_text(), "the refusal was recorded"
    monkeypatch.setenv("INGESTD_TEST_TOKEN", token)
    monkeypatch.setenv("INGESTD_CONFIG", str(config))
    outputs = pages + [_cli("jobs", "list", "--json")] + [_cli("jobs", "show", "--json", j.id) for j in queue_of(root).list()]
    forms = _forms(token, _EchoingAPI.public_key)
    files = [p for p in root.rglob("*") if p.is_file()]
    assert any(p.name.endswith("-wal") for p in files) or any(p.suffix == ".sqlite3" for p in files)
    leaks = [f"{p.relative_to(root)}: {kind}" for p in files for kind, form in forms.items() if form.encode() in p.read_bytes()]
    leaks += [f"served or printed: {kind}" for text in outputs for kind, form in forms.items() if form in text]
    assert leaks == []


@pytest.mark.parametrize("key,value", [("token", "tok-0123456789abcdef\r"), ("token", "tok-0123456789 abcdef"),
                                       ("secret_key", "sec-0123456789abcdef\n"), ("public_key", "pub\x1b[2J-key")])
def test_a_credential_with_a_control_character_or_space_is_refused_at_load(tmp_path, key, value):
    root = tmp_path / "ingest"
    api = {"token": "${SECRET}"} if key == "token" else {"public_key": "pub-key", "secret_key": "sec-0123456789", key: "${SECRET}"}
    config = _config(root, "http://127.0.0.1:9", api)
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "${SECRET}" in text)
    env = os.environ | {"SECRET": value}
    for command in ("check-config", "run"):
        result = subprocess.run([sys.executable, "-m", "ingestd", command, "--config", str(config)], env=env,
                                capture_output=True, text=True, timeout=60)
        assert result.returncode == 78, result.stderr
        assert f"{config}:{line}: api.{key}: contains a space or a control character" in result.stderr
        assert value.strip() not in result.stdout + result.stderr


def test_the_redactor_knows_every_form_and_every_owner():
    from ingestd.log import REDACTED, SecretRedactor

    redactor = SecretRedactor(["tok-abcdef0123456789"])
    redactor.set("queue", ["pg-pass/word+1"])
    text = " ".join([*_forms("tok-abcdef0123456789", "pub").values(), "x" + _forms("tok-abcdef0123456789", "public")["Basic"],
                     *_forms("pg-pass/word+1", "user").values()])
    scrubbed = redactor.scrub(text)
    assert "tok-abc" not in scrubbed and "pg-pass" not in scrubbed and "pg%2Fpass" not in scrubbed
    assert scrubbed.count(REDACTED) >= 10
    redactor.update(["another-token-value"])
    assert redactor.scrub("pg-pass/word+1") == REDACTED, "a reload of the API credentials keeps the queue's secret"


def test_a_queue_password_in_the_url_or_its_query_is_shown_nowhere(tmp_path, emulator, postgres_url, capsys):
    # libpq takes a password in the URL's user part or as a query parameter; either is a secret.
    host, _, query = postgres_url.removeprefix("postgresql://ingestd@").partition("?")
    queue_url = f"postgresql://ingestd:Userinfo-secret-1@{host}?{query}&password=Query-secret-22"
    config = make_config(tmp_path, emulator.base_url, queue_url=queue_url)
    with Daemon(config) as daemon:
        wait_for(lambda: '"ready"' in daemon.log(), what="the daemon ready")
        lock = (tmp_path / "inbox" / ".ingestd.lock").read_text()
        assert main(["status", "--config", str(config)]) == 0
        assert main(["status", "--json", "--config", str(config)]) == 0
        assert daemon.stop() == 0
    shown = capsys.readouterr().out
    assert "queue postgresql://ingestd:***@" in shown and "password=***" in shown
    for text in (daemon.log(), lock, shown):
        assert "Userinfo-secret-1" not in text and "Query-secret-22" not in text
