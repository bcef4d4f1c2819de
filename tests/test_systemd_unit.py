"""systemd/ingestd.service: what it promises, checked with systemd's own tools.

systemd-analyze works offline on a unit file, so these run without systemd as PID 1.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path, PurePosixPath

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
SYSTEMD_DIR = REPO / "systemd"
UNIT = SYSTEMD_DIR / "ingestd.service"
MAX_EXPOSURE = 2.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed (Debian package: systemd)"
)


def read_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """Sections → keys → every value, in order (unit files repeat keys such as After=)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path}: key outside a section: {line}"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def verifiable_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart pointing at an executable that exists here.

    `systemd-analyze verify` refuses a unit whose binary is missing, and
    /opt/ingestd/venv only exists on an installed machine.
    """
    text = UNIT.read_text()
    installed = "ExecStart=/opt/ingestd/venv/bin/ingestd "
    assert installed in text
    copy = tmp_path / UNIT.name
    copy.write_text(text.replace(installed, f"ExecStart={sys.executable} -m ingestd "))
    return copy


def test_unit_states_the_service_contract() -> None:
    service = read_unit(UNIT)["Service"]
    one = {key: values[-1] for key, values in service.items()}

    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"
    assert one["ExecStart"] == "/opt/ingestd/venv/bin/ingestd run --config /etc/ingestd/config.yaml"
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert int(one["WatchdogSec"]) > 0
    assert one["Restart"] == "on-failure"
    # 78 is what ingestd exits with on a config error: restarting would only repeat it.
    assert one["RestartPreventExitStatus"] == "78"
    assert one["StateDirectory"] == "ingestd"
    assert (one["User"], one["Group"]) == ("ingestd", "ingestd")
    assert one["EnvironmentFile"] == "-/etc/ingestd/ingestd.env"
    assert one["ProtectSystem"] == "strict"
    assert "/srv/ingest" in one["ReadWritePaths"]
    assert one["MemoryDenyWriteExecute"] == "yes"
    assert one["UMask"] == "0027"
    assert read_unit(UNIT)["Install"]["WantedBy"] == ["multi-user.target"]


def test_example_config_paths_are_writable_under_the_sandbox() -> None:
    """The installed config.yaml is config.example.yaml: its paths must be ones the unit lets ingestd write."""
    config = yaml.safe_load((REPO / "config.example.yaml").read_text())
    service = read_unit(UNIT)["Service"]
    writable = [PurePosixPath("/var/lib") / service["StateDirectory"][-1]]
    writable += [PurePosixPath(p.lstrip("-")) for v in service["ReadWritePaths"] for p in v.split()]

    assert PurePosixPath(config["state_dir"]) == writable[0]
    for folder in config["folders"]:
        for key in ("path", "done_dir", "failed_dir"):
            path = PurePosixPath(folder[key])
            assert any(path.is_relative_to(w) for w in writable), f"{key} {path} is read-only under the unit"
    config_arg = service["ExecStart"][-1].split("--config ", 1)[1]
    assert config_arg == "/etc/ingestd/config.yaml"


def test_sysusers_file_creates_the_user_the_unit_runs_as(tmp_path: Path) -> None:
    if shutil.which("systemd-sysusers") is None:
        pytest.skip("systemd-sysusers not installed (Debian package: systemd)")
    (tmp_path / "etc").mkdir()
    subprocess.run(
        ["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD_DIR / "ingestd.sysusers")],
        check=True, capture_output=True,
    )
    passwd = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").read_text().splitlines()}
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").read_text().splitlines()}
    user = read_unit(UNIT)["Service"]["User"][-1]
    assert user in passwd and read_unit(UNIT)["Service"]["Group"][-1] in groups
    _, _, uid, _, _, home, shell = passwd[user]
    assert int(uid) < 1000, "a system user"
    assert (home, shell) == ("/var/lib/ingestd", "/usr/sbin/nologin")


@needs_systemd_analyze
def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(verifiable_copy(tmp_path))],
        capture_output=True, text=True, cwd=tmp_path,
    )
    # verify exits 0 on unknown keys and only warns, so any output is a finding.
    assert result.returncode == 0, result.stderr
    assert result.stderr == "" and result.stdout == "", result.stderr + result.stdout


@needs_systemd_analyze
def test_security_exposure_is_low(tmp_path: Path) -> None:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(verifiable_copy(tmp_path))],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for ingestd\.service: (\d+(?:\.\d+)?)", result.stdout)
    assert match, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout


# PR_SET_MDWE (Linux 6.3+) is the kernel's own form of MemoryDenyWriteExecute=: once
# set, no mapping may become writable and executable, and it survives execve.
PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

# What the daemon's process does that could need W+X memory: the C and Rust
# extensions it loads, TLS, SQLite, and inotify through ctypes.
_DAEMON_WORKLOAD = textwrap.dedent(
    """
    import mmap, sqlite3, ssl, sys, threading
    from pathlib import Path

    import httpx, prometheus_client, pydantic, structlog, yaml
    from watchdog.events import FileSystemEventHandler
    from watchdog.observers.inotify import InotifyObserver
    import ingestd.config, ingestd.media_schema

    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        sys.exit("W+X mapping allowed: the memory protection is not in force")
    except PermissionError:
        pass

    ssl.create_default_context().load_default_certs()
    db = sqlite3.connect(Path(sys.argv[1]) / "queue.sqlite3")
    db.execute("create table t (x)"); db.execute("insert into t values (1)"); db.commit()
    yaml.load("a: [1, 2]", Loader=yaml.CSafeLoader)
    pydantic.TypeAdapter(list[int]).validate_python([1, 2])

    seen = threading.Event()
    class Handler(FileSystemEventHandler):
        def on_closed(self, event):
            seen.set()
    observer = InotifyObserver()
    observer.schedule(Handler(), sys.argv[1])
    observer.start()
    (Path(sys.argv[1]) / "episode.wav").write_bytes(b"RIFF")
    ok = seen.wait(10)
    observer.stop(); observer.join()
    sys.exit(0 if ok else "inotify saw no event")
    """
)


# Sets the protection, then becomes the workload; 77 when the kernel lacks it.
_UNDER_MDWE = textwrap.dedent(
    f"""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
        sys.exit(77)
    os.execv(sys.executable, [sys.executable, "-c", *sys.argv[1:]])
    """
)


def test_python_runs_under_memory_deny_write_execute(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _UNDER_MDWE, _DAEMON_WORKLOAD, str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    if result.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert result.returncode == 0, result.stderr


def test_limit_nofile_is_set_and_leaves_the_status_listener_its_full_share():
    from ingestd.status_server import MAX_CONNECTIONS, RESERVED_FDS, connection_limit

    [limit] = read_unit(UNIT)["Service"]["LimitNOFILE"]
    assert int(limit) >= 2 * MAX_CONNECTIONS + RESERVED_FDS
    assert connection_limit(int(limit)) == MAX_CONNECTIONS
    assert connection_limit(1024) == (1024 - RESERVED_FDS) // 2, "under the common default the listener takes less"
