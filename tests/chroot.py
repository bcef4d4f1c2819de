"""A throw-away root file system for running deploy/install.sh for real, as root, without touching the host.

The host's /usr is seen through an overlay (what the install writes under /usr stays in the chroot), /etc is a
copy (useradd edits the copy's passwd), and /var, /opt, /srv, /root, /tmp start empty. Every command runs in
its own mount namespace, so the mounts vanish with it; the network and process ids are the host's, so the
chroot reaches the test's emulator on loopback and a daemon in it can be signalled from the test.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
from pathlib import Path

# pip's own settings (an index, a wheel cache) and a proxy, if the host has them.
PASSED_ENV = ("PIP_", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy")


def can_build() -> str | None:
    """Why a chroot cannot be made here, or None."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("unshare", "chroot", "mount", "runuser"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    probe = subprocess.run(["unshare", "--mount", "sh", "-c", "mount --make-rprivate / && mount -t tmpfs t /mnt"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot mount in a new mount namespace: {probe.stderr.strip()}"
    return None


class Chroot:
    def __init__(self, root: Path, *, binds: dict[str, Path] | None = None):
        """``binds``: path inside the chroot → host path, mounted (read-only) for every command."""
        self.root = root
        self.binds = {"/opt/wheels": Path("/opt/wheels"), "/opt/pypi": Path("/opt/pypi"),
                      "/opt/pypi-more": Path("/opt/pypi-more")} | (binds or {})
        self.binds = {inside: host for inside, host in self.binds.items() if host.exists()}
        for name in ("dev", "proc", "tmp", "run", "var/tmp", "var/log", "var/lib", "opt", "srv", "usr",
                     ".usr-upper", ".usr-work"):
            (root / name).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        (root / "root").mkdir(mode=0o700, exist_ok=True)
        for link in ("bin", "sbin", "lib", "lib64"):
            if os.path.islink(f"/{link}"):
                (root / link).symlink_to(os.readlink(f"/{link}"))
        shutil.copytree("/etc", root / "etc", symlinks=True, ignore_dangling_symlinks=True)
        # The chroot's own users: none of the host's service users carry over by accident.
        for name in ("passwd", "group", "shadow", "gshadow"):
            lines = (root / "etc" / name).read_text().splitlines(keepends=True)
            (root / "etc" / name).write_text("".join(line for line in lines if not line.startswith("ingestd:")))

    def path(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def _argv(self, script: str, env: dict[str, str] | None) -> list[str]:
        root = shlex.quote(str(self.root))
        mounts = [
            "set -e",
            "mount --make-rprivate /",
            f"mount -t overlay overlay -o lowerdir=/usr,upperdir={root}/.usr-upper,workdir={root}/.usr-work {root}/usr",
            f"mount --rbind /dev {root}/dev",
            f"mount -t proc proc {root}/proc",
        ]
        for inside, host in self.binds.items():
            target = shlex.quote(str(self.path(inside)))
            mounts += [f"mkdir -p {target}", f"mount --bind {shlex.quote(str(host))} {target}",
                       f"mount -o remount,bind,ro {target}"]
        passed = {k: v for k, v in os.environ.items() if k.startswith(PASSED_ENV)}
        environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root",
                       "LANG": "C.UTF-8"} | passed | (env or {})
        assignments = " ".join(shlex.quote(f"{k}={v}") for k, v in environment.items())
        mounts.append(f"exec chroot {root} /usr/bin/env -i {assignments} /bin/sh -c {shlex.quote(script)}")
        return ["unshare", "--mount", "sh", "-c", "\n".join(mounts)]

    def run(self, script: str, *, env: dict[str, str] | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run ``script`` with /bin/sh as root inside the chroot."""
        result = subprocess.run(self._argv(script, env), capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"{script!r} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
        return result

    def start(self, script: str, log: Path, *, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start ``script`` in its own process group, so ``kill`` reaches what runuser started too."""
        with open(log, "ab") as out:
            return subprocess.Popen(self._argv(script, env), stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def ids(self, user: str) -> tuple[int, int]:
        """(uid, gid) of a user of the chroot."""
        for line in self.path("/etc/passwd").read_text().splitlines():
            fields = line.split(":")
            if fields[0] == user:
                return int(fields[2]), int(fields[3])
        raise KeyError(user)

    def has_user(self, user: str) -> bool:
        try:
            self.ids(user)
        except KeyError:
            return False
        return True
