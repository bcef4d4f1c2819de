"""The ``ingestd`` command in-process, against the emulator and a real queue."""

from __future__ import annotations

import json
import re
import time

import pytest

from ingestd import queue as q
from ingestd.cli import build_parser, main
from ingestd.client import StreamClient
from ingestd.media_schema import CreateRequest

from .audio import write_wav
from .daemon import Daemon, drop, jobs_in, make_config, queue_of, wait_for


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def seeded(emulator):
    """Five media with distinct titles, tags and metadata, created through the API."""
    with StreamClient(emulator.base_url, token="test-token") as client:
        ids = [client.create_media(CreateRequest(
            type="audio", title=f"Show {n}", description="a talk show" if n % 2 else "music",
            tags=["even" if n % 2 == 0 else "odd"], metadata=[{"key": "n", "value": str(n)}],
        )).id for n in range(5)]
    return ids


def test_help_of_every_command():
    parser = build_parser()
    commands = [[]]
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            commands.append([name])
            nested = [a for a in sub._actions if a.__class__.__name__ == "_SubParsersAction"]
            commands += [[name, child] for a in nested for child in a.choices]
    assert ["media", "cost"] in commands and ["jobs", "retry"] in commands
    for argv in commands:
        with pytest.raises(SystemExit) as exit_:
            main([*argv, "--help"])
        assert exit_.value.code == 0, argv


def test_check_config_ok_and_78_with_locations(tmp_path, emulator, capsys):
    config = make_config(tmp_path, emulator.base_url)
    code, out, _ = run(capsys, "check-config", "--config", str(config))
    assert code == 0 and "OK" in out
    config.write_text(config.read_text().replace("workers: 2", "workers: many"))
    code, _, err = run(capsys, "check-config", "--config", str(config))
    assert code == 78
    assert re.search(rf"^{re.escape(str(config))}:\d+: upload\.workers: ", err, re.M), err


def test_check_config_passed_a_watched_folder_that_does_not_exist(tmp_path, emulator, capsys):
    config = make_config(tmp_path, emulator.base_url)
    (tmp_path / "inbox").rmdir()
    code, out, err = run(capsys, "check-config", "--config", str(config))
    assert code == 78 and out == ""
    line = next(n for n, text in enumerate(config.read_text().splitlines(), 1) if "inbox" in text)
    assert f"{config}:{line}: folders[0].path: {tmp_path / 'inbox'} does not exist, so nothing would be watched" in err
    assert "set optional: true on a share that is mounted later" in err


def test_an_optional_folder_that_is_missing_is_a_warning(tmp_path, emulator, capsys):
    config = make_config(tmp_path, emulator.base_url, folder={"optional": True})
    (tmp_path / "inbox").rmdir()
    code, out, err = run(capsys, "check-config", "--config", str(config))
    assert code == 0 and "OK" in out
    assert f"folders[0].path: warning: {tmp_path / 'inbox'} does not exist (yet); it is optional" in err


def test_explain_names_the_rule_and_fails_when_none_matches(tmp_path, emulator, capsys):
    rules = [{"name": "episodes", "match": {"regex": r"^(?P<show>.+)_ep(?P<ep>\d+)\.wav$"}, "title": "{show} #{ep}"}]
    config = make_config(tmp_path, emulator.base_url, rules=rules)
    matching, other = tmp_path / "inbox" / "talk_ep3.wav", tmp_path / "inbox" / "random.wav"
    write_wav(matching, 0.5)
    write_wav(other, 0.5)
    code, out, _ = run(capsys, "explain", str(matching), "--config", str(config), "--json")
    data = json.loads(out)
    assert code == 0
    assert data["request"]["title"] == "talk #3"
    code, out, _ = run(capsys, "explain", str(other), "--config", str(config))
    assert code == 1
    assert "episodes" in out


def test_status_and_jobs_with_ingestd_config(tmp_path, emulator, capsys, monkeypatch):
    config = make_config(tmp_path, emulator.base_url)
    monkeypatch.setenv("INGESTD_CONFIG", str(config))
    with Daemon(config) as daemon:
        drop(tmp_path, "one.wav")
        [job] = wait_for(lambda: jobs_in(tmp_path, q.DONE), what="done job")
        assert daemon.stop() == 0
    code, out, _ = run(capsys, "status", "--json")
    assert code == 0 and json.loads(out)["counts"]["done"] == 1
    code, out, _ = run(capsys, "status")
    assert re.search(r"^done\s+1$", out, re.M)
    code, out, _ = run(capsys, "jobs", "list", "--json")
    assert [j["id"] for j in json.loads(out)] == [job.id]
    code, out, _ = run(capsys, "jobs", "list")
    assert job.id[:12] in out and "one.wav" in out
    code, out, _ = run(capsys, "jobs", "show", job.id[:8], "--json")
    shown = json.loads(out)
    assert shown["media_id"] == job.media_id
    assert [e["event"] for e in shown["events"]][0] == "enqueued"
    code, _, err = run(capsys, "jobs", "show", "nope")
    assert code == 1 and "no job matches" in err
    monkeypatch.delenv("INGESTD_CONFIG")
    code, _, err = run(capsys, "status")
    assert code == 1 and "INGESTD_CONFIG" in err


