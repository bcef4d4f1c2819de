"""Under systemd, what the daemon writes carries syslog priorities, so `journalctl -p err` finds the errors."""

from __future__ import annotations

import json
import os
import re

from .daemon import Daemon, make_config, wait_for


def journal_env(log_path) -> dict[str, str]:
    """JOURNAL_STREAM as systemd sets it: the device and inode of the stream it gave the service."""
    log_path.touch()
    st = os.stat(log_path)
    return {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}


def priorities(text: str) -> list[tuple[int, dict]]:
    found = []
    for line in text.splitlines():
        match = re.fullmatch(r"<(\d)>(\{.*\})", line)
        assert match, f"a line without its priority: {line!r}"
        found.append((int(match.group(1)), json.loads(match.group(2))))
    return found


def test_every_line_the_daemon_writes_to_the_journal_starts_with_its_priority(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url, folder={"path": str(tmp_path / "not-mounted")})
    log_path = config.parent / "daemon.log"
    with Daemon(config, env=journal_env(log_path)) as daemon:
        wait_for(lambda: '"event": "ready"' in daemon.log(), what="ready")
        assert daemon.stop() == 0

    events = {event["event"]: priority for priority, event in priorities(daemon.log())}
    assert events["folder_missing"] == 3  # err: journalctl -p err shows it
    assert events["ready"] == 6  # info
    assert events["reconciled"] == 6
    assert events["folder_paused"] == 4  # warning
    syslog = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
    assert all(priority == syslog[event["level"]] for priority, event in priorities(daemon.log()))


def test_config_problems_at_start_are_errors_in_the_journal(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    config.write_text(config.read_text().replace("workers: 2", "workers: many"))
    log_path = config.parent / "daemon.log"
    with Daemon(config, env=journal_env(log_path)) as daemon:
        assert daemon.wait_exit() == 78
    assert re.fullmatch(rf"<3>{re.escape(str(config))}:\d+: upload\.workers: .*\n", daemon.log())


def test_without_the_journal_lines_carry_no_prefix(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    # Started from a shell inside a systemd session: the variable is inherited, the stream is another one.
    with Daemon(config, env={"JOURNAL_STREAM": "8:12345"}) as daemon:
        wait_for(lambda: '"event": "ready"' in daemon.log(), what="ready")
        assert daemon.stop() == 0
    lines = daemon.log().splitlines()
    assert lines and all(line.startswith("{") for line in lines), lines[:3]
