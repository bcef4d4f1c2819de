"""``ingestd upload FILE``: one file through the pipeline, no daemon, with a progress bar and an honest exit code."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from ingestd import queue as q
from ingestd.emulator import Faults

from .audio import write_wav, write_wav_of_size
from .daemon import make_config, queue_of, wait_for

MIB = 1024 * 1024


def upload(config, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ingestd", "upload", *args, "--config", str(config)],
                          capture_output=True, text=True, timeout=60)


def test_multi_part_upload_with_progress_waits_for_transcoding(tmp_path, emulator_factory):
    emulator = emulator_factory(transcode_delay=1.0)
    config = make_config(tmp_path, emulator.base_url)
    source = tmp_path / "elsewhere" / "master.wav"
    write_wav_of_size(source, 12 * MIB)
    result = upload(config, str(source))
    assert result.returncode == 0, result.stderr
    [media] = emulator.all_media()
    assert media["status"] == "done" and media["title"] == "master"
    assert emulator.media_file(media["id"]).read_bytes() == source.read_bytes()
    assert len([r for r in emulator.requests if r.path.endswith("/part") and r.status == 200]) == 3
    assert result.stdout.splitlines() == [f"{key}: {media['assets'][key]}" for key in ("hls_url", "dash_url", "hls_player_url")]
    # Into a pipe, no redraws: each of the bar and the spinner is written once, as its summary.
    lines = result.stderr.splitlines()
    assert len(lines) == 3, lines
    assert re.fullmatch(r"upload master\.wav ━+ 12\.0/12\.0 MiB [\d.]+ [kM]?B/s \d\d:\d\d", lines[0]), lines[0]
    assert re.fullmatch(rf"✓ media {media['id']}: transcoded \d:\d\d:\d\d", lines[1]), lines[1]
    assert lines[2] == f"done: media {media['id']} (master)"
    assert source.exists(), "a file outside the watched folders stays where it is"
    [job] = queue_of(tmp_path).list()
    assert job.state == q.DONE and job.media_id == media["id"]


def test_rule_by_name(tmp_path, emulator):
    rules = [{"name": "special", "match": {"filename": "*.never"}, "title": "Special: {stem}", "tags": ["special"]},
             {"name": "default", "title": "{stem}"}]
    config = make_config(tmp_path, emulator.base_url, rules=rules)
    source = tmp_path / "elsewhere" / "talk.wav"
    write_wav(source, 1.0)
    result = upload(config, str(source), "--rule", "special")
    assert result.returncode == 0, result.stderr
    [media] = emulator.all_media()
    assert (media["title"], media["tags"]) == ("Special: talk", ["special"])

    result = upload(config, str(source), "--rule", "nope")
    assert result.returncode == 1
    assert "no rule named 'nope' (rules: special, default)" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_file_that_fails_exits_non_zero_with_the_reason(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    bogus = tmp_path / "elsewhere" / "notes.mp3"
    bogus.parent.mkdir()
    bogus.write_bytes(b"minutes of the meeting\n" * 100)
    result = upload(config, str(bogus))
    assert result.returncode == 1
    assert "failed: not audio" in result.stderr
    assert emulator.all_media() == []
    missing = upload(config, str(tmp_path / "nowhere.wav"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


@pytest.mark.parametrize("kind", ["a directory", "a pipe", "a device"])
def test_what_is_not_a_regular_file_is_refused_before_anything_is_queued(tmp_path, emulator, kind):
    config = make_config(tmp_path, emulator.base_url)
    target = {"a directory": tmp_path / "inbox", "a pipe": tmp_path / "inbox" / "live.wav", "a device": Path("/dev/zero")}[kind]
    if kind == "a pipe":
        os.mkfifo(target)
    result = upload(config, str(target))
    assert result.returncode == 1
    assert result.stderr.strip() == f"ingestd: cannot upload {target}: it is {kind}, not a file"
    assert queue_of(tmp_path).list() == []


def test_a_symbolic_link_is_refused_with_the_file_it_points_to(tmp_path, emulator):
    # Like the daemon, which never follows a link out of a watched folder; the person is told which file to name.
    config = make_config(tmp_path, emulator.base_url)
    real = write_wav(tmp_path / "elsewhere" / "take.wav", 0.2)
    link = tmp_path / "latest.wav"
    link.symlink_to(real)
    result = upload(config, str(link))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"ingestd: cannot upload {link}: it is a symbolic link, not a file; "
                                     f"to upload the file it points to, name it: {real}")
    assert emulator.all_media() == []


def test_upload_force_sends_content_that_was_uploaded_before(tmp_path, emulator):
    config = make_config(tmp_path, emulator.base_url)
    first = tmp_path / "elsewhere" / "take.wav"
    write_wav(first, 0.5)
    assert upload(config, str(first)).returncode == 0
    again = tmp_path / "elsewhere" / "take-again.wav"
    again.write_bytes(first.read_bytes())

    skipped = upload(config, str(again))
    assert len(emulator.all_media()) == 1, skipped.stderr
    forced = upload(config, str(again), "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(m["title"] for m in emulator.all_media()) == ["take", "take-again"]


def test_the_one_shot_command_loads_none_of_the_daemons_machinery():
    # Every start of `ingestd upload` pays for what it imports: the watcher (watchdog), metrics, sd_notify and
    # the emulator's server are the daemon's and the tests', not the one-shot upload's.
    code = "import sys, ingestd.cli as cli; cli.build_parser(); import ingestd.oneshot; print(*sys.modules)"
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split())
    assert "ingestd.oneshot" in loaded
    assert not {"watchdog", "prometheus_client", "sdnotify", "ingestd.service", "ingestd.emulator._server"} & loaded


class Terminal:
    """A real terminal: a tmux server of our own, one 100x30 window running ``command``; its screen as text."""

    def __init__(self, command: list[str]):
        self.server = ["tmux", "-L", f"ingestd-test-{uuid.uuid4().hex[:12]}", "-f", "/dev/null"]
        shell = f"{shlex.join(command)}; echo \"[exited $?]\"; sleep 600"
        subprocess.run([*self.server, "new-session", "-d", "-x", "100", "-y", "30", shell], check=True, timeout=30)

    def screen(self) -> str:
        result = subprocess.run([*self.server, "capture-pane", "-p", "-J"], capture_output=True, text=True, timeout=30)
        return result.stdout

    def press(self, key: str) -> None:
        subprocess.run([*self.server, "send-keys", key], check=True, timeout=30)

    def close(self) -> None:
        subprocess.run([*self.server, "kill-server"], capture_output=True, timeout=30)


@pytest.fixture
def terminal():
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    opened: list[Terminal] = []

    def open_(command: list[str]) -> Terminal:
        opened.append(Terminal(command))
        return opened[-1]

    yield open_
    for term in opened:
        term.close()


def upload_command(config, *args: str) -> list[str]:
    return [sys.executable, "-m", "ingestd", "upload", *args, "--config", str(config)]


def test_progress_on_a_terminal_keeps_its_summary_on_screen(tmp_path, emulator_factory, terminal):
    emulator = emulator_factory(transcode_delay=2.0)
    config = make_config(tmp_path, emulator.base_url)
    source = tmp_path / "elsewhere" / "master.wav"
    write_wav_of_size(source, 12 * MIB)
    term = terminal(upload_command(config, str(source)))

    # While the media transcodes: a spinner with the time it has taken so far.
    spinning = wait_for(lambda: (s := term.screen()) and re.search(r"^\S media \S+: transcoding \d:\d\d:\d\d$", s, re.M) and s,
                        what="the transcoding spinner")
    assert "━" in spinning
    screen = wait_for(lambda: (s := term.screen()) and "[exited 0]" in s and s, what="the upload to end")
    [media] = emulator.all_media()
    lines = [line.rstrip() for line in screen.splitlines() if line.strip()]
    # Each step once, as it ended: no redraws left behind, no stray characters.
    assert sum("upload master.wav" in line for line in lines) == 1, lines
    at = next(i for i, line in enumerate(lines) if line.startswith("upload master.wav"))
    assert re.fullmatch(r"upload master\.wav ━+ 12\.0/12\.0 MiB [\d.]+ [kM]?B/s \d\d:\d\d", lines[at]), lines
    assert re.fullmatch(rf"✓ media {media['id']}: transcoded \d:\d\d:\d\d", lines[at + 1]), lines
    assert lines[at + 2] == f"done: media {media['id']} (master)"
    assert [line.split(": ")[0] for line in lines[at + 3:]] == ["hls_url", "dash_url", "hls_player_url", "[exited 0]"]


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, emulator, terminal):
    # Every part answers slowly, so the upload is still going when the key is pressed.
    emulator.settings.faults = Faults(slow=1.0, slow_seconds=1.0, endpoints=frozenset({"part"}))
    config = make_config(tmp_path, emulator.base_url)
    source = tmp_path / "elsewhere" / "long take.wav"
    write_wav_of_size(source, 12 * MIB)
    term = terminal(upload_command(config, str(source)))
    wait_for(lambda: (jobs := queue_of(tmp_path).list()) and jobs[0].acked_parts, what="a first part acknowledged")
    term.press("C-c")

    screen = wait_for(lambda: (s := term.screen()) and "[exited 130]" in s and s, what="the upload to stop")
    [job] = queue_of(tmp_path).list()
    parts = len(job.acked_parts)
    assert 1 <= parts < 3 and job.state == q.QUEUED
    assert f"interrupted: kept media {job.media_id} and {parts} uploaded part(s)" in screen, screen
    assert f"run `ingestd upload {source}` again to resume from there" in screen
    assert "Traceback" not in screen

    emulator.settings.faults = Faults()
    resumed_at = time.time()
    resumed = upload(config, str(source))
    assert resumed.returncode == 0, resumed.stderr
    [media] = emulator.all_media()
    assert media["id"] == job.media_id and media["status"] == "done"
    assert emulator.media_file(media["id"]).read_bytes() == source.read_bytes()
    sent_again = [r for r in emulator.requests if r.path.endswith("/part") and r.received_at >= resumed_at]
    assert len(sent_again) == 3 - parts, "the kept parts are not sent again"


def test_the_one_shot_command_keeps_its_start_up_objects_out_of_the_collectors_way(tmp_path, emulator):
    # A collection at exit that walks every loaded module's objects cost `ingestd upload` about 70 ms of CPU
    # (bench/throughput.py): once loaded, they are frozen out of the collector's way.
    config = make_config(tmp_path, emulator.base_url)
    source = tmp_path / "elsewhere" / "short.wav"
    write_wav_of_size(source, 64 * 1024)
    probe = ("import gc, sys\nfrom ingestd.cli import main\ncode = main(sys.argv[1:])\n"
             "print(gc.get_freeze_count(), file=sys.stderr)\nsys.exit(code)")
    result = subprocess.run([sys.executable, "-c", probe, "upload", str(source), "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert int(result.stderr.splitlines()[-1]) > 10_000  # the modules' objects, frozen before the upload began
