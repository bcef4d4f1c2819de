"""deploy/install.sh, run for real into a staging directory (DESTDIR)."""

from __future__ import annotations

import os
import stat
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
INSTALL_SH = REPO / "deploy" / "install.sh"


def install(destdir: Path, *args: str, venv: bool = False) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(destdir), "PYTHON": sys.executable}
    if not venv:
        args = ("--no-venv", *args)
    result = subprocess.run(
        ["sh", str(INSTALL_SH), *args], env=env, capture_output=True, text=True, timeout=240
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_staged_install_lays_out_the_tree(tmp_path: Path) -> None:
    result = install(tmp_path)

    unit = tmp_path / "etc/systemd/system/ingestd.service"
    assert unit.read_text() == (REPO / "systemd/ingestd.service").read_text()
    assert (tmp_path / "usr/lib/sysusers.d/ingestd.conf").read_text() == (REPO / "systemd/ingestd.sysusers").read_text()
    assert (tmp_path / "usr/share/doc/ingestd/deployment.md").is_file()
    assert mode(tmp_path / "usr/local/bin/ingestd") == 0o755

    etc = tmp_path / "etc/ingestd"
    assert mode(etc) == 0o750
    assert (etc / "config.yaml").read_text() == (REPO / "config.example.yaml").read_text()
    assert mode(etc / "config.yaml") == 0o640
    assert "AIOZ_STREAM_TOKEN=" in (etc / "ingestd.env").read_text()
    assert mode(etc / "ingestd.env") == 0o600

    assert mode(tmp_path / "var/lib/ingestd") == 0o750
    assert mode(tmp_path / "srv/ingest/inbox") == 0o2770
    assert mode(tmp_path / "srv/ingest/done") == 0o2750
    assert mode(tmp_path / "srv/ingest/failed") == 0o2750
    assert not (tmp_path / "opt/ingestd/venv").exists()

    assert "systemctl daemon-reload && systemctl enable --now ingestd" in result.stdout


def test_second_run_keeps_the_admins_files_and_restores_ours(tmp_path: Path) -> None:
    install(tmp_path)
    config = tmp_path / "etc/ingestd/config.yaml"
    env_file = tmp_path / "etc/ingestd/ingestd.env"
    unit = tmp_path / "etc/systemd/system/ingestd.service"
    inbox = tmp_path / "srv/ingest/inbox"
    config.write_text("state_dir: /var/lib/ingestd\n# edited by the admin\n")
    env_file.write_text("AIOZ_STREAM_TOKEN=secret\n")
    unit.write_text("[Service]\nExecStart=/bin/false\n")
    inbox.chmod(0o2775)  # e.g. a share that other hosts write into
    (inbox / "episode.wav").write_bytes(b"RIFF")

    result = install(tmp_path)

    assert config.read_text() == "state_dir: /var/lib/ingestd\n# edited by the admin\n"
    assert env_file.read_text() == "AIOZ_STREAM_TOKEN=secret\n"
    assert mode(env_file) == 0o600
    assert unit.read_text() == (REPO / "systemd/ingestd.service").read_text()
    assert mode(inbox) == 0o2775
    assert (inbox / "episode.wav").read_bytes() == b"RIFF"
    assert "kept     /etc/ingestd/config.yaml" in result.stdout


def test_unknown_argument_is_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        ["sh", str(INSTALL_SH), "--prefix=/usr"], env={**os.environ, "DESTDIR": str(tmp_path)},
        capture_output=True, text=True,
    )
    assert result.returncode == 2
    assert "unknown argument: --prefix=/usr" in result.stderr
    assert not (tmp_path / "etc").exists()


