"""``ingestd upload FILE``: one file through the pipeline, no daemon, with a progress bar and an honest exit code."""

from __future__ import annotations

import subprocess
import sys

from ingestd import queue as q

from .audio import write_wav, write_wav_of_size
from .daemon import make_config, queue_of

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
    assert "12.0MiB/12.0MiB" in result.stderr and "ETA" in result.stderr
    assert f"media {media['id']}: transcoding" in result.stderr
    assert f"done: media {media['id']}" in result.stderr
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
