"""``ingestd emulator`` in a real subprocess: prints its URL, serves, stops on a real signal."""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from ingestd.emulator import cli

SCRIPT = "import argparse, sys; from ingestd.emulator import cli; p = argparse.ArgumentParser(); cli.add_arguments(p); sys.exit(cli.run(p.parse_args()))"
ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serves_until_signalled(tmp_path: Path, sig: signal.Signals):
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, "--port", "0", "--data", str(tmp_path), "--token", "cli-token", "--transcode-delay", "0.1"],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        base_url = process.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/api")
        response = httpx.post(f"{base_url}/media/create", json={"type": "audio", "title": "t"}, headers={"Authorization": "Bearer cli-token"})
        assert response.status_code == 201
        process.send_signal(sig)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_arguments_become_settings():
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    args = parser.parse_args(["--min-part-size", "64KiB", "--rate-limit", "30", "--fail-rate", "0.25", "--drop-rate", "0.5", "--balance", "3"])
    settings = cli.settings_from(args)
    assert settings.min_part_size == 64 * 1024
    assert settings.rate_limit_per_minute == 30
    assert (settings.faults.server_error, settings.faults.drop_after_commit) == (0.25, 0.5)
    assert settings.accounts[0].balance_usd == 3.0
    with pytest.raises(SystemExit):
        parser.parse_args(["--fail-rate", "1.5"])


def test_strict_official_refuses_what_no_official_client_sends(tmp_path: Path):
    process = subprocess.Popen([sys.executable, "-m", "ingestd", "emulator", "--port", "0", "--data", str(tmp_path), "--strict-official"],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        base_url = process.stdout.readline().strip()
        pair = {"stream-public-key": "test-public", "stream-secret-key": "test-secret"}
        assert httpx.post(f"{base_url}/media", json={}, headers=pair).status_code == 401
        assert httpx.post(f"{base_url}/media", json={}, headers=pair, auth=("test-public", "test-secret")).status_code == 200
        bare = httpx.post(f"{base_url}/media", json={"status": "done"}, auth=("test-public", "test-secret"))
        assert bare.status_code == 400 and bare.json()["message"].startswith("status")
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=10)
