"""The watcher against real folders, real watchdog observers and real files being written."""

from __future__ import annotations

import os
import subprocess
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import structlog.testing

from ingestd import watcher as watcher_module
from ingestd.config import FolderConfig
from ingestd.probe import is_complete
from ingestd.watcher import ReadyFile, Watcher

from .audio import write_wav

SETTLE = 0.3

# watchdog warns when two inotify events race to add the watch for a freshly made subdirectory;
# it keeps one watch and nothing is lost.
pytestmark = pytest.mark.filterwarnings("ignore:Callback with id .* already exists:RuntimeWarning")


def wait_until(condition: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out after {timeout}s waiting for {what}")


class Recorder:
    """Collects what the watcher hands on, with the monotonic time it happened."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready: list[tuple[float, ReadyFile]] = []
        self.stalled: list[tuple[float, Path, str]] = []

    def on_ready(self, ready: ReadyFile) -> None:
        with self.lock:
            self.ready.append((time.monotonic(), ready))

    def on_stalled(self, path: Path, folder: FolderConfig, reason: str) -> None:
        with self.lock:
            self.stalled.append((time.monotonic(), path, reason))

    def ready_names(self) -> list[str]:
        with self.lock:
            return sorted(r.path.name for _, r in self.ready)

    def ready_for(self, path: Path) -> ReadyFile | None:
        with self.lock:
            return next((r for _, r in self.ready if r.path == path), None)


def folder_config(tmp_path: Path, **overrides) -> FolderConfig:
    values = {
        "path": tmp_path / "inbox", "done_dir": tmp_path / "done", "failed_dir": tmp_path / "failed",
        "settle": SETTLE, "observer": "native", "sidecar": "off",
    } | overrides
    return FolderConfig(**values)


@pytest.fixture
def start_watcher() -> Iterator[Callable[..., tuple[Watcher, Recorder]]]:
    """``start_watcher(folder, **watcher_kwargs)`` starts a watcher; all are stopped after the test."""
    started: list[Watcher] = []

    def start(*folders: FolderConfig, recorder: Recorder | None = None, **kwargs) -> tuple[Watcher, Recorder]:
        recorder = recorder or Recorder()
        kwargs = {"tick": 0.05, "rescan_interval": 3600.0} | kwargs
        kwargs.setdefault("on_ready", recorder.on_ready)
        watcher = Watcher(list(folders), on_stalled=recorder.on_stalled, **kwargs)
        watcher.start()
        started.append(watcher)
        return watcher, recorder

    yield start
    for watcher in started:
        watcher.stop()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    path = tmp_path / "inbox"
    path.mkdir()
    return path


def make_old(path: Path, age: float = 3600.0) -> None:
    past = time.time() - age
    os.utime(path, (past, past))


def test_file_written_at_once_is_reported_once_with_its_stat(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path))
    assert watcher.folder_states() == {inbox: "watching"}
    song = inbox / "song.mp3"
    song.write_bytes(b"x" * 1234)

    wait_until(lambda: recorder.ready, what="song.mp3 to be reported")
    ready = recorder.ready[0][1]
    st = song.stat()
    assert (ready.path, ready.size, ready.inode, ready.mtime_ns) == (song, 1234, st.st_ino, st.st_mtime_ns)
    assert ready.sidecar is None and ready.folder.path == inbox

    song.read_bytes()  # opening and reading must not make it new again
    assert watcher.scan() == 0
    assert watcher.pending() == []
    assert len(recorder.ready) == 1


def test_wav_written_in_pieces_is_reported_only_when_whole(tmp_path, inbox, start_watcher):
    whole = write_wav(tmp_path / "source.wav", seconds=1.0).read_bytes()
    watcher, recorder = start_watcher(folder_config(tmp_path), is_complete=is_complete)
    target = inbox / "take.wav"
    pieces = [whole[:1000], whole[1000:60000], whole[60000:120000], whole[120000:]]

    with target.open("wb") as out:
        for piece in pieces[:-1]:
            out.write(piece)
            out.flush()
            # The pause outlasts settle: the watcher sees a still file whose header promises more.
            wait_until(lambda: [p for p in watcher.pending()
                                if p["waiting_for"] == "complete" and p["size"] == target.stat().st_size],
                       what="the partial WAV to settle as incomplete")
            assert recorder.ready == []
        out.write(pieces[-1])

    wait_until(lambda: recorder.ready, what="the whole WAV to be reported")
    assert recorder.ready[0][1].size == len(whole)
    assert recorder.stalled == []


def test_file_being_appended_waits_settle_after_the_last_write(tmp_path, inbox, start_watcher):
    settle = 0.4
    watcher, recorder = start_watcher(folder_config(tmp_path, settle=settle))
    target = inbox / "growing.mp3"
    with target.open("wb") as out:
        for _ in range(6):
            out.write(b"y" * 4096)
            out.flush()
            last_write = time.monotonic()
            time.sleep(settle / 3)  # the writer's pace, shorter than settle
            assert recorder.ready == []

    wait_until(lambda: recorder.ready, what="growing.mp3 to be reported")
    reported_at, ready = recorder.ready[0]
    assert reported_at - last_write >= settle
    assert ready.size == 6 * 4096


def test_temporary_and_hidden_names_are_ignored(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path))
    ignored = ["a.mp3.part", "b.crdownload", "~$x.mp3", "._x.mp3", ".DS_Store", ".syncthing.x.mp3.tmp",
               ".hidden.mp3", ".cache/deep.mp3", "shows/.staging/ep1.mp3", "notes.txt", "song.yaml", "song.json"]
    for name in ignored:
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(b"z" * 100)
    (inbox / "shows" / "real.mp3").write_bytes(b"z" * 100)

    wait_until(lambda: recorder.ready, what="real.mp3 to be reported")
    assert watcher.scan() == 0
    assert watcher.pending() == []
    assert recorder.ready_names() == ["real.mp3"]


def test_include_patterns_match_extensions_case_insensitively(tmp_path, inbox, start_watcher):
    (inbox / "LOUD.WAV").write_bytes(b"w" * 10)
    (inbox / "quiet.wav").write_bytes(b"w" * 10)
    (inbox / "other.mp3").write_bytes(b"w" * 10)
    watcher, recorder = start_watcher(folder_config(tmp_path, include=["*.wav"], settle=0.1))

    wait_until(lambda: len(recorder.ready) == 2, what="both WAV files")
    assert watcher.scan() == 0 and watcher.pending() == []
    assert recorder.ready_names() == ["LOUD.WAV", "quiet.wav"]


def test_non_recursive_folder_ignores_subfolders(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path, recursive=False))
    (inbox / "sub").mkdir()
    (inbox / "sub" / "nested.mp3").write_bytes(b"n" * 10)
    (inbox / "top.mp3").write_bytes(b"t" * 10)

    wait_until(lambda: recorder.ready, what="top.mp3")
    assert watcher.scan() == 0 and watcher.pending() == []
    assert recorder.ready_names() == ["top.mp3"]


def test_new_subfolders_are_watched_in_recursive_folders(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path))
    moved_in = tmp_path / "elsewhere" / "season1"
    moved_in.mkdir(parents=True)
    (moved_in / "ep1.mp3").write_bytes(b"1" * 10)
    (inbox / "shows").mkdir()
    (moved_in.parent).rename(inbox / "shows" / "moved")  # a whole tree arrives at once
    (inbox / "shows" / "fresh").mkdir()
    (inbox / "shows" / "fresh" / "ep2.mp3").write_bytes(b"2" * 10)

    wait_until(lambda: len(recorder.ready) == 2, what="files in new subfolders")
    assert recorder.ready_for(inbox / "shows" / "moved" / "season1" / "ep1.mp3") is not None
    assert recorder.ready_for(inbox / "shows" / "fresh" / "ep2.mp3") is not None


def test_polling_observer_picks_up_new_files(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path, observer="polling", poll_interval=0.1))
    assert watcher.folder_states() == {inbox: "polling"}
    (inbox / "polled.mp3").write_bytes(b"p" * 10)

    wait_until(lambda: recorder.ready, what="polled.mp3")
    assert recorder.ready_names() == ["polled.mp3"]


def test_rescan_finds_files_the_observer_missed(tmp_path, inbox, start_watcher):
    # A polling observer that never polls in time stands for events the kernel dropped.
    watcher, recorder = start_watcher(folder_config(tmp_path, observer="polling", poll_interval=3600),
                                      rescan_interval=0.3)
    (inbox / "missed.mp3").write_bytes(b"m" * 10)

    wait_until(lambda: recorder.ready, what="the rescan to find missed.mp3")
    assert recorder.ready_names() == ["missed.mp3"]


@pytest.mark.parametrize("observer", ["native", "polling"])
def test_symlinks_directories_and_fifos_are_never_reported(tmp_path, inbox, start_watcher, observer):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "target.mp3").write_bytes(b"o" * 10)
    watcher, recorder = start_watcher(folder_config(tmp_path, observer=observer, poll_interval=0.1))
    (inbox / "link.mp3").symlink_to(outside / "target.mp3")
    (inbox / "linked-dir").symlink_to(outside, target_is_directory=True)
    (inbox / "folder.mp3").mkdir()
    os.mkfifo(inbox / "pipe.mp3")
    (inbox / "real.mp3").write_bytes(b"r" * 10)

    wait_until(lambda: recorder.ready, what="real.mp3")
    assert watcher.scan() == 0 and watcher.pending() == []
    assert recorder.ready_names() == ["real.mp3"]


def test_links_and_fifos_named_like_audio_are_logged_once(tmp_path, inbox, start_watcher):
    (tmp_path / "target.mp3").write_bytes(b"o" * 10)
    (inbox / "link.mp3").symlink_to(tmp_path / "target.mp3")
    os.mkfifo(inbox / "pipe.mp3")
    with structlog.testing.capture_logs() as logs:
        watcher, _ = start_watcher(folder_config(tmp_path))
        watcher.scan()
        watcher.scan()
    skipped = sorted((e["path"], e["kind"]) for e in logs if e["event"] == "not_a_regular_file_skipped")
    assert skipped == [(str(inbox / "link.mp3"), "symlink"), (str(inbox / "pipe.mp3"), "fifo")]


def test_initial_scan_reports_old_files_at_once_and_lets_fresh_ones_settle(tmp_path, inbox, start_watcher):
    old, fresh = inbox / "old.mp3", inbox / "fresh.mp3"
    old.write_bytes(b"o" * 10)
    make_old(old)
    fresh.write_bytes(b"f" * 10)
    watcher, recorder = start_watcher(folder_config(tmp_path, settle=30))

    wait_until(lambda: recorder.ready, timeout=3, what="old.mp3 to be reported without waiting out settle")
    assert recorder.ready_names() == ["old.mp3"]
    assert [(p["path"], p["waiting_for"]) for p in watcher.pending()] == [(str(fresh), "settle")]


def test_a_backlog_of_ten_thousand_files_is_handed_on_within_seconds(tmp_path, inbox, start_watcher):
    past = time.time() - 3600
    for i in range(10_000):
        path = inbox / f"d{i % 20}" / f"file{i}.mp3"
        if i < 20:
            path.parent.mkdir()
        path.write_bytes(b"b")
        os.utime(path, (past, past))

    began = time.monotonic()
    watcher, recorder = start_watcher(folder_config(tmp_path, settle=30))
    wait_until(lambda: len(recorder.ready) == 10_000, timeout=15, what="the whole backlog")
    assert time.monotonic() - began < 15
    assert len({r.path for _, r in recorder.ready}) == 10_000


def test_files_in_done_and_failed_dirs_are_not_candidates(tmp_path, inbox, start_watcher):
    folder = folder_config(tmp_path, done_dir=inbox / "done", failed_dir=inbox / "failed")
    for name in ("done/shows/a.mp3", "failed/b.mp3"):
        (inbox / name).parent.mkdir(parents=True, exist_ok=True)
        (inbox / name).write_bytes(b"d" * 10)
        make_old(inbox / name)
    watcher, recorder = start_watcher(folder)
    (inbox / "done" / "c.mp3").write_bytes(b"d" * 10)
    (inbox / "new.mp3").write_bytes(b"n" * 10)

    wait_until(lambda: recorder.ready, what="new.mp3")
    assert watcher.scan() == 0 and watcher.pending() == []
    assert recorder.ready_names() == ["new.mp3"]


def test_required_sidecar_is_waited_for(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path, sidecar="required", sidecar_wait=10))
    audio = inbox / "episode.mp3"
    audio.write_bytes(b"e" * 10)
    wait_until(lambda: [p for p in watcher.pending() if p["waiting_for"] == "sidecar"], what="waiting for sidecar")
    assert recorder.ready == []

    (inbox / "episode.yaml").write_text("title: Episode\n")
    wait_until(lambda: recorder.ready, what="episode.mp3 with its sidecar")
    assert recorder.ready[0][1].sidecar == inbox / "episode.yaml"
    assert recorder.stalled == []


def test_required_sidecar_that_never_appears_stalls_after_sidecar_wait(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path, sidecar="required", sidecar_wait=1))
    written = time.monotonic()
    (inbox / "lonely.mp3").write_bytes(b"l" * 10)

    wait_until(lambda: recorder.stalled, what="lonely.mp3 to stall")
    stalled_at, path, reason = recorder.stalled[0]
    assert path == inbox / "lonely.mp3"
    assert reason == "sidecar lonely.yaml/.json is required but did not appear within 1s"
    assert stalled_at - written >= SETTLE + 1
    assert recorder.ready == [] and watcher.pending() == []


def test_optional_sidecar_is_reported_once_it_has_settled(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path, sidecar="optional"))
    (inbox / "with.mp3").write_bytes(b"w" * 10)
    (inbox / "with.json").write_text('{"title": "With"}')
    (inbox / "without.mp3").write_bytes(b"o" * 10)

    wait_until(lambda: len(recorder.ready) == 2, what="both files")
    assert recorder.ready_for(inbox / "with.mp3").sidecar == inbox / "with.json"
    assert recorder.ready_for(inbox / "without.mp3").sidecar is None


def test_file_that_never_settles_stalls_after_max_wait(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path, max_wait=1))
    target = inbox / "endless.mp3"
    began = time.monotonic()
    with target.open("wb") as out:
        while not recorder.stalled and time.monotonic() - began < 5:
            out.write(b"e" * 1024)
            out.flush()
            time.sleep(0.05)  # the writer's pace

    assert recorder.stalled, "a file that keeps changing must stall after max_wait"
    stalled_at, path, reason = recorder.stalled[0]
    assert path == target
    assert reason.startswith("still changing after 1s; ")
    assert stalled_at - began >= 1
    assert recorder.ready == []


def test_removed_folder_pauses_then_resumes_and_picks_up_new_files(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path))
    shutil.rmtree(inbox)
    wait_until(lambda: watcher.folder_states()[inbox] == "paused: folder does not exist", what="pause")

    inbox.mkdir()
    wait_until(lambda: watcher.folder_states()[inbox] == "watching", what="resume")
    (inbox / "after.mp3").write_bytes(b"a" * 10)
    wait_until(lambda: recorder.ready, what="after.mp3")
    assert recorder.ready_names() == ["after.mp3"]
    assert recorder.stalled == []


def test_folder_that_goes_away_keeps_its_candidates_without_stalling_them(tmp_path, inbox, start_watcher):
    watcher, recorder = start_watcher(folder_config(tmp_path, sidecar="required", sidecar_wait=2))
    (inbox / "show.mp3").write_bytes(b"s" * 10)
    wait_until(lambda: [p for p in watcher.pending() if p["waiting_for"] == "sidecar"], what="waiting for sidecar")

    away = tmp_path / "unmounted"
    inbox.rename(away)  # the share is gone; the files are not deleted
    wait_until(lambda: watcher.folder_states()[inbox].startswith("paused: "), what="pause")
    time.sleep(2.5)  # longer than sidecar_wait: being paused must not count against it
    assert recorder.stalled == [] and recorder.ready == []
    assert [(p["path"], p["waiting_for"]) for p in watcher.pending()] == [(str(inbox / "show.mp3"), "folder")]

    away.rename(inbox)
    wait_until(lambda: watcher.folder_states()[inbox] == "watching", what="resume")
    (inbox / "show.yaml").write_text("title: Show\n")
    wait_until(lambda: recorder.ready or recorder.stalled, what="show.mp3 to be handed on")
    assert recorder.stalled == []
    assert recorder.ready[0][1].sidecar == inbox / "show.yaml"


def _mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


def test_an_unmounted_share_pauses_its_folder_and_loses_nothing(tmp_path, inbox, start_watcher):
    share = tmp_path / "share"  # a filesystem of its own, as a network share is
    share.mkdir()
    mounted = _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(share))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount here: {mounted.stderr.strip()}")
    try:
        (share / "show.mp3").write_bytes(b"s" * 10)
        assert _mount("--bind", str(share), str(inbox)).returncode == 0
        watcher, recorder = start_watcher(folder_config(tmp_path, sidecar="required", sidecar_wait=30))
        wait_until(lambda: [p for p in watcher.pending() if p["waiting_for"] == "sidecar"], what="waiting for sidecar")

        subprocess.run(["umount", str(inbox)], check=True)  # the share drops away; an empty mount point is left
        wait_until(lambda: watcher.folder_states()[inbox].startswith("paused: "), what="pause on unmount")
        assert "not mounted" in watcher.folder_states()[inbox]
        assert [(p["path"], p["waiting_for"]) for p in watcher.pending()] == [(str(inbox / "show.mp3"), "folder")]
        assert recorder.stalled == [] and recorder.ready == []

        assert _mount("--bind", str(share), str(inbox)).returncode == 0
        wait_until(lambda: watcher.folder_states()[inbox] == "watching", what="resume on remount")
        (share / "show.yaml").write_text("title: Show\n")
        wait_until(lambda: recorder.ready or recorder.stalled, what="show.mp3 to be handed on")
        assert recorder.stalled == []
        assert recorder.ready[0][1].sidecar == inbox / "show.yaml"
    finally:
        subprocess.run(["umount", "-l", str(inbox)], capture_output=True)
        subprocess.run(["umount", "-l", str(share)], capture_output=True)


def test_folder_missing_at_start_is_paused_not_fatal(tmp_path, start_watcher):
    inbox = tmp_path / "inbox"
    watcher, recorder = start_watcher(folder_config(tmp_path))
    assert watcher.folder_states() == {inbox: "paused: folder does not exist"}

    inbox.mkdir()
    wait_until(lambda: watcher.folder_states()[inbox] == "watching", what="the folder to be watched")
    (inbox / "first.mp3").write_bytes(b"f" * 10)
    wait_until(lambda: recorder.ready, what="first.mp3")
    assert recorder.ready_names() == ["first.mp3"]


def test_unicode_and_space_names_are_reported_exactly_as_written(tmp_path, inbox, start_watcher):
    names = ["Café del Mar – ep 1.mp3", "Cafe\u0301 decomposed.mp3", "日本語 ファイル.flac", "  spaced  .ogg"]
    (inbox / "Sous dossier é").mkdir()
    watcher, recorder = start_watcher(folder_config(tmp_path))
    for name in names:
        (inbox / "Sous dossier é" / name).write_bytes(b"u" * 10)

    wait_until(lambda: len(recorder.ready) == len(names), what="every unicode name")
    assert sorted(r.path.name for _, r in recorder.ready) == sorted(names)
    assert all(r.path.exists() for _, r in recorder.ready)


def test_failing_callback_does_not_stop_the_watcher_and_the_file_is_offered_again(tmp_path, inbox, start_watcher):
    recorder = Recorder()
    calls: list[str] = []

    def flaky_on_ready(ready: ReadyFile) -> None:
        calls.append(ready.path.name)
        if calls.count(ready.path.name) == 1 and ready.path.name == "first.mp3":
            raise RuntimeError("queue is locked")
        recorder.on_ready(ready)

    watcher, _ = start_watcher(folder_config(tmp_path), recorder=recorder, on_ready=flaky_on_ready)
    (inbox / "first.mp3").write_bytes(b"1" * 10)
    wait_until(lambda: calls, what="the first attempt")
    (inbox / "second.mp3").write_bytes(b"2" * 10)
    wait_until(lambda: recorder.ready, what="second.mp3 after the failure")

    assert watcher.scan() == 1
    wait_until(lambda: len(recorder.ready) == 2, what="first.mp3 offered again")
    assert recorder.ready_names() == ["first.mp3", "second.mp3"]


def test_auto_observer_polls_network_filesystems(tmp_path, monkeypatch, start_watcher):
    inbox = tmp_path / "remote share"
    inbox.mkdir()
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
        f"90 22 0:51 / {str(inbox.resolve()).replace(' ', chr(92) + '040')} rw,nosuid shared:50 "
        "- fuse.sshfs user@host:/srv rw,user_id=0\n"
    )
    monkeypatch.setattr(watcher_module, "MOUNTINFO", mountinfo)
    local = tmp_path / "local"
    local.mkdir()

    watcher, recorder = start_watcher(
        folder_config(tmp_path, path=inbox, observer="auto", poll_interval=0.1),
        folder_config(tmp_path, path=local, observer="auto"),
    )
    assert watcher.folder_states() == {inbox: "polling", local: "watching"}
    (inbox / "remote.mp3").write_bytes(b"r" * 10)
    wait_until(lambda: recorder.ready, what="remote.mp3 via polling")


def test_inotify_limit_warning_names_the_sysctl_fix(tmp_path, inbox, monkeypatch, start_watcher):
    for name in ("a", "b", "c/d"):
        (inbox / name).mkdir(parents=True)
    limit = tmp_path / "max_user_watches"
    monkeypatch.setattr(watcher_module, "INOTIFY_MAX_USER_WATCHES", limit)
    watcher = Watcher([folder_config(tmp_path)], on_ready=lambda r: None, on_stalled=lambda p, f, r: None)

    limit.write_text("5\n")  # inbox, a, b, c, c/d
    assert watcher.check_inotify_limits() is None
    limit.write_text("4\n")
    message = watcher.check_inotify_limits()
    assert message is not None
    assert "need about 5 inotify watches" in message and "is 4" in message
    assert "sysctl fs.inotify.max_user_watches=524288" in message


def test_a_file_being_handed_on_is_still_pending_so_it_is_never_in_neither_place(tmp_path, inbox, start_watcher):
    # The service reports ready once nothing is pending and nothing is on its way to the queue; a file that has
    # left pending() before on_ready counted it would let READY through with the file in neither place.
    song = inbox / "waiting.mp3"
    song.write_bytes(b"w" * 10)
    make_old(song)
    seen_while_handing_on: list[list[dict]] = []
    holder: list[Watcher] = []
    recorder = Recorder()

    def on_ready(ready: ReadyFile) -> None:
        wait_until(lambda: holder, what="the watcher")
        seen_while_handing_on.append(holder[0].pending())
        recorder.on_ready(ready)

    watcher, _ = start_watcher(folder_config(tmp_path), recorder=recorder, on_ready=on_ready)
    holder.append(watcher)
    wait_until(lambda: recorder.ready, what="waiting.mp3")
    assert [[(p["path"], p["waiting_for"]) for p in seen] for seen in seen_while_handing_on] == [[(str(song), "handoff")]]
    assert watcher.pending() == []


def test_startup_backlog_is_judged_on_the_listing_without_a_stat_per_file(tmp_path, inbox, start_watcher, monkeypatch):
    """A backlog already in the folder: the listing's own stat serves each file, its names serve the sidecar lookups."""
    songs = []
    for n in range(200):
        song = inbox / f"take-{n:03d}.mp3"
        song.write_bytes(b"s" * 10)
        make_old(song)
        songs.append(song)
    described = songs[::10]
    for song in described:
        song.with_suffix(".yaml").write_text("title: Take\n")
        make_old(song.with_suffix(".yaml"))
    stats: list[object] = []
    for name in ("stat", "lstat"):
        def counting(target, *args, _real=getattr(os, name), **kwargs):
            stats.append(target)
            return _real(target, *args, **kwargs)
        monkeypatch.setattr(os, name, counting)

    watcher, recorder = start_watcher(folder_config(tmp_path, sidecar="optional"))
    wait_until(lambda: len(recorder.ready) == len(songs), what="the whole backlog")

    sidecars = {ready.path: ready.sidecar for _, ready in recorder.ready}
    assert {path for path, sidecar in sidecars.items() if sidecar} == set(described)
    assert all(sidecars[song] == song.with_suffix(".yaml") for song in described)
    in_inbox = [t for t in stats if isinstance(t, (str, os.PathLike)) and Path(t).parent == inbox]
    # One lstat for each sidecar the listing named, none for the audio files or for sidecars that are not there.
    assert len(in_inbox) <= len(described)
