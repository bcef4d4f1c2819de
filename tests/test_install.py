"""deploy/install.sh and deploy/uninstall.sh, run for real: into a staging directory (DESTDIR), and, as root,
into a throw-away chroot with a real service user, a daemon and a colleague dropping a file."""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import stat
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from .audio import write_wav
from .chroot import Chroot, can_build
from .daemon import PRESETS, wait_for

REPO = Path(__file__).resolve().parent.parent
INSTALL_SH = REPO / "deploy" / "install.sh"
UNINSTALL_SH = REPO / "deploy" / "uninstall.sh"


def install(destdir: Path, *args: str, venv: bool = False, check: bool = True,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DESTDIR": str(destdir), "PYTHON": sys.executable} | (env or {})
    if not venv:
        args = ("--no-venv", *args)
    result = subprocess.run(
        ["sh", str(INSTALL_SH), *args], env=env, capture_output=True, text=True, timeout=240
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def uninstall(destdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["sh", str(UNINSTALL_SH), *args], env={**os.environ, "DESTDIR": str(destdir)},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def default_acl(path: Path) -> list[str]:
    out = subprocess.run(["getfacl", "--omit-header", "--default", str(path)], capture_output=True, text=True, check=True)
    return [line for line in out.stdout.splitlines() if line]


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


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

    assert "sudo ingestd check-config" in result.stdout
    assert "sudo systemctl enable --now ingestd" in result.stdout


@pytest.mark.skipif(shutil.which("setfacl") is None, reason="setfacl is not installed (Debian package acl)")
def test_a_new_inbox_gets_default_acls_so_a_colleagues_umask_cannot_lock_ingestd_out(tmp_path: Path) -> None:
    install(tmp_path)
    inbox = tmp_path / "srv/ingest/inbox"
    assert default_acl(inbox) == ["user::rwx", "group::rwx", "mask::rwx", "other::---"]

    # What a colleague with umask 077 makes in it stays group-writable.
    old = os.umask(0o077)
    try:
        (inbox / "show").mkdir()
        (inbox / "show" / "episode.wav").write_bytes(b"RIFF")
    finally:
        os.umask(old)
    acl = subprocess.run(["getfacl", "--omit-header", str(inbox / "show")], capture_output=True, text=True).stdout
    assert "group::rwx" in acl and "mask::rwx" in acl
    assert "default:group::rwx" in acl  # and it passes the rule on, to sub-subfolders

    # A second run leaves an existing inbox (a share, perhaps) as it found it.
    subprocess.run(["setfacl", "-b", str(inbox)], check=True)
    install(tmp_path)
    assert default_acl(inbox) == []


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


def home_interpreter() -> Path | None:
    """A Python 3.11+ under /root or /home (pyenv, say), as root's PATH often has first: the one not to use."""
    real = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    return real if real.parts[1:2] in (("root",), ("home",)) else None


@pytest.mark.skipif(home_interpreter() is None, reason="the tests do not run on a Python under /root or /home")
def test_an_interpreter_in_a_home_directory_is_refused_before_anything_changes(tmp_path: Path) -> None:
    python = home_interpreter()
    result = install(tmp_path, "--python", str(python), venv=True, check=False)
    assert result.returncode == 1
    assert f"{python}, under a home directory: the ingestd user cannot run it" in result.stderr
    assert "--python /usr/bin/python3" in result.stderr
    assert tree(tmp_path) == set()


def test_a_failed_upgrade_leaves_the_installed_program_as_it_was(tmp_path: Path) -> None:
    # An installed virtualenv (a stand-in: only its link and a marker matter here).
    venvs = tmp_path / "opt/ingestd/venvs"
    (venvs / "20250101-000000-1").mkdir(parents=True)
    (venvs / "20250101-000000-1" / "marker").write_text("the one in use")
    (tmp_path / "opt/ingestd/venv").symlink_to("venvs/20250101-000000-1")
    python = "/usr/bin/python3" if home_interpreter() else sys.executable

    # pip fails half-way, after the new virtualenv was made.
    result = install(tmp_path, "--python", python, venv=True, check=False,
                     env={"INGESTD_PIP_ARGS": "--no-index --find-links /nonexistent"})

    assert result.returncode == 1, result.stdout + result.stderr
    assert "pip could not install ingestd" in result.stderr and "the installed ingestd is unchanged" in result.stderr
    assert os.readlink(tmp_path / "opt/ingestd/venv") == "venvs/20250101-000000-1"
    assert sorted(p.name for p in venvs.iterdir()) == ["20250101-000000-1"]


def test_staged_uninstall_keeps_config_and_queue_unless_purged(tmp_path: Path) -> None:
    install(tmp_path)
    (tmp_path / "opt/ingestd/venvs/x").mkdir(parents=True)
    (tmp_path / "opt/ingestd/venv").symlink_to("venvs/x")
    (tmp_path / "var/lib/ingestd/queue.sqlite3").write_bytes(b"jobs")
    (tmp_path / "srv/ingest/done/episode.wav").write_bytes(b"RIFF")

    result = uninstall(tmp_path)

    for gone in ("opt/ingestd", "usr/local/bin/ingestd", "etc/systemd/system/ingestd.service",
                 "usr/lib/sysusers.d/ingestd.conf", "usr/share/doc/ingestd"):
        assert not (tmp_path / gone).exists(), gone
    assert (tmp_path / "etc/ingestd/config.yaml").exists() and (tmp_path / "etc/ingestd/ingestd.env").exists()
    assert (tmp_path / "var/lib/ingestd/queue.sqlite3").read_bytes() == b"jobs"
    assert "kept     /etc/ingestd (remove it with --purge)" in result.stdout

    uninstall(tmp_path, "--purge")
    assert not (tmp_path / "etc/ingestd").exists() and not (tmp_path / "var/lib/ingestd").exists()
    # People's files are never the uninstaller's to remove.
    assert (tmp_path / "srv/ingest/done/episode.wav").read_bytes() == b"RIFF"


def test_uninstall_leaves_an_admin_command_that_is_not_ours(tmp_path: Path) -> None:
    (tmp_path / "usr/local/bin").mkdir(parents=True)
    (tmp_path / "usr/local/bin/ingestd").write_text("#!/bin/sh\necho someone else's\n")
    uninstall(tmp_path)
    assert (tmp_path / "usr/local/bin/ingestd").exists()


def test_installing_into_the_real_root_needs_root() -> None:
    as_non_root = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] if os.geteuid() == 0 else []
    # The script comes on stdin: "nobody" may not be allowed into the checkout's folder at all.
    for script_path, args in ((INSTALL_SH, ["--no-venv"]), (UNINSTALL_SH, [])):
        with open(script_path) as script:
            result = subprocess.run(
                [*as_non_root, "sh", "-s", "--", *args], stdin=script, cwd="/",
                env={k: v for k, v in os.environ.items() if k != "DESTDIR"}, capture_output=True, text=True,
            )
        assert result.returncode == 1
        assert "run as root, or set DESTDIR" in result.stderr


# Where the test cannot be root, a staged virtualenv is the closest it gets.
@pytest.mark.skipif(can_build() is None, reason="the chroot test below installs for real")
def test_staged_venv_install_gives_a_working_ingestd_command(tmp_path: Path) -> None:
    install(tmp_path, venv=True)
    ingestd = tmp_path / "opt/ingestd/venv/bin/ingestd"
    result = subprocess.run([str(ingestd), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout.startswith("ingestd "), result.stderr
    assert os.readlink(tmp_path / "opt/ingestd/venv").startswith("venvs/")


# -- for real, in a chroot ---------------------------------------------------------------------------------------

OTHER_PYTHON = "/usr/local/python-other"


def copy_source(target: Path) -> None:
    shutil.copytree(REPO, target, ignore=shutil.ignore_patterns(
        ".git", ".venv", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".hypothesis"))


def chroot_config(base_url: str) -> str:
    return yaml.safe_dump({
        "api": {"base_url": base_url, "token": "${AIOZ_STREAM_TOKEN}", "timeout": 10},
        "state_dir": "/var/lib/ingestd",
        "upload": {"workers": 1, "chunk_size": "5MiB", "poll_interval": 0.2},
        "presets": PRESETS,
        "folders": [{"path": "/srv/ingest/inbox", "settle": 0.3, "done_dir": "/srv/ingest/done",
                     "failed_dir": "/srv/ingest/failed"}],
        "log": {"format": "json"},
        "rules": [{"name": "default", "title": "{stem}", "qualities": "podcast"}],
    }, sort_keys=False)


def venv_home(root: Chroot) -> str:
    cfg = dict(line.split(" = ", 1) for line in root.path("/opt/ingestd/venv/pyvenv.cfg").read_text().splitlines()
               if " = " in line)
    return cfg["home"]


def run_daemon_and_drop(root: Chroot, tmp_path: Path, name: str) -> None:
    """Start ingestd as the service does, have a colleague (umask 077, own subfolder) drop ``name``, see it done."""
    log = tmp_path / f"daemon-{name}.log"
    lock = root.path("/var/lib/ingestd/ingestd.lock")
    previous = lock.read_text() if lock.exists() else ""
    proc = root.start("exec /usr/local/bin/ingestd run", log)
    try:
        pid = int(wait_for(lambda: lock.exists() and lock.read_text() != previous and lock.read_text().strip(),
                           what="the daemon's lock"))
        # The daemon runs as the service user, not as root.
        status = Path(f"/proc/{pid}/status").read_text()
        uid = next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:"))
        assert int(uid) == root.ids("ingestd")[0]

        staging = root.path("/tmp") / name
        write_wav(staging, 0.5)
        colleague_uid, colleague_gid = root.ids("colleague")
        os.chown(staging, colleague_uid, colleague_gid)
        drop = textwrap.dedent(f"""
            umask 077
            mkdir -p /srv/ingest/inbox/colleague
            mv /tmp/{name} /srv/ingest/inbox/colleague/{name}
        """)
        root.run(f"setpriv --reuid={colleague_uid} --regid={colleague_gid} --groups={root.ids('ingestd')[1]} "
                 f"sh -c {shlex.quote(drop)}")

        done = root.path(f"/srv/ingest/done/colleague/{name}")
        wait_for(done.exists, timeout=60, what=f"{name} in done/ ({log.read_text()[-2000:] if log.exists() else ''})")
        os.kill(pid, signal.SIGTERM)
        assert proc.wait(60) == 0, log.read_text()[-2000:]
    finally:
        root.kill(proc)


CHROOT = pytest.mark.skipif(can_build() is not None, reason=f"a real install needs a chroot: {can_build()}")
SLOW = pytest.mark.skipif(not os.environ.get("INGESTD_SLOW"), reason="INGESTD_SLOW=1: two virtualenvs built for real")


def other_python() -> Path:
    """The interpreter running the tests, as a second one beside the system's."""
    other = Path(sys.base_prefix)
    if other.parts[1:2] == ("usr",):
        pytest.skip("the tests run on the system's Python: no second interpreter to upgrade with")
    return other


def chroot_with_other_python(tmp_path: Path, other: Path | None) -> Chroot:
    """A chroot where ``other`` is both where it lives on the host (in a home, say) and under /usr/local."""
    root = Chroot(tmp_path / "root", binds={str(other): other, OTHER_PYTHON: other} if other else {})
    copy_source(root.path("/src"))
    if other is None:
        return root
    # A shared libpython is found through the chroot's linker cache, as for any interpreter in /usr/local.
    libs = " ".join(f"{OTHER_PYTHON}/lib/{lib.name}" for lib in (other / "lib").glob("libpython3*.so*"))
    root.run(f"mkdir -p /usr/local/lib && for lib in {libs}; do ln -sf $lib /usr/local/lib/; done; ldconfig")
    return root


def install_with_the_system_python(root: Chroot, other: Path | None) -> None:
    """Root's PATH finds a Python in a home directory first (pyenv, say): the install takes the system one."""
    path = ([f"{other}/bin"] if other else []) + ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    first = root.run("sh /src/deploy/install.sh", env={"PATH": ":".join(path)})
    assert "Python: /usr/bin/python3" in first.stdout, first.stdout
    assert venv_home(root) == "/usr/bin"
    assert "note: /etc/ingestd/ingestd.env has no token yet" in first.stdout
    assert "/etc/ingestd/config.yaml: OK" in first.stdout  # check-config, as the ingestd user
    assert root.has_user("ingestd")
    assert root.run("runuser -u ingestd -- /opt/ingestd/venv/bin/ingestd --version").stdout.startswith("ingestd ")
    if other and home_interpreter():
        refused = root.run(f"sh /src/deploy/install.sh --python {other}/bin/python3", check=False)
        assert refused.returncode == 1 and "under a home directory" in refused.stderr
        assert venv_home(root) == "/usr/bin"


def configure(root: Chroot, base_url: str) -> None:
    """What the admin does next: the config and the token; and a colleague who drops files."""
    root.path("/etc/ingestd/config.yaml").write_text(chroot_config(base_url))
    root.path("/etc/ingestd/ingestd.env").write_text("AIOZ_STREAM_TOKEN=test-token\n")
    root.run("useradd --create-home --groups ingestd colleague")


@CHROOT
def test_install_run_and_uninstall_for_real_in_a_chroot(tmp_path: Path, emulator) -> None:
    other = Path(sys.base_prefix) if Path(sys.base_prefix).parts[1:2] != ("usr",) else None
    root = chroot_with_other_python(tmp_path, other)
    install_with_the_system_python(root, other)
    configure(root, emulator.base_url)
    run_daemon_and_drop(root, tmp_path, "first.wav")

    # Uninstall: program, unit and user gone; config and queue kept; then purged.
    removed = root.run("sh /src/deploy/uninstall.sh")
    assert not root.has_user("ingestd")
    for gone in ("/opt/ingestd", "/usr/local/bin/ingestd", "/etc/systemd/system/ingestd.service"):
        assert not root.path(gone).exists(), gone
    assert root.path("/etc/ingestd/ingestd.env").exists() and any(root.path("/var/lib/ingestd").iterdir())
    assert "removed  user ingestd" in removed.stdout
    root.run("sh /src/deploy/uninstall.sh --purge")
    assert not root.path("/etc/ingestd").exists() and not root.path("/var/lib/ingestd").exists()
    assert [p.name for p in root.path("/srv/ingest/done").rglob("*.wav")] == ["first.wav"]


@CHROOT
@SLOW
@pytest.mark.slow
def test_upgrade_with_another_python_for_real_in_a_chroot(tmp_path: Path, emulator) -> None:
    other = other_python()
    root = chroot_with_other_python(tmp_path, other)
    install_with_the_system_python(root, other)
    configure(root, emulator.base_url)
    run_daemon_and_drop(root, tmp_path, "first.wav")

    # A new virtualenv with another interpreter swapped in; config, token and queue kept.
    before = os.readlink(root.path("/opt/ingestd/venv"))
    upgrade = root.run(f"sh /src/deploy/install.sh --python {OTHER_PYTHON}/bin/python3")
    assert f"Python: {OTHER_PYTHON}/bin/python3" in upgrade.stdout, upgrade.stdout
    assert "kept     /etc/ingestd/config.yaml" in upgrade.stdout
    assert venv_home(root) == f"{OTHER_PYTHON}/bin"
    assert os.readlink(root.path("/opt/ingestd/venv")) != before
    assert [p.name for p in root.path("/opt/ingestd/venvs").iterdir()] == [os.readlink(root.path("/opt/ingestd/venv"))[6:]]
    assert root.path("/etc/ingestd/config.yaml").read_text() == chroot_config(emulator.base_url)
    assert "no token yet" not in upgrade.stdout and "/etc/ingestd/config.yaml: OK" in upgrade.stdout
    run_daemon_and_drop(root, tmp_path, "second.wav")
    jobs = json.loads(root.run("/usr/local/bin/ingestd jobs list --json").stdout)
    assert sorted(Path(j["path"]).name for j in jobs) == ["first.wav", "second.wav"]


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