def test_retry_brings_a_failed_file_back_and_it_succeeds(tmp_path, emulator, capsys):
    config = make_config(tmp_path, emulator.base_url)
    emulator.settings.faults.transcode_fail = 1.0
    with Daemon(config) as daemon:
        drop(tmp_path, "flaky.wav")
        [failed] = wait_for(lambda: jobs_in(tmp_path, q.FAILED), what="failed job")
        assert (tmp_path / "failed" / "flaky.wav.error.json").exists()
        emulator.settings.faults.transcode_fail = 0.0
        code, out, _ = run(capsys, "jobs", "retry", failed.id[:12], "--config", str(config))
        assert code == 0 and "queued again" in out
        assert not (tmp_path / "failed" / "flaky.wav").exists()
        assert not (tmp_path / "failed" / "flaky.wav.error.json").exists()
        [done] = wait_for(lambda: jobs_in(tmp_path, q.DONE), what="retried job done")
        assert daemon.stop() == 0
    assert done.id == failed.id
    assert (tmp_path / "done" / "flaky.wav").exists()
    assert [m["status"] for m in emulator.all_media()] == ["done"]


def test_cancel_deletes_the_media_and_files_the_source_as_failed(tmp_path, emulator, capsys):
    config = make_config(tmp_path, emulator.base_url)
    emulator.settings.transcode_delay = 600  # stays transcoding
    with Daemon(config) as daemon:
        drop(tmp_path, "long-transcode.wav")
        wait_for(lambda: (jobs := queue_of(tmp_path).list()) and jobs[0].stage == q.TRANSCODE, what="transcoding")
        assert daemon.stop() == 0
    [job] = queue_of(tmp_path).list()
    assert [m["id"] for m in emulator.all_media()] == [job.media_id]
    code, out, _ = run(capsys, "jobs", "cancel", job.id, "--config", str(config))
    assert code == 0 and "cancelled" in out
    assert emulator.all_media() == []
    assert queue_of(tmp_path).get(job.id).state == q.CANCELLED
    assert (tmp_path / "failed" / "long-transcode.wav").exists()
    code, _, err = run(capsys, "jobs", "cancel", job.id, "--config", str(config))
    assert code == 1 and "already cancelled" in err


def test_media_list_filters_and_pages(tmp_path, emulator, seeded, capsys):
    config = str(make_config(tmp_path, emulator.base_url))

    def titles(*argv):
        code, out, _ = run(capsys, "media", "list", "--config", config, "--json", *argv)
        assert code == 0
        return [m["title"] for m in json.loads(out)]

    assert sorted(titles()) == [f"Show {n}" for n in range(5)]
    assert sorted(titles("--tag", "odd")) == ["Show 1", "Show 3"]
    assert titles("--meta", "n=4") == ["Show 4"]
    assert sorted(titles("--search", "talk")) == ["Show 1", "Show 3"]
    assert titles("--sort-by", "title", "--order", "desc") == [f"Show {n}" for n in (4, 3, 2, 1, 0)]
    assert titles("--status", "done") == []
    assert len(titles("--limit", "2")) == 2
    assert sorted(titles("--limit", "2", "--all")) == [f"Show {n}" for n in range(5)]
    code, out, _ = run(capsys, "media", "list", "--config", config, "--limit", "2", "--sort-by", "title", "--order", "asc")
    assert out.splitlines()[0].split() == ["id", "status", "seconds", "bytes", "title"]
    assert "Show 0" in out and "(2 of 5; --all lists every page)" in out
    code, _, err = run(capsys, "media", "list", "--config", config, "--meta", "novalue")
    assert code == 1 and "KEY=VALUE" in err


