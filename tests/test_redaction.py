"""Credentials never leave the config: not in logs, the queue, filed reports, moved sidecars or CLI output."""

from __future__ import annotations

import contextlib
import io
import json
import uuid

import yaml

from ingestd import queue as q
from ingestd.cli import main
from ingestd.emulator import Account

from .audio import write_wav
from .daemon import Daemon, jobs_in, make_config, queue_of, wait_for


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
    found = []
    for path in [p for p in root.rglob("*") if p.is_file()]:
        data = path.read_bytes()
        found += [f"{path}: {s[:8]}…" for s in secrets if s.encode() in data]
    found += [f"captured output: {s[:8]}…" for s in secrets for text in texts if s in text]
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
