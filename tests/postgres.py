"""A real PostgreSQL server for the tests: initdb and pg_ctl in a temp folder, on a free loopback port.

Debian's ``postgresql`` package provides the binaries (``make test`` installs it when run as root). The server
never runs as root: as root we start it as the ``postgres`` user (or ``nobody``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import psycopg

from .daemon import free_port


def server_binaries() -> Path | None:
    """The newest installed PostgreSQL's bin folder (Debian keeps them under /usr/lib/postgresql/VERSION/bin)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parent.parent.name))
    if found:
        return Path(found[-1]).parent
    pg_ctl = shutil.which("pg_ctl")
    return Path(pg_ctl).parent if pg_ctl else None



def _unprivileged_user() -> pwd.struct_passwd | None:
    """Who runs the server when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError("running as root, and neither a 'postgres' nor a 'nobody' user exists to run PostgreSQL")


class PostgresServer:
    """One throwaway cluster; ``url()`` gives each test its own schema in it."""

    def __init__(self, bin_dir: Path, *, durable: bool = False):
        self.bin = bin_dir
        self.durable = durable
        self.user = _unprivileged_user()
        # Not under pytest's tmp_path: that is private to root, and the server runs as someone else.
        self.dir = Path(tempfile.mkdtemp(prefix="ingestd-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self.base_url = f"postgresql://ingestd@127.0.0.1:{self.port}/ingestd"

    def _run(self, *args: str) -> None:
        prefix = []
        if self.user is not None:
            prefix = ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups"]
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=120,
                                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"}, cwd=self.dir)
        if result.returncode != 0:
            log = (self.dir / "server.log").read_text(errors="replace") if (self.dir / "server.log").exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n{result.stdout}{result.stderr}{log}")

    def start(self) -> "PostgresServer":
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "ingestd", "--auth=trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c max_connections=200"
        if not self.durable:
            # No fsync: a test server that loses its data in a power cut loses nothing of value. (Benchmarks keep it.)
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._options = options
        self.start_server()
        with psycopg.connect(f"postgresql://ingestd@127.0.0.1:{self.port}/postgres", autocommit=True) as db:
            db.execute("CREATE DATABASE ingestd")
        return self

    def start_server(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data),
                  "-l", str(self.dir / "server.log"), "-o", self._options)

    def stop_server(self) -> None:
        """The server stops, its data stays (an outage, not a loss)."""
        self._run(str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "stop", "-D", str(self.data), "-m", "fast", "-w", "-t", "60")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, schema: str | None = None) -> str:
        """A URL whose tables live in a schema of their own, created empty."""
        schema = schema or "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.base_url, autocommit=True) as db:
            db.execute(f'CREATE SCHEMA "{schema}"')
        return f"{self.base_url}?options={quote(f'-csearch_path={schema}')}"