def test_media_get_cost_update_delete(tmp_path, emulator, seeded, capsys):
    config = str(make_config(tmp_path, emulator.base_url))
    media_id = seeded[0]
    code, out, _ = run(capsys, "media", "get", media_id, "--config", config, "--json")
    assert code == 0 and json.loads(out)["title"] == "Show 0"
    code, out, _ = run(capsys, "media", "get", media_id, "--config", config)
    assert media_id in out and "Show 0" in out

    code, out, _ = run(capsys, "media", "cost", "--duration", "600", "--qualities", "standard,highest", "--config", config, "--json")
    cost = json.loads(out)
    assert code == 0 and cost["price"] > 0 and cost["is_enough"] is True

    code, out, _ = run(capsys, "media", "update", media_id, "--title", "Renamed", "--tag", "a", "--tag", "b",
                       "--meta", "k=v", "--private", "--player-theme-id", "theme-1", "--config", config)
    assert code == 0
    [media] = [m for m in emulator.all_media() if m["id"] == media_id]
    assert (media["title"], media["tags"], media["is_public"]) == ("Renamed", ["a", "b"], False)
    assert media["player_theme_id"] == "theme-1"  # sent as player_id: the strict emulator refuses player_theme_id
    assert media["metadata"] == [{"key": "n", "value": "0"}, {"key": "k", "value": "v"}]  # merged, not replaced
    code, _, err = run(capsys, "media", "update", media_id, "--config", config)
    assert code == 1 and "nothing to update" in err

    code, _, err = run(capsys, "media", "delete", media_id, "--config", config)
    assert code == 1 and "--yes" in err
    code, _, _ = run(capsys, "media", "delete", media_id, "--yes", "--config", config)
    assert code == 0 and media_id not in [m["id"] for m in emulator.all_media()]
    code, _, err = run(capsys, "media", "get", media_id, "--config", config)
    assert code == 1 and "the API said" in err


def test_media_list_never_prints_raw_control_characters(tmp_path, emulator, capsys):
    title = "Evil\x1b[2J\x07 show\x9b"
    with StreamClient(emulator.base_url, token="test-token") as client:
        media_id = client.create_media(CreateRequest(type="audio", title=title)).id
    config = str(make_config(tmp_path, emulator.base_url))
    outputs = [run(capsys, "media", "list", "--config", config)[1], run(capsys, "media", "get", media_id, "--config", config)[1]]
    json_out = run(capsys, "media", "list", "--config", config, "--json")[1]
    assert all("Evil\\x1b[2J\\x07 show\\x9b" in out for out in outputs)
    assert json.loads(json_out)[0]["title"] == title, "JSON keeps the title exact, escaped"
    assert not [c for out in [*outputs, json_out] for c in out if c not in "\n\t" and (ord(c) < 32 or 0x7f <= ord(c) <= 0x9f)]


def ended_jobs(tmp_path, *ends: tuple[str, str, str | None]) -> list[q.Job]:
    """Jobs that ended as given: (file name, final state, the job's error)."""
    queue = queue_of(tmp_path)
    jobs = []
    for name, state, error in ends:
        job = queue.enqueue(path=str(tmp_path / "inbox" / name), root=str(tmp_path / "inbox"), relpath=name,
                            size=10, mtime_ns=1, inode=len(jobs) + 1)
        if error:
            queue.update(job.id, error=error)
        queue.finish(job.id, state)
        jobs.append(job)
    return jobs


def test_a_failed_jobs_history_did_not_show_its_error(tmp_path, emulator, capsys):
    config = make_config(tmp_path, emulator.base_url)
    [job] = ended_jobs(tmp_path, ("noise.wav", q.FAILED, "not audio: no format recognised"))
    code, out, _ = run(capsys, "jobs", "show", job.id, "--config", str(config))
    assert code == 0
    [failed_line] = [line for line in out.splitlines() if "  failed  " in line]
    assert "not audio: no format recognised" in failed_line


def test_status_did_not_count_skipped_and_cancelled_jobs(tmp_path, emulator, capsys):
    config = make_config(tmp_path, emulator.base_url)
    ended_jobs(tmp_path, ("a.wav", q.DONE, None), ("b.wav", q.SKIPPED, "a copy of a.wav"),
               ("c.wav", q.CANCELLED, "cancelled by the operator"), ("d.wav", q.CANCELLED, None))
    code, out, _ = run(capsys, "status", "--config", str(config))
    assert code == 0
    assert "1 done, 0 failed, 1 skipped, 2 cancelled" in out.splitlines()[1]


def test_explain_on_a_missing_file_said_no_rules_were_configured(tmp_path, emulator, capsys):
    rules = [{"name": "shows", "match": {"folder": "shows/*"}, "title": "{stem}", "qualities": "podcast"},
             {"name": "default", "title": "{stem}", "qualities": "podcast"}]
    config = make_config(tmp_path, emulator.base_url, rules=rules)
    code, out, _ = run(capsys, "explain", str(tmp_path / "inbox" / "shows" / "tuesday" / "gone.wav"),
                       "--config", str(config))
    assert code == 1
    assert "(none configured)" not in out
    assert re.search(r"^  match  shows ", out, re.M) and re.search(r"^  no     default ", out, re.M), out
    assert "error:    no such file:" in out


