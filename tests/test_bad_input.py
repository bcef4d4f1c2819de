"""Bad input, one kind per test: each ends failed with a reason or is ignored, and a good file still goes through."""

from __future__ import annotations

import json
import os
import shutil
import unicodedata

import pytest

from ingestd import queue as q

from .audio import write_wav
from .daemon import Daemon, drop, jobs_in, make_config, queue_of, wait_for


def _with_a_good_file(tmp_path, emulator, make_bad, *, until, daemon_prefix=(), **config):
    """Start the daemon, put the bad input in the inbox, drop a good file; wait until ``until()`` holds."""
    with Daemon(make_config(tmp_path, emulator.base_url, **config), prefix=daemon_prefix) as daemon:
        wait_for(lambda: "ready" in daemon.log(), what="daemon ready")
        make_bad(tmp_path / "inbox")
        drop(tmp_path, "good.wav", freq=523.0)
        wait_for(lambda: any(j.relpath == "good.wav" for j in jobs_in(tmp_path, q.DONE)), timeout=30, what="the good file done")
        result = wait_for(until, timeout=30, what="the bad input's outcome")
        assert daemon.proc.poll() is None, "the daemon kept running"
        assert daemon.stop() == 0
    return result, daemon.log()


def _failed_reason(tmp_path, name):
    def check():
        report = tmp_path / "failed" / (name + ".error.json")
        return report.exists() and json.loads(report.read_text())["reason"]
    return check


@pytest.mark.parametrize(("name", "content", "reason"), [
    ("silence.wav", b"", "empty (0 bytes)"),
    ("notes.mp3", b"these are meeting notes, not audio\n" * 50, "audio"),
    ("garbage.flac", os.urandom(64 * 1024), "audio"),
])
def test_unusable_content_fails_with_a_reason(tmp_path, emulator, name, content, reason):
    got, _ = _with_a_good_file(tmp_path, emulator, lambda inbox: (inbox / name).write_bytes(content),
                               until=_failed_reason(tmp_path, name))
    assert reason in got
    assert (tmp_path / "failed" / name).read_bytes() == content
    assert len(emulator.all_media()) == 1


def test_truncated_audio_fails_with_a_reason(tmp_path, emulator):
    def truncated(inbox):
        staging = write_wav(tmp_path / "staging" / "cut.wav", 2.0)
        with open(staging, "r+b") as out:
            out.truncate(os.path.getsize(staging) // 2)  # the header still promises two seconds
        staging.rename(inbox / "cut.wav")

    got, _ = _with_a_good_file(tmp_path, emulator, truncated, until=_failed_reason(tmp_path, "cut.wav"),
                               folder={"max_wait": 2})
    assert got
    assert not (tmp_path / "inbox" / "cut.wav").exists()
    assert len(emulator.all_media()) == 1


def test_a_symlink_is_never_followed_or_uploaded(tmp_path, emulator):
    outside = write_wav(tmp_path / "private" / "secret.wav", 0.5, freq=700.0)

    def link(inbox):
        (inbox / "link.wav").symlink_to(outside)

    def settled():
        # Give the watcher a full scan after the link appeared: the good file done proves one happened.
        return True

    _with_a_good_file(tmp_path, emulator, link, until=settled)
    assert [j.relpath for j in queue_of(tmp_path).list()] == ["good.wav"]
    assert (tmp_path / "inbox" / "link.wav").is_symlink() and outside.exists()
    assert [m["title"] for m in emulator.all_media()] == ["good"]


def test_a_directory_and_a_fifo_named_like_audio_are_ignored(tmp_path, emulator):
    def odd(inbox):
        (inbox / "album.wav").mkdir()
        os.mkfifo(inbox / "pipe.mp3")

    _with_a_good_file(tmp_path, emulator, odd, until=lambda: True)
    assert [j.relpath for j in queue_of(tmp_path).list()] == ["good.wav"]
    assert (tmp_path / "inbox" / "album.wav").is_dir() and (tmp_path / "inbox" / "pipe.mp3").exists()


# Root reads files whatever their mode says; without these two capabilities it obeys the mode like anyone.
WITHOUT_READ_OVERRIDE = (["setpriv", "--inh-caps=-dac_override,-dac_read_search",
                          "--bounding-set=-dac_override,-dac_read_search"] if os.geteuid() == 0 else [])


@pytest.mark.skipif(os.geteuid() == 0 and not shutil.which("setpriv"), reason="as root this needs setpriv to drop read rights")
def test_an_unreadable_file_fails_with_a_reason(tmp_path, emulator):
    def locked(inbox):
        path = write_wav(tmp_path / "staging" / "locked.wav", 0.5)
        path.chmod(0)
        path.rename(inbox / "locked.wav")

    got, _ = _with_a_good_file(tmp_path, emulator, locked, until=_failed_reason(tmp_path, "locked.wav"),
                               daemon_prefix=WITHOUT_READ_OVERRIDE)
    assert "read" in got


def test_awkward_names_upload_with_nfc_titles(tmp_path, emulator):
    nfc = unicodedata.normalize("NFC", "Café live")
    nfd = unicodedata.normalize("NFD", "Café live")
    names = [f"{nfc}.wav", f"{nfd}.wav", "two  spaces .wav", "line\nbreak.wav"]

    def awkward(inbox):
        for n, name in enumerate(names):
            drop(tmp_path, name, freq=300.0 + 40 * n)

    _with_a_good_file(tmp_path, emulator, awkward,
                      until=lambda: len(jobs_in(tmp_path, q.DONE)) == len(names) + 1)
    titles = [m["title"] for m in emulator.all_media()]
    assert len(titles) == len(names) + 1
    assert titles.count(nfc) == 2, "the NFD twin's title is normalized to NFC"
    assert "two  spaces" in titles, "inner spaces kept, the trailing one trimmed"
    assert [t for t in titles if t.startswith("line") and t.endswith("break")]
    filed = {p.name for p in (tmp_path / "done").iterdir() if p.suffix == ".wav"}
    assert filed == set(names) | {"good.wav"}, "both Unicode twins kept their own names"


def test_a_file_over_max_file_size_fails_without_uploading(tmp_path, emulator):
    def big(inbox):
        drop(tmp_path, "huge.wav", seconds=2.0, freq=650.0)

    got, _ = _with_a_good_file(tmp_path, emulator, big, until=_failed_reason(tmp_path, "huge.wav"),
                               upload={"max_file_size": 300_000})
    assert "more than the 300000 bytes" in got
    assert [m["title"] for m in emulator.all_media()] == ["good"]


def test_the_same_file_dropped_twice_is_uploaded_once_and_both_kept(tmp_path, emulator):
    with Daemon(make_config(tmp_path, emulator.base_url)) as daemon:
        first = drop(tmp_path, "again.wav")
        original = first.read_bytes()
        [done] = wait_for(lambda: jobs_in(tmp_path, q.DONE), timeout=30, what="first upload")
        drop(tmp_path, "again.wav")
        [skipped] = wait_for(lambda: jobs_in(tmp_path, q.SKIPPED), timeout=30, what="second copy skipped")
        daemon.stop()
    assert [m["id"] for m in emulator.all_media()] == [done.media_id]
    assert (tmp_path / "done" / "again.wav").read_bytes() == original
    assert skipped.final_path != done.final_path
    assert open(skipped.final_path, "rb").read() == original, "the second copy is filed beside, not over, the first"
    assert done.media_id in skipped.error