# The one slow test (~15 s): a real virtualenv with ingestd and its dependencies
# installed from this source tree by pip.
def test_venv_install_gives_a_working_ingestd_command(tmp_path: Path) -> None:
    install(tmp_path, venv=True)

    ingestd = tmp_path / "opt/ingestd/venv/bin/ingestd"
    result = subprocess.run([str(ingestd), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "run" in result.stdout and "check-config" in result.stdout

    # Running again upgrades in place.
    install(tmp_path, venv=True)
    assert subprocess.run([str(ingestd), "--help"], capture_output=True).returncode == 0


def test_installing_into_the_real_root_needs_root() -> None:
    as_non_root = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    # The script comes on stdin: "nobody" may not be allowed into the checkout's folder at all.
    with open(INSTALL_SH) as script:
        result = subprocess.run(
            [*as_non_root, "sh", "-s", "--", "--no-venv"], stdin=script, cwd="/",
            env={k: v for k, v in os.environ.items() if k != "DESTDIR"}, capture_output=True, text=True,
        )
    assert result.returncode == 1
    assert "run as root, or set DESTDIR" in result.stderr


# The container route: Docker cannot run here, so check that the three files agree.
def containerfile_instructions() -> dict[str, list[str]]:
    """Instruction → its arguments, one entry per occurrence, continuation lines joined."""
    text = (REPO / "deploy/Containerfile").read_text().replace("\\\n", " ")
    instructions: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, rest = line.strip().partition(" ")
            instructions.setdefault(keyword.upper(), []).append(" ".join(rest.split()))
    return instructions


def test_compose_runs_the_image_as_the_containerfile_defines_it() -> None:
    image = {keyword: args[-1] for keyword, args in containerfile_instructions().items()}
    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text())
    daemon, emulator = compose["services"]["ingestd"], compose["services"]["emulator"]

    assert image["FROM"] == "python:3.11-slim"
    assert image["USER"] == "ingestd"
    assert image["STOPSIGNAL"] == "SIGTERM"
    assert json.loads(image["ENTRYPOINT"]) == ["ingestd"]
    assert daemon["command"] == json.loads(image["CMD"]) == ["run", "--config", "/config/config.yaml"]

    # SOURCE:TARGET[:MODE], where SOURCE may be ${VAR:-default}
    mounted = {volume.removesuffix(":ro").rpartition(":")[2] for volume in daemon["volumes"]}
    assert mounted == set(json.loads(image["VOLUME"])) == {"/config", "/data", "/ingest"}
    assert daemon["env_file"] == "ingestd.env"  # made from deploy/ingestd.env.example
    assert daemon["build"]["dockerfile"] == "deploy/Containerfile"

    assert emulator["profiles"] == ["emulator"]
    assert emulator["command"][:5] == ["emulator", "--host", "0.0.0.0", "--port", "8080"]


def test_container_config_loads_and_matches_the_image(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingestd.config import load_config

    monkeypatch.setenv("AIOZ_STREAM_TOKEN", "test-token")
    monkeypatch.setenv("AIOZ_STREAM_BASE_URL", "http://emulator:8080/api")
    config = load_config(REPO / "deploy/config/config.yaml")
    image = containerfile_instructions()
    compose = yaml.safe_load((REPO / "deploy/compose.yaml").read_text())

    assert config.api.base_url == "http://emulator:8080/api"
    assert str(config.state_dir) == "/data"
    for folder in config.folders:
        for path in (folder.path, folder.done_dir, folder.failed_dir):
            assert str(path).startswith("/ingest/"), path
    # The health check, the listener and the published port are the same port.
    assert config.status.listen is not None
    port = config.status.listen.rpartition(":")[2]
    assert f"INGESTD_HEALTHZ_URL=http://127.0.0.1:{port}/healthz" in image["ENV"]
    assert "urlopen(os.environ['INGESTD_HEALTHZ_URL']" in image["HEALTHCHECK"][-1]
    assert image["EXPOSE"] == [port]
    assert compose["services"]["ingestd"]["ports"] == [f"127.0.0.1:{port}:{port}"]
    # The emulator named in the dry-run instructions is the one compose starts.
    assert compose["services"]["emulator"]["command"][4] == "8080"