@pytest.mark.parametrize(("usd", "text"), [(0.0042, "$0.0042"), (0.00001, "$0.00001"), (0.0, "$0.00"), (1.5, "$1.50"),
                                          (0.149, "$0.149"), (12.0, "$12.00")])
def test_budget_holds_printed_small_prices_as_0_00(usd, text):
    from ingestd.config import format_price

    assert format_price(usd) == text


def test_media_update_meta_dropped_the_ingestd_job_key(tmp_path, emulator, capsys):
    with StreamClient(emulator.base_url, token="test-token") as client:
        media_id = client.create_media(CreateRequest(type="audio", title="Ep 1", metadata=[
            {"key": "ingestd_job", "value": "job-1"}, {"key": "show", "value": "old"}])).id
    config = str(make_config(tmp_path, emulator.base_url))
    code, out, _ = run(capsys, "media", "update", media_id, "--meta", "show=new", "--meta", "season=2",
                       "--config", config, "--json")
    assert code == 0
    expected = [{"key": "ingestd_job", "value": "job-1"}, {"key": "show", "value": "new"}, {"key": "season", "value": "2"}]
    assert json.loads(out) == {"id": media_id, "updated": {"metadata": expected}}
    [media] = emulator.all_media()
    assert media["metadata"] == expected

    code, out, _ = run(capsys, "media", "delete", media_id, "--yes", "--config", config, "--json")
    assert code == 0 and json.loads(out) == {"id": media_id, "deleted": True}
    assert emulator.all_media() == []


def test_media_cost_duration_took_only_seconds(tmp_path, emulator, capsys):
    config = str(make_config(tmp_path, emulator.base_url))
    prices = {}
    for duration in ("5400", "1h30m", "90m"):
        code, out, _ = run(capsys, "media", "cost", "--duration", duration, "--qualities", "standard", "--config", config,
                           "--json")
        assert code == 0
        prices[duration] = json.loads(out)["price"]
    assert prices["1h30m"] == prices["90m"] == prices["5400"] > 0
    with pytest.raises(SystemExit) as usage:
        main(["media", "cost", "--duration", "an hour", "--qualities", "standard", "--config", config])
    assert usage.value.code == 2
    assert "'an hour' is not a duration (examples: 30, 30s, 5m, 1h30m, 6h)" in capsys.readouterr().err


def failed_with_files(tmp_path, *names: str) -> list[q.Job]:
    """Failed jobs whose files wait in the failed folder, as the daemon leaves them."""
    queue = queue_of(tmp_path)
    jobs = []
    for name in names:
        write_wav(tmp_path / "failed" / name, 0.2)
        job = queue.enqueue(path=str(tmp_path / "inbox" / name), root=str(tmp_path / "inbox"), relpath=name,
                            size=10, mtime_ns=1, inode=len(jobs) + 100)
        queue.finish(job.id, q.FAILED, error="API outage", final_path=str(tmp_path / "failed" / name))
        jobs.append(job)
    return jobs


def test_jobs_retry_all_failed_queues_every_failed_file_again(tmp_path, emulator, capsys):
    config = str(make_config(tmp_path, emulator.base_url))
    failed_with_files(tmp_path, "a.wav", "b.wav", "gone.wav")
    (tmp_path / "failed" / "gone.wav").unlink()
    code, out, err = run(capsys, "jobs", "retry", "--all-failed", "--config", config)
    assert code == 1  # one could not be brought back, and says why
    assert "2 of 3 failed job(s) queued again" in out
    assert "gone.wav; drop it into the watched folder again instead" in err
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["a.wav", "b.wav"]
    assert sorted(j.relpath for j in jobs_in(tmp_path, q.QUEUED)) == ["a.wav", "b.wav"]

    code, out, _ = run(capsys, "jobs", "retry", "--all-failed", "--config", config)
    assert code == 1 and "0 of 1 failed job(s) queued again" in out
    code, _, err = run(capsys, "jobs", "retry", "--config", config)
    assert code == 1 and "give a job id, or --all-failed" in err


def test_jobs_prune_forgets_finished_jobs_older_than_asked(tmp_path, emulator, capsys):
    config = str(make_config(tmp_path, emulator.base_url))
    old, recent = ended_jobs(tmp_path, ("old.wav", q.DONE, None), ("recent.wav", q.FAILED, "x"))
    queue = queue_of(tmp_path)
    queue.update(old.id, finished_at=time.time() - 40 * 86400)
    code, out, _ = run(capsys, "jobs", "prune", "--older-than", "30d", "--config", config)
    assert code == 0 and out.startswith("pruned 1 finished job(s) that ended before ")
    assert [j.relpath for j in queue.list()] == ["recent.wav"]
